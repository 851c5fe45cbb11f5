// nwc/runtime/llama.hpp — a Llama-family decoder forward pass (LibTorch, CPU) for evaluation,
// generation and calibration. LibTorch stays behind this header (pimpl).
#pragma once

#include "nwc/formats/model.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nwc::runtime {

// Called with the input of each group of linear layers during a forward pass: `input` names the
// linears sharing it ("model.layers.0.self_attn.q_proj/k_proj/v_proj" -> "layers.0.attn_in",
// see LlamaModel::input_names), x is [rows, dim] float32, row-major.
using LinearInputHook =
    std::function<void(const std::string &input, const float *x, int64_t rows, int64_t dim)>;

// Token choice in generation, as llama2.c's run.c: temperature 0 is greedy (argmax); otherwise
// the logits are divided by the temperature, turned into probabilities (softmax, float), and one
// token is drawn with a coin from run.c's xorshift generator seeded with `seed` — from the whole
// distribution when top_p is outside (0, 1), else by nucleus sampling: the most probable tokens
// (ties in id order) until their mass exceeds top_p. The same seed gives the same text.
struct Sampling {
  float temperature = 0.0f;
  float top_p = 0.9f;
  uint64_t seed = 1;
};

class LlamaModel {
public:
  // Copies the model's tensors (HF Llama names) into the runtime; checks names and shapes against
  // the architecture, with its variants (head_dim, biases, Qwen 3's q/k norms, Mistral's sliding
  // window, Llama 3's RoPE scaling). rope_style "interleaved" (llama2.c) or "rotate_half" (HF)
  // picks the RoPE pairing. threads: LibTorch intra-op threads (0 = all cores); evaluation
  // parallelises over windows instead and passes 1. All const methods may be called from several
  // threads.
  LlamaModel(const Model &model, unsigned threads = 0);
  ~LlamaModel();
  LlamaModel(const LlamaModel &) = delete;
  LlamaModel &operator=(const LlamaModel &) = delete;

  const Architecture &arch() const;

  // Next-token negative log-likelihoods summed per window: tokens holds batch windows of
  // seq_len ids each; every window predicts its seq_len - 1 next tokens.
  std::vector<double> window_nll(const std::vector<int32_t> &tokens, int64_t batch,
                                 int64_t seq_len) const;

  // The classifier's outputs at every position of batch windows of seq_len ids:
  // [batch, seq_len, vocab_size] float32, row-major.
  std::vector<float> logits(const std::vector<int32_t> &tokens, int64_t batch,
                            int64_t seq_len) const;

  // Decoding from prompt (non-empty) for at most `steps` new tokens, stopping after a generated
  // token equal to stop_token (if >= 0): greedy, or sampled as llama2.c's run.c samples (see
  // Sampling). Returns prompt + generated ids.
  std::vector<int32_t> generate(const std::vector<int32_t> &prompt, int64_t steps,
                                int32_t stop_token, const Sampling &sampling = {}) const;

  // A forward pass over batch windows that reports every linear group's input to hook.
  void forward_with_hook(const std::vector<int32_t> &tokens, int64_t batch, int64_t seq_len,
                         const LinearInputHook &hook) const;

  // The linear-input groups, in forward order: for each layer "layers.N.attn_in" (q, k, v),
  // "layers.N.attn_out" (o), "layers.N.mlp_in" (gate, up), "layers.N.mlp_out" (down).
  std::vector<std::string> input_names() const;
  // The weight tensors (HF names) whose input is the named group.
  std::vector<std::string> linears_of(const std::string &input) const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace nwc::runtime
