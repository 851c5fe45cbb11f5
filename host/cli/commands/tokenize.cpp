// nwc tokenize --tokenizer T (--text FILE | --string S) [--bos] [--eos] [--pieces] [--json]
// The ids a tokenizer gives a text: what a user runs when numbers disagree with another tool.
// Tokenizers need no model runtime, so this command exists in every build.
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/runtime/tokenizer.hpp"

#include <iostream>

namespace nwc::cli {

int cmd_tokenize(const Command &self, const Args &args) {
  Common c;
  std::string tok_path, text_path, text;
  int64_t vocab_size = 0;
  runtime::TokenizeOptions o;
  po::options_description d(self.title());
  d.add_options()("tokenizer,t", po::value(&tok_path)->required(),
                  "tokenizer: llama2.c tokenizer.bin, SentencePiece .model, HF tokenizer.json, or "
                  "a model directory holding one")("text", po::value(&text_path),
                                                   "file whose bytes are tokenized as one text")(
      "string", po::value(&text), "text given on the command line instead of --text")(
      "bos", po::bool_switch(&o.bos), "add the beginning-of-sequence tokens")(
      "eos", po::bool_switch(&o.eos), "add the end-of-sequence tokens")(
      "pieces", po::bool_switch(&o.pieces),
      "one line per token: index, id, vocabulary piece, decoded text")(
      "vocab-size", po::value(&vocab_size)->default_value(0),
      "the model's vocabulary size, checked against the tokenizer (0 = no check)");
  add_common(d, c);
  const auto vm = parse(args, d, {}, self.usage);
  if (vm.count("text") == vm.count("string"))
    throw UsageError("give exactly one of --text FILE and --string S");
  if (vocab_size < 0) throw UsageError("--vocab-size must be >= 0");
  if (vm.count("text")) text = runtime::read_text_file(text_path);
  const auto tok = runtime::load_tokenizer(tok_path, vocab_size);
  const runtime::TokenizeReport report = runtime::tokenize_report(*tok, text, o);
  std::cout << (c.json ? runtime::tokenize_report_json(report)
                       : runtime::tokenize_report_text(report));
  return 0;
}

} // namespace nwc::cli
