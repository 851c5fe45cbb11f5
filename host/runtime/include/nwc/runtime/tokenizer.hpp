// nwc/runtime/tokenizer.hpp — tokenizers for evaluation and generation: llama2.c tokenizer.bin
// (score-greedy BPE with byte fallback), SentencePiece .model files (BPE and Unigram) and Hugging
// Face tokenizer.json files (BPE, byte-level BPE, Unigram). docs/tokenizers.md describes them.
#pragma once

#include "nwc/formats/gguf.hpp"

#include <cstddef>
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
  // The vocabulary entry of token `token` as the file spells it ("\u2581the", "\u0120the",
  // "<0x0A>", "<s>"), for reports; "" for an id without one. Throws for ids out of range.
  virtual std::string piece(int32_t token) const { return decode(-1, token); }
  // The vocabulary as GGUF's tokenizer.ggml.* keys, so that llama.cpp's own tokenizer gives this
  // tokenizer's ids (docs/llama-cpp.md: what each kind of file becomes). Throws nwc::Error naming
  // the file for a tokenizer that llama.cpp's tokenizers cannot reproduce.
  virtual GgufMetadata gguf_metadata() const = 0;
};

// Opens a tokenizer by content: a Hugging Face tokenizer.json (a JSON object), a SentencePiece
// ModelProto (.model) or a llama2.c tokenizer.bin. `path` may also be a model directory: its
// tokenizer.json, else tokenizer.model, else tokenizer.bin is opened.
// vocab_size: the model's vocabulary size, checked against the file (0 = don't check; a
// tokenizer.json may have fewer tokens than the model's embedding rows, not more). Errors name
// the file and what was expected.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path &path,
                                          int64_t vocab_size = 0);

// llama2.c tokenizer.bin: int32 max_token_length, then per token f32 score, int32 length, bytes.
// Encoding: dummy-space prefix for non-empty text, each UTF-8 code point mapped to its token or to
// byte-fallback tokens (<0x00>.. at ids 3..258), then repeatedly merge the adjacent pair whose
// concatenation is a token with the highest score, leftmost on ties. Implemented with a priority
// queue over adjacent pairs (O(n log n)); gives exactly the ids of the quadratic reference loop.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path &path,
                                                  int64_t vocab_size = 0);

// SentencePiece .model (BPE or Unigram, with its normalization rules), read and applied without
// libsentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path &path);

// Hugging Face tokenizer.json (a file, or a directory holding one); tokenizer_config.json beside
// it, when present, gives add_bos_token/add_eos_token and the bos/eos tokens. encode(text, bos,
// eos) adds what the file's post-processor (or tokenizer_config's add_bos_token/add_eos_token)
// adds before (bos) and after (eos) the text, as Hugging Face's add_special_tokens=True does.
// Unsupported components are a one-line error naming the file and the JSON path.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path &path);

// A text file's bytes, as every command that tokenizes a file reads it; errors name the file.
std::string read_text_file(const std::filesystem::path &path);

// What `nwc tokenize` reports: the ids of a text, and on request each token's vocabulary entry
// and the text it decodes to.
struct TokenizeOptions {
  bool bos = false;    // add the beginning-of-sequence tokens (Tokenizer::encode's bos)
  bool eos = false;    // add the end-of-sequence tokens
  bool pieces = false; // fill TokenizeReport::pieces and texts
};
struct TokenizeReport {
  size_t text_bytes = 0;
  std::vector<int32_t> ids;
  std::vector<std::string> pieces; // Tokenizer::piece of each id (with TokenizeOptions::pieces)
  std::vector<std::string> texts;  // decode(prev, id) of each id: raw bytes, possibly a partial
                                   // UTF-8 character (with TokenizeOptions::pieces)
  int32_t vocab_size = 0, bos_id = -1, eos_id = -1;
};
TokenizeReport tokenize_report(const Tokenizer &tokenizer, std::string_view text,
                               const TokenizeOptions &options = {});
// One JSON object: {"text_bytes", "tokens", "vocab_size", "bos_id", "eos_id", "ids": [...]} and,
// with pieces, "pieces": [{"id", "piece", "text"} ...] where "text" is the decoded text (invalid
// UTF-8, e.g. one byte of a character split over byte tokens, shown as U+FFFD with the bytes in
// "bytes" as hex). Ends with a newline.
std::string tokenize_report_json(const TokenizeReport &report);
// Plain text: the ids on one line, or with pieces one line per token: index, id, piece, text (C
// escapes for control and invalid bytes).
std::string tokenize_report_text(const TokenizeReport &report);

} // namespace nwc::runtime
