// nwc eval --model M --tokenizer T --text FILE [--protocol P] [--seq-len N] [--max-tokens N]
//          [--batch B]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <iostream>

namespace nwc::cli {

namespace {

void print_eval(const runtime::EvalResult &r, const std::string &model_path,
                const std::string &text_path, bool as_json) {
  if (as_json) {
    print_json({{"protocol", r.protocol},
                {"model", model_path},
                {"text", text_path},
                {"tokens", r.tokens},
                {"windows", r.windows},
                {"seq_len", r.seq_len},
                {"predicted_tokens", r.predicted_tokens},
                {"nll", r.nll},
                {"ppl", r.ppl},
                {"seconds", r.seconds},
                {"tokens_per_second", r.tokens_per_second}});
    return;
  }
  std::cout << "protocol " << r.protocol << "\n"
            << "model    " << model_path << "\n"
            << "text     " << text_path << "\n"
            << "tokens   " << r.tokens << " (" << r.windows << " windows x " << r.seq_len << ", "
            << r.predicted_tokens << " predicted)\n"
            << "nll      " << fmt(r.nll, 5) << "\n"
            << "ppl      " << fmt(r.ppl, 4) << "\n"
            << "speed    " << fmt(r.tokens_per_second, 0) << " tokens/s (" << fmt(r.seconds, 2)
            << " s)\n";
}

} // namespace

int cmd_eval(const Command &self, const Args &args) {
  Common c;
  std::string model_path, tok_path, text_path, protocol;
  runtime::EvalSettings es;
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(),
      "tokenizer: llama2.c tokenizer.bin, SentencePiece .model, HF tokenizer.json, or a model "
      "directory holding one")("text", po::value(&text_path)->required(),
                               "UTF-8 text to evaluate on")(
      "protocol", po::value(&protocol)->default_value(runtime::kPplProtocol),
      "ppl-v1 (documents, a BOS each) or wikitext2 (GPTQ's WikiText-2 rules: the rows joined "
      "with blank lines, tokenized once)")(
      "seq-len", po::value(&es.seq_len)->default_value(0),
      "window length (0 = the protocol's default: ppl-v1 the model maximum, wikitext2 "
      "min(2048, model maximum))")("max-tokens", po::value(&es.max_tokens)->default_value(0),
                                   "truncate the token stream")(
      "batch", po::value(&es.batch)->default_value(1), "windows per forward pass");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (es.seq_len < 0 || es.max_tokens < 0 || es.batch < 1)
    throw UsageError("--seq-len and --max-tokens must be >= 0, --batch >= 1");
  if (protocol != runtime::kPplProtocol && protocol != runtime::kWikitext2Protocol)
    throw UsageError("--protocol must be " + std::string(runtime::kPplProtocol) + " or " +
                     runtime::kWikitext2Protocol);
  es.protocol = runtime::parse_protocol(protocol);
  host::Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  // Windows run in parallel, each on one LibTorch thread: on a loaded machine, intra-op threads
  // that spin at barriers are several times slower than this.
  runtime::LlamaModel llama(model, 1);
  es.threads = c.threads;
  auto tok = runtime::load_tokenizer(tok_path, model.arch.vocab_size);
  auto stream =
      runtime::protocol_token_stream(es.protocol, runtime::read_text_file(text_path), *tok);
  print_eval(runtime::evaluate_ppl(llama, stream, es), model_path, text_path, c.json);
  return 0;
}

} // namespace nwc::cli
