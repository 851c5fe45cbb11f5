// nwc/runtime/tokenizer.hpp — tokenizers for evaluation and generation: llama2.c tokenizer.bin
// (score-greedy BPE with byte fallback) and SentencePiece .model files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nwc::runtime {

class Tokenizer {
public:
  virtual ~Tokenizer() = default;
  // Token ids of text; BOS/EOS prepended/appended on request.
  virtual std::vector<int32_t> encode(std::string_view text, bool bos, bool eos) const = 0;
  // The text of token `token` following token `prev` (llama2.c drops the dummy-prefix space after
  // BOS; byte-fallback tokens become their byte).
  virtual std::string decode(int32_t prev, int32_t token) const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t vocab_size() const = 0;
};

// Opens a tokenizer by content: a SentencePiece ModelProto (.model) or a llama2.c tokenizer.bin.
// vocab_size: the model's vocabulary size, checked against the file (0 = don't check). Errors
// name the file and what was expected.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path &path,
                                          int64_t vocab_size = 0);

// llama2.c tokenizer.bin: int32 max_token_length, then per token f32 score, int32 length, bytes.
// Encoding: dummy-space prefix for non-empty text, each UTF-8 code point mapped to its token or to
// byte-fallback tokens (<0x00>.. at ids 3..258), then repeatedly merge the adjacent pair whose
// concatenation is a token with the highest score, leftmost on ties. Implemented with a priority
// queue over adjacent pairs (O(n log n)); gives exactly the ids of the quadratic reference loop.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path &path,
                                                  int64_t vocab_size = 0);

// SentencePiece .model through libsentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path &path);

} // namespace nwc::runtime
