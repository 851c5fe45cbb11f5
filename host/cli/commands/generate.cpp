// nwc generate --model M --tokenizer T [--prompt S] [--steps N] [--temperature T --top-p P --seed
// S]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <cmath>
#include <iostream>

namespace nwc::cli {

int cmd_generate(const Command &self, const Args &args) {
  Common c;
  std::string model_path, tok_path, prompt;
  int64_t steps = 256;
  runtime::Sampling sampling;
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(),
      "tokenizer: llama2.c tokenizer.bin, SentencePiece .model, HF tokenizer.json, or a model "
      "directory holding one")("prompt", po::value(&prompt)->default_value(""),
                               "text to continue (BOS is prepended)")(
      "steps", po::value(&steps)->default_value(256), "maximum number of new tokens")(
      "temperature", po::value(&sampling.temperature)->default_value(0.0f),
      "0 = greedy; > 0: sample from softmax(logits / temperature) as llama2.c's run.c")(
      "top-p", po::value(&sampling.top_p)->default_value(0.9f),
      "nucleus sampling mass (outside (0, 1): the whole distribution)")(
      "seed", po::value(&sampling.seed)->default_value(1),
      "sampling seed (> 0); the same seed gives the same text");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (steps < 0) throw UsageError("--steps must be >= 0");
  if (!(sampling.temperature >= 0.0f) || !std::isfinite(sampling.temperature))
    throw UsageError("--temperature must be a finite number >= 0");
  if (sampling.temperature > 0.0f && sampling.seed == 0)
    throw UsageError("--seed must be > 0 when sampling");
  host::Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  runtime::LlamaModel llama(model, c.threads);
  auto tok = runtime::load_tokenizer(tok_path, model.arch.vocab_size);
  std::vector<int32_t> ids;
  std::string text = runtime::generate_text(llama, *tok, prompt, steps, &ids, sampling);
  if (c.json) {
    print_json({{"text", text}, {"tokens", ids}});
    return 0;
  }
  std::cout << text << "\n";
  return 0;
}

} // namespace nwc::cli
