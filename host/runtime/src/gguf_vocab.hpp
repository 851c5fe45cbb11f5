// gguf_vocab.hpp — the tokenizer.ggml.* keys of a GGUF file, shared by the tokenizer kinds.
#pragma once

#include "nwc/formats/gguf.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace nwc::runtime::detail {

// llama.cpp's llama_token_type (the same numbers as SentencePiece's piece types).
enum GgufTokenType : int32_t {
  kGgufNormal = 1,
  kGgufUnknown = 2,
  kGgufControl = 3,
  kGgufUserDefined = 4,
  kGgufUnused = 5,
  kGgufByte = 6,
};

// What convert_hf_to_gguf.py writes for a vocabulary, before the model-kind specific arrays.
struct GgufVocab {
  std::string model; // tokenizer.ggml.model: "llama" (score-greedy merges) or "gpt2" (byte-level)
  std::string pre;   // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<float> scores;       // "llama" only
  std::vector<int32_t> types;      // GgufTokenType per token
  std::vector<std::string> merges; // "gpt2" only: "left right" in rank order
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  int add_space_prefix = -1; // -1: not written (llama.cpp's default for the model kind)
};

GgufMetadata to_gguf_metadata(GgufVocab v);

} // namespace nwc::runtime::detail
