// llama_block.hpp — one Llama decoder block as a LibTorch function. Private to the runtime: the
// forward pass of LlamaModel and block-wise fine-tuning (blockft.cpp) share it.
#pragma once

#include "nwc/formats/model.hpp"

#include <functional>
#include <string>
#include <torch/torch.h>

namespace nwc::runtime::llama {

struct BlockWeights {
  torch::Tensor attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
  // Present in the variants that have them (undefined otherwise): biases of the linears and
  // Qwen 3's per-head RMSNorm weights of q and k ([head_dim]).
  torch::Tensor bq, bk, bv, bo, b_gate, b_up, b_down, q_norm, k_norm;
};

struct BlockShape {
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  double norm_eps = 1e-5;
  bool rotate_half = false;   // HF pairs (i, i + D/2); otherwise llama2.c pairs (2i, 2i + 1)
  int64_t sliding_window = 0; // a query sees at most this many keys (itself included); 0 = all
  torch::Tensor cos, sin;     // [max_seq_len, head_dim / 2]
};

// LibTorch's and OpenBLAS's thread counts (0 = all cores) and allocator settings for the runtime.
void configure_threads(unsigned threads);

// A model tensor as a float32 LibTorch tensor; a missing tensor or another shape fails naming
// the model file and the expected shape.
torch::Tensor load_weight(const Model &model, const std::string &name,
                          const std::vector<int64_t> &shape);

// The weights of decoder block `layer` (HF names), checked against the architecture: biases and
// q/k norms are loaded when the architecture has them, and refused (naming the field) when the
// file holds ones the architecture says it lacks.
BlockWeights load_block(const Model &model, int64_t layer, const BlockShape &shape);

torch::Tensor rmsnorm(const torch::Tensor &x, const torch::Tensor &w, double eps);

// Head geometry, norm epsilon, sliding window and RoPE tables (with Llama 3's frequency scaling)
// of an architecture (checked; errors name `source` and the field).
BlockShape block_shape(const Architecture &a, const std::string &source);

// Called with the input of each linear group: suffix "attn_in", "attn_out", "mlp_in", "mlp_out".
using Report = std::function<void(const char *suffix, const torch::Tensor &x)>;

// The block's two halves, each without its residual: self-attention of the normed input h
// ([B, T, dim] at positions start..; o_proj applied) and the SwiGLU MLP of the normed input h.
torch::Tensor attention(const BlockWeights &w, const BlockShape &s, const torch::Tensor &h,
                        int64_t start, torch::Tensor *k_cache, torch::Tensor *v_cache,
                        const Report *report);
torch::Tensor mlp(const BlockWeights &w, const torch::Tensor &h, const Report *report);

// x: [B, T, dim] at absolute positions start.. -> the block's output [B, T, dim]. k_cache and
// v_cache (may be null) hold this block's earlier keys and values for incremental decoding.
torch::Tensor decoder_block(const BlockWeights &w, const BlockShape &s, const torch::Tensor &x,
                            int64_t start, torch::Tensor *k_cache, torch::Tensor *v_cache,
                            const Report *report);

} // namespace nwc::runtime::llama
