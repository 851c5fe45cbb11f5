// nwc/runtime/eval.hpp — the perplexity protocol ppl-v1 (DESIGN.md §7), used everywhere results are
// compared:
//   1. read UTF-8 text, CRLF -> LF, split into documents at blank lines ("\n\n"), strip each,
//      drop empty ones;
//   2. tokenize each document with BOS prepended; concatenate all ids;
//   3. --max-tokens N truncates the stream; cut it into non-overlapping windows of seq_len
//      (default: the model's maximum) and drop the final partial window;
//   4. mean next-token NLL over every prediction inside the windows; ppl = exp(mean NLL).
#pragma once

#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace nwc::runtime {

inline constexpr const char *kPplProtocol = "ppl-v1";

// Steps 1 and 2: the token stream of a text file.
std::vector<int32_t> ppl_token_stream(const std::string &text, const Tokenizer &tokenizer);

struct EvalSettings {
  int64_t seq_len = 0;    // 0 = the model's max_seq_len
  int64_t max_tokens = 0; // 0 = the whole stream
  int64_t batch = 1;      // windows per forward pass (1 keeps attention temporaries small)
  unsigned threads = 1;   // windows evaluated in parallel (0 = all cores); the sum is taken in
                          // window order, so the result does not depend on it
};

struct EvalResult {
  std::string protocol = kPplProtocol;
  int64_t tokens = 0; // tokens in the (truncated) stream
  int64_t windows = 0;
  int64_t seq_len = 0;
  int64_t predicted_tokens = 0; // windows * (seq_len - 1)
  double nll = 0;               // mean over predicted tokens
  double ppl = 0;
  double seconds = 0;
  double tokens_per_second = 0; // windows * seq_len tokens run through the model per second
};

// Steps 3 and 4.
EvalResult evaluate_ppl(const LlamaModel &model, const std::vector<int32_t> &stream,
                        const EvalSettings &settings);

// Generation as text: BOS + prompt, then up to `steps` new tokens (greedy or sampled, see
// Sampling) until a generated BOS (llama2.c's stopping rule); pieces that are lone unprintable
// bytes are dropped, as llama2.c's safe_printf does. `ids` (optional) receives every token id.
std::string generate_text(const LlamaModel &model, const Tokenizer &tokenizer,
                          const std::string &prompt, int64_t steps,
                          std::vector<int32_t> *ids = nullptr, const Sampling &sampling = {});

} // namespace nwc::runtime
