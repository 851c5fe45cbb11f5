// nwc/formats/llama2c.hpp — llama2.c checkpoint reader (legacy layout).
#pragma once

#include "nwc/formats/model.hpp"

namespace nwc {

// Header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size — negative means a
// separate classifier — seq_len), then float32 tensors: token embedding, attention norms, wq, wk,
// wv, wo, ffn norms, w1, w2, w3, final norm, freq_cis_real/imag (legacy files), optional
// classifier. Tensors are mapped to HF Llama names (w1 -> mlp.gate_proj, w2 -> mlp.down_proj,
// w3 -> mlp.up_proj); rope_style = "interleaved". The file size must match the header exactly
// (with or without freq_cis); anything else is an error naming what was expected.
Model read_llama2c(const std::filesystem::path &path);

} // namespace nwc
