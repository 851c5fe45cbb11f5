// nwc/runtime/eval.hpp — the perplexity protocols (docs/evaluation.md):
//
// ppl-v1 (DESIGN.md §7), used everywhere results are compared inside this project:
//   1. read UTF-8 text, CRLF -> LF, split into documents at blank lines ("\n\n"), strip each,
//      drop empty ones;
//   2. tokenize each document with BOS prepended; concatenate all ids;
//   3. --max-tokens N truncates the stream; cut it into non-overlapping windows of seq_len
//      (default: the model's maximum) and drop the final partial window;
//   4. mean next-token NLL over every prediction inside the windows; ppl = exp(mean NLL).
//
// wikitext2, the protocol of GPTQ's llama.py and of the QuIP#/QTIP eval_ppl.py that the NWC paper
// reports (WikiText-2 test perplexity at context 2048), so published numbers can be compared:
//   1. rows of the file as Hugging Face's `wikitext` loader makes them: lines after universal
//      newline translation (CRLF and lone CR -> LF), each keeping its "\n"; a line that is only
//      whitespace (Python's str.strip) becomes ""; the rows joined with "\n\n";
//   2. that one string tokenized once, with what the tokenizer adds for special tokens
//      (add_special_tokens=True: one BOS at the very start for Llama tokenizers);
//   3. --max-tokens N truncates; non-overlapping windows of seq_len (default
//      min(2048, the model's maximum)), final partial window dropped;
//   4. per window the mean NLL of its seq_len - 1 next-token predictions; nll = the mean of those
//      over windows (the reference's sum(loss * seqlen) / (nsamples * seqlen)); ppl = exp(nll).
//      With equal windows this equals step 4 of ppl-v1.
#pragma once

#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nwc::runtime {

inline constexpr const char *kPplProtocol = "ppl-v1";
inline constexpr const char *kWikitext2Protocol = "wikitext2";
// The window length wikitext2 uses when none is given (capped at the model's maximum).
inline constexpr int64_t kWikitext2SeqLen = 2048;

enum class Protocol { PplV1, Wikitext2 };
// "ppl-v1" or "wikitext2"; anything else is an NWC_E_INVALID_ARG error listing both.
Protocol parse_protocol(std::string_view name);
const char *protocol_name(Protocol protocol);

// ppl-v1 steps 1 and 2: the token stream of a text file.
std::vector<int32_t> ppl_token_stream(const std::string &text, const Tokenizer &tokenizer);

// wikitext2 step 1: the text the reference tokenizes, "\n\n".join(rows), from a file's bytes.
std::string wikitext2_text(std::string_view file_bytes);
// wikitext2 steps 1 and 2.
std::vector<int32_t> wikitext2_token_stream(const std::string &file_bytes,
                                            const Tokenizer &tokenizer);

// The token stream of a text file under `protocol`.
std::vector<int32_t> protocol_token_stream(Protocol protocol, const std::string &file_bytes,
                                           const Tokenizer &tokenizer);

struct EvalSettings {
  Protocol protocol = Protocol::PplV1; // the default window length and how NLLs are averaged
  int64_t seq_len = 0;                 // 0 = the protocol's default (see above)
  int64_t max_tokens = 0;              // 0 = the whole stream
  int64_t batch = 1;    // windows per forward pass (1 keeps attention temporaries small)
  unsigned threads = 1; // windows evaluated in parallel (0 = all cores); the sum is taken in
                        // window order, so the result does not depend on it
  // The original model, when the result should also hold the mean KL divergence from its
  // next-token distributions to the evaluated model's (EvalResult::kl; three forward passes per
  // window instead of one). Same architecture and vocabulary.
  const LlamaModel *reference = nullptr;
};

struct EvalResult {
  std::string protocol = kPplProtocol;
  int64_t tokens = 0; // tokens in the (truncated) stream
  int64_t windows = 0;
  int64_t seq_len = 0;
  int64_t predicted_tokens = 0; // windows * (seq_len - 1)
  double nll = 0;               // mean NLL per predicted token (as the protocol averages)
  double ppl = 0;
  double seconds = 0;
  double tokens_per_second = 0; // windows * seq_len tokens run through the model per second
  // With EvalSettings::reference: mean over the predicted positions of KL(reference || model),
  // nats per token. Unlike the NLL it cannot be lowered by a model that merely sharpens its
  // distributions on text the original generated.
  std::optional<double> kl;
};

// Steps 3 and 4 of settings.protocol.
EvalResult evaluate_ppl(const LlamaModel &model, const std::vector<int32_t> &stream,
                        const EvalSettings &settings);

// Generation as text: BOS + prompt, then up to `steps` new tokens (greedy or sampled, see
// Sampling) until a generated BOS (llama2.c's stopping rule); pieces that are lone unprintable
// bytes are dropped, as llama2.c's safe_printf does. `ids` (optional) receives every token id.
std::string generate_text(const LlamaModel &model, const Tokenizer &tokenizer,
                          const std::string &prompt, int64_t steps,
                          std::vector<int32_t> *ids = nullptr, const Sampling &sampling = {});

} // namespace nwc::runtime
