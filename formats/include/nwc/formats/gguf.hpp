// nwc/formats/gguf.hpp — GGUF v2/v3 reader.
#pragma once

#include "nwc/formats/model.hpp"

#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace nwc {

// One GGUF metadata value of the types nwc writes: u32, i32, f32, bool, string, and arrays of
// strings, f32 or i32 (tokenizer.ggml.tokens / scores / token_type).
using GgufValue = std::variant<uint32_t, int32_t, float, bool, std::string,
                               std::vector<std::string>, std::vector<float>, std::vector<int32_t>>;
// Key-value pairs in the order they are written.
using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

// Reads metadata key-values (into Model::metadata, arrays of more than 64 elements are summarised
// by type and length), tensor infos, and tensors of type F32, F16, BF16 and the ggml block types
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K, IQ4_NL and IQ4_XS (converted to
// float on load). llama-architecture names are mapped to HF names (blk.N.attn_q.weight ->
// model.layers.N.self_attn.q_proj.weight, token_embd.weight -> model.embed_tokens.weight, ...)
// and GGUF's reversed dimension order to row-major shapes. Every count, length, offset and type
// is validated against the file size before allocation.
Model read_gguf(const std::filesystem::path &path);

// Writes a Llama-family model as GGUF v3 (F32, F16 or BF16 tensors, vectors always F32, alignment
// 32) with GGUF tensor names, as llama.cpp's architecture "qwen2" or "qwen3" for those model types
// and "llama" otherwise: head size (attention.key_length), q/k/v/o and MLP biases, Qwen 3's q/k
// norms. q/k rows (and biases) are permuted to the RoPE pairing of that architecture (adjacent
// pairs for "llama", rotate-half for the Qwens). RoPE scaling, a sliding window, and a field the
// architecture lacks are refused naming it. `extra` is written after the architecture keys (the
// tokenizer's tokenizer.ggml.* keys: llama.cpp refuses a model without them); a key of `extra`
// that the writer sets itself is an error. With keep_blocks, a tensor whose source holds ggml
// blocks (ModelTensor::load_native: a quantized GGUF, a container coded by nwc.quant.ggml) is
// written as those blocks, without re-quantizing, once they are checked to decode bit for bit to
// the tensor's values, and general.file_type is llama.cpp's guess from the most frequent type.
// Written through a temporary file renamed on success.
struct GgufWriteReport {
  std::vector<std::pair<std::string, std::string>> tensor_types; // name, ggml type name ("q4_K")
  std::vector<std::string> notes; // why a tensor's blocks were not kept (written as floats)
};
GgufWriteReport write_gguf(const Model &model, const std::filesystem::path &path, DType dtype,
                           const GgufMetadata &extra = {}, bool keep_blocks = true);

} // namespace nwc
