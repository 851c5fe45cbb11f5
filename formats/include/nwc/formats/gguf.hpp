// nwc/formats/gguf.hpp — GGUF v2/v3 reader.
#pragma once

#include "nwc/formats/model.hpp"

namespace nwc {

// Reads metadata key-values (into Model::metadata, arrays of more than 64 elements are summarised
// by type and length), tensor infos, and tensors of type F32, F16, BF16 and Q8_0 (converted to
// float on load). llama-architecture names are mapped to HF names (blk.N.attn_q.weight ->
// model.layers.N.self_attn.q_proj.weight, token_embd.weight -> model.embed_tokens.weight, ...)
// and GGUF's reversed dimension order to row-major shapes. Every count, length, offset and type
// is validated against the file size before allocation.
Model read_gguf(const std::filesystem::path &path);

// Writes a Llama model as GGUF v3 (llama architecture metadata, F32 or F16 tensors, alignment 32),
// with GGUF tensor names; q/k rows of rotate-half (HF) models are permuted to the interleaved
// pairing ggml's RoPE uses. Written through a temporary file renamed on success. Tokenizer
// metadata is not written.
void write_gguf(const Model &model, const std::filesystem::path &path, DType dtype);

} // namespace nwc
