// Llama forward pass with LibTorch: token embedding, RMSNorm, rotary embeddings (interleaved or
// rotate-half pairs), grouped-query causal attention, SwiGLU MLP, final norm, classifier.
#include "nwc/runtime/llama.hpp"

#include "llama_block.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <cmath>
#include <dlfcn.h>
#include <malloc.h>
#include <numbers>
#include <thread>
#include <torch/torch.h>

namespace nwc::runtime {

namespace llama {

torch::Tensor rmsnorm(const torch::Tensor &x, const torch::Tensor &w, double eps) {
  auto ms = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * torch::rsqrt(ms + eps) * w;
}

namespace {

// x: [B, T, H, D]; positions start at `start`.
torch::Tensor rope(const torch::Tensor &x, int64_t start, const BlockShape &s) {
  const int64_t T = x.size(1), half = s.head_dim / 2;
  auto c = s.cos.narrow(0, start, T).view({1, T, 1, half});
  auto n = s.sin.narrow(0, start, T).view({1, T, 1, half});
  torch::Tensor a, b;
  if (s.rotate_half) { // HF: pairs (i, i + D/2)
    a = x.narrow(-1, 0, half);
    b = x.narrow(-1, half, half);
    return torch::cat({a * c - b * n, a * n + b * c}, -1);
  }
  // llama2.c / Meta: pairs (2i, 2i + 1)
  auto xp = x.reshape({x.size(0), T, x.size(2), half, 2});
  a = xp.select(-1, 0);
  b = xp.select(-1, 1);
  return torch::stack({a * c - b * n, a * n + b * c}, -1).reshape(x.sizes());
}

} // namespace

namespace {
// x W^T (+ b when the linear has a bias).
torch::Tensor linear(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b) {
  auto y = torch::matmul(x, w.t());
  return b.defined() ? y + b : y;
}
} // namespace

torch::Tensor attention(const BlockWeights &L, const BlockShape &s, const torch::Tensor &h,
                        int64_t start, torch::Tensor *kc, torch::Tensor *vc, const Report *report) {
  const int64_t B = h.size(0), T = h.size(1);
  const int64_t H = s.n_heads, KV = s.n_kv_heads, D = s.head_dim;
  auto q = linear(h, L.wq, L.bq).view({B, T, H, D});
  auto k = linear(h, L.wk, L.bk).view({B, T, KV, D});
  if (L.q_norm.defined()) { // Qwen 3: RMSNorm of each head before RoPE
    q = rmsnorm(q, L.q_norm, s.norm_eps);
    k = rmsnorm(k, L.k_norm, s.norm_eps);
  }
  q = rope(q, start, s);
  k = rope(k, start, s);
  auto v = linear(h, L.wv, L.bv).view({B, T, KV, D});
  if (kc) {
    if (kc->defined()) {
      k = torch::cat({*kc, k}, 1);
      v = torch::cat({*vc, v}, 1);
    }
    *kc = k;
    *vc = v;
  }
  const int64_t S = k.size(1);
  if (KV != H) { // grouped-query attention: each kv head serves H / KV query heads
    k = k.repeat_interleave(H / KV, 2);
    v = v.repeat_interleave(H / KV, 2);
  }
  auto qh = q.transpose(1, 2), kh = k.transpose(1, 2), vh = v.transpose(1, 2); // [B,H,*,D]
  auto scores = torch::matmul(qh, kh.transpose(-2, -1)) / std::sqrt(static_cast<double>(D));
  // Query t (absolute position start + t) sees keys 0..start + t; with a sliding window only
  // those after start + t - window (transformers: kv_idx > q_idx - sliding_window).
  auto mask = torch::ones({T, S}, torch::kBool).triu(start + 1);
  if (s.sliding_window > 0 && start + T > s.sliding_window)
    mask = mask | torch::ones({T, S}, torch::kBool).tril(start - s.sliding_window);
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  auto att = torch::matmul(torch::softmax(scores, -1), vh).transpose(1, 2).reshape({B, T, H * D});
  if (report) (*report)("attn_out", att);
  return linear(att, L.wo, L.bo);
}

torch::Tensor mlp(const BlockWeights &L, const torch::Tensor &h, const Report *report) {
  auto g = linear(h, L.w_gate, L.b_gate);
  auto m = torch::silu(g) * linear(h, L.w_up, L.b_up);
  if (report) (*report)("mlp_out", m);
  return linear(m, L.w_down, L.b_down);
}

torch::Tensor decoder_block(const BlockWeights &L, const BlockShape &s, const torch::Tensor &x_in,
                            int64_t start, torch::Tensor *kc, torch::Tensor *vc,
                            const Report *report) {
  auto h = rmsnorm(x_in, L.attn_norm, s.norm_eps);
  if (report) (*report)("attn_in", h);
  auto x = x_in + attention(L, s, h, start, kc, vc, report);
  h = rmsnorm(x, L.ffn_norm, s.norm_eps);
  if (report) (*report)("mlp_in", h);
  return x + mlp(L, h, report);
}

BlockShape block_shape(const Architecture &a, const std::string &src) {
  BlockShape shape;
  if (!a.family.empty() && a.family != "llama" && a.family != "mistral" && a.family != "qwen2" &&
      a.family != "qwen3")
    fail(NWC_E_INVALID_ARG, src + ": model_type '" + a.family +
                                "' is not supported (expected llama, mistral, qwen2 or qwen3)");
  if (a.dim <= 0 || a.n_layers <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0 || a.vocab_size <= 0 ||
      a.hidden_dim <= 0 || (a.head_dim == 0 && a.dim % a.n_heads != 0) ||
      a.n_heads % a.n_kv_heads != 0)
    fail(NWC_E_INVALID_ARG, src + ": the model does not describe a Llama architecture (dim, "
                                  "layers, heads, kv heads, vocab, hidden size)");
  shape.head_dim = a.head_size();
  shape.n_heads = a.n_heads;
  shape.n_kv_heads = a.n_kv_heads;
  shape.norm_eps = a.norm_eps;
  shape.sliding_window = a.sliding_window;
  if (shape.head_dim % 2) fail(NWC_E_INVALID_ARG, src + ": head dimension must be even for RoPE");
  if (a.rope_style == "rotate_half")
    shape.rotate_half = true;
  else if (a.rope_style != "interleaved")
    fail(NWC_E_INVALID_ARG, src + ": unsupported rope style '" + a.rope_style +
                                "' (expected interleaved or rotate_half)");

  const int64_t max_len = std::max<int64_t>(a.max_seq_len, 1);
  auto i = torch::arange(0, shape.head_dim / 2, torch::kFloat64);
  auto freq = torch::pow(a.rope_theta, -2.0 * i / static_cast<double>(shape.head_dim));
  if (const RopeScaling &r = a.rope_scaling; r.type == "llama3") {
    // transformers' _compute_llama3_parameters: long wavelengths slowed down by factor, short
    // ones kept, the band between interpolated.
    if (!(r.factor > 0) || !(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor) ||
        r.original_max_position_embeddings <= 0)
      fail(NWC_E_INVALID_ARG, src + ": rope_scaling (llama3) needs factor > 0, 0 < "
                                    "low_freq_factor < high_freq_factor and "
                                    "original_max_position_embeddings > 0");
    const double old_len = static_cast<double>(r.original_max_position_embeddings);
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    auto wavelen = 2.0 * std::numbers::pi / freq;
    auto scaled = torch::where(wavelen > low_wavelen, freq / r.factor, freq);
    auto smooth =
        (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    auto smoothed = (1.0 - smooth) * scaled / r.factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    freq = torch::where(medium, smoothed, scaled);
  } else if (!r.type.empty()) {
    fail(NWC_E_INVALID_ARG,
         src + ": rope_scaling type '" + r.type + "' is not supported (expected llama3, or none)");
  }
  if (!a.rope_freq_factors.empty()) { // GGUF's rope_freqs: llama.cpp divides each frequency
    if (!a.rope_scaling.type.empty())
      fail(NWC_E_INVALID_ARG, src + ": both rope_scaling and rope_freq_factors scale RoPE");
    if (static_cast<int64_t>(a.rope_freq_factors.size()) != shape.head_dim / 2)
      fail(NWC_E_INVALID_ARG, src + ": " + std::to_string(a.rope_freq_factors.size()) +
                                  " RoPE frequency factors for heads of " +
                                  std::to_string(shape.head_dim) + " (expected head size / 2)");
    freq = freq / torch::tensor(a.rope_freq_factors, torch::kFloat64);
  }
  auto pos = torch::arange(0, max_len, torch::kFloat64).unsqueeze(1);
  auto angle = pos * freq.unsqueeze(0);
  shape.cos = torch::cos(angle).to(torch::kFloat32);
  shape.sin = torch::sin(angle).to(torch::kFloat32);
  return shape;
}

void configure_threads(unsigned threads) {
  unsigned n = threads ? threads : std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(static_cast<int>(n));
  // OpenBLAS keeps a thread pool of its own (all cores by default) that spins beside LibTorch's:
  // give it the same count. Looked up at run time because the BLAS behind libblas.so.3 varies.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set(static_cast<int>(n));
  // Attention scores are multi-megabyte temporaries allocated and freed for every layer; with
  // glibc's default thresholds each one is a fresh mmap whose page faults cost more than the
  // arithmetic (10x on the evaluation benchmark). Keep such blocks in the heap instead.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

torch::Tensor load_weight(const Model &model, const std::string &name,
                          const std::vector<int64_t> &shape) {
  const std::string src = model.path.string();
  const ModelTensor *t = model.find(name);
  if (!t) fail(NWC_E_INVALID_ARG, src + ": missing tensor " + name);
  if (t->info.shape != shape) {
    std::string want;
    for (auto d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
    fail(NWC_E_INVALID_ARG, src + ": tensor " + name + " should have shape [" + want + "]");
  }
  std::vector<float> v = t->load();
  return torch::from_blob(v.data(), shape, torch::kFloat32).clone();
}

BlockWeights load_block(const Model &model, int64_t layer, const BlockShape &s) {
  const Architecture &a = model.arch;
  const int64_t D = a.dim, F = a.hidden_dim;
  const int64_t QD = s.n_heads * s.head_dim, KVD = s.n_kv_heads * s.head_dim;
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  BlockWeights L;
  L.attn_norm = load_weight(model, p + "input_layernorm.weight", {D});
  L.wq = load_weight(model, p + "self_attn.q_proj.weight", {QD, D});
  L.wk = load_weight(model, p + "self_attn.k_proj.weight", {KVD, D});
  L.wv = load_weight(model, p + "self_attn.v_proj.weight", {KVD, D});
  L.wo = load_weight(model, p + "self_attn.o_proj.weight", {D, QD});
  L.ffn_norm = load_weight(model, p + "post_attention_layernorm.weight", {D});
  L.w_gate = load_weight(model, p + "mlp.gate_proj.weight", {F, D});
  L.w_up = load_weight(model, p + "mlp.up_proj.weight", {F, D});
  L.w_down = load_weight(model, p + "mlp.down_proj.weight", {D, F});
  // A tensor the architecture has is required; one it lacks must not be silently ignored.
  auto optional = [&](bool has, const char *field, const std::string &name, int64_t n) {
    if (has) return load_weight(model, p + name, {n});
    if (model.find(p + name))
      fail(NWC_E_INVALID_ARG, model.path.string() + ": tensor " + p + name +
                                  " is present but the architecture says " + field + " is off");
    return torch::Tensor();
  };
  L.bq = optional(a.attention_bias, "attention_bias", "self_attn.q_proj.bias", QD);
  L.bk = optional(a.attention_bias, "attention_bias", "self_attn.k_proj.bias", KVD);
  L.bv = optional(a.attention_bias, "attention_bias", "self_attn.v_proj.bias", KVD);
  L.bo = optional(a.attention_out_bias, "attention_out_bias", "self_attn.o_proj.bias", D);
  L.b_gate = optional(a.mlp_bias, "mlp_bias", "mlp.gate_proj.bias", F);
  L.b_up = optional(a.mlp_bias, "mlp_bias", "mlp.up_proj.bias", F);
  L.b_down = optional(a.mlp_bias, "mlp_bias", "mlp.down_proj.bias", D);
  L.q_norm = optional(a.qk_norm, "qk_norm", "self_attn.q_norm.weight", s.head_dim);
  L.k_norm = optional(a.qk_norm, "qk_norm", "self_attn.k_norm.weight", s.head_dim);
  return L;
}

} // namespace llama

struct LlamaModel::Impl {
  Architecture arch;
  llama::BlockShape shape;
  torch::Tensor embed, final_norm, classifier;
  std::vector<llama::BlockWeights> layers;

  // Hidden states after the final norm: [B, T, dim]. k_cache/v_cache hold earlier positions for
  // incremental decoding (may be empty).
  torch::Tensor forward(const torch::Tensor &tokens, int64_t start, std::vector<torch::Tensor> *kc,
                        std::vector<torch::Tensor> *vc, const LinearInputHook *hook) const {
    const int64_t B = tokens.size(0), T = tokens.size(1);
    torch::Tensor x = embed.index_select(0, tokens.reshape({-1})).view({B, T, arch.dim});
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      llama::Report report = [&](const char *suffix, const torch::Tensor &v) {
        auto flat = v.reshape({-1, v.size(-1)}).contiguous();
        (*hook)(p + suffix, flat.data_ptr<float>(), flat.size(0), flat.size(1));
      };
      x = llama::decoder_block(layers[l], shape, x, start, kc ? &(*kc)[l] : nullptr,
                               vc ? &(*vc)[l] : nullptr, hook ? &report : nullptr);
    }
    return llama::rmsnorm(x, final_norm, arch.norm_eps);
  }
};

LlamaModel::LlamaModel(const Model &model, unsigned threads) : impl_(std::make_unique<Impl>()) {
  torch::NoGradGuard no_grad;
  llama::configure_threads(threads);
  Impl &m = *impl_;
  m.arch = model.arch;
  const Architecture &a = m.arch;
  m.shape = llama::block_shape(a, model.path.string());
  m.embed = llama::load_weight(model, "model.embed_tokens.weight", {a.vocab_size, a.dim});
  for (int64_t l = 0; l < a.n_layers; ++l) m.layers.push_back(llama::load_block(model, l, m.shape));
  m.final_norm = llama::load_weight(model, "model.norm.weight", {a.dim});
  m.classifier = model.find("lm_head.weight")
                     ? llama::load_weight(model, "lm_head.weight", {a.vocab_size, a.dim})
                     : m.embed;
}

LlamaModel::~LlamaModel() = default;

const Architecture &LlamaModel::arch() const {
  return impl_->arch;
}

namespace {
torch::Tensor as_tokens(const std::vector<int32_t> &tokens, int64_t batch, int64_t seq_len,
                        int64_t vocab, int64_t max_len) {
  if (batch <= 0 || seq_len <= 0 || static_cast<int64_t>(tokens.size()) != batch * seq_len)
    fail(NWC_E_INVALID_ARG, "runtime: token buffer does not hold batch x seq_len ids");
  if (seq_len > max_len)
    fail(NWC_E_INVALID_ARG, "runtime: window of " + std::to_string(seq_len) +
                                " tokens exceeds the model's maximum of " +
                                std::to_string(max_len));
  for (int32_t t : tokens)
    if (t < 0 || t >= vocab)
      fail(NWC_E_INVALID_ARG, "runtime: token id " + std::to_string(t) + " outside the vocabulary");
  return torch::from_blob(const_cast<int32_t *>(tokens.data()), {batch, seq_len}, torch::kInt32)
      .to(torch::kInt64);
}
} // namespace

std::vector<double> LlamaModel::window_nll(const std::vector<int32_t> &tokens, int64_t batch,
                                           int64_t seq_len) const {
  torch::NoGradGuard no_grad;
  const Impl &m = *impl_;
  auto ids = as_tokens(tokens, batch, seq_len, m.arch.vocab_size, m.shape.cos.size(0));
  auto hidden = m.forward(ids, 0, nullptr, nullptr, nullptr);
  auto logits = torch::matmul(hidden.narrow(1, 0, seq_len - 1), m.classifier.t());
  auto logp = torch::log_softmax(logits.to(torch::kFloat64), -1);
  auto target = ids.narrow(1, 1, seq_len - 1).unsqueeze(-1);
  auto nll = -logp.gather(-1, target).squeeze(-1).sum(1); // [B]
  std::vector<double> out(static_cast<size_t>(batch));
  auto acc = nll.accessor<double, 1>();
  for (int64_t b = 0; b < batch; ++b) out[static_cast<size_t>(b)] = acc[b];
  return out;
}

std::vector<float> LlamaModel::logits(const std::vector<int32_t> &tokens, int64_t batch,
                                      int64_t seq_len) const {
  torch::NoGradGuard no_grad;
  const Impl &m = *impl_;
  auto ids = as_tokens(tokens, batch, seq_len, m.arch.vocab_size, m.shape.cos.size(0));
  auto out =
      torch::matmul(m.forward(ids, 0, nullptr, nullptr, nullptr), m.classifier.t()).contiguous();
  return std::vector<float>(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
}

namespace {
// llama2.c run.c: random_u32 (xorshift*) and random_f32, a coin in [0, 1).
uint32_t random_u32(uint64_t &state) {
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return static_cast<uint32_t>((state * 0x2545F4914F6CDD1Dull) >> 32);
}
float random_f32(uint64_t &state) {
  return static_cast<float>(random_u32(state) >> 8) / 16777216.0f;
}

// run.c's sample: softmax of logits / temperature, then sample_mult or sample_topp with one coin.
int32_t sample_token(std::vector<float> logits, const Sampling &s, uint64_t &state) {
  const size_t n = logits.size();
  for (float &v : logits) v /= s.temperature;
  const float max = *std::max_element(logits.begin(), logits.end());
  float sum = 0.0f;
  for (float &v : logits) {
    v = std::exp(v - max);
    sum += v;
  }
  for (float &v : logits) v /= sum;
  const float coin = random_f32(state);
  if (s.top_p <= 0.0f || s.top_p >= 1.0f) { // sample_mult
    float cdf = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      cdf += logits[i];
      if (coin < cdf) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(n - 1); // rounding errors
  }
  // sample_topp: tokens below (1 - top_p) / (n - 1) cannot be part of the nucleus.
  const float cutoff = (1.0f - s.top_p) / static_cast<float>(n - 1);
  std::vector<int32_t> idx;
  for (size_t i = 0; i < n; ++i)
    if (logits[i] >= cutoff) idx.push_back(static_cast<int32_t>(i));
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
  });
  float cumulative = 0.0f;
  size_t last = idx.size() - 1;
  for (size_t i = 0; i < idx.size(); ++i) {
    cumulative += logits[static_cast<size_t>(idx[i])];
    if (cumulative > s.top_p) {
      last = i;
      break;
    }
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (size_t i = 0; i <= last; ++i) {
    cdf += logits[static_cast<size_t>(idx[i])];
    if (r < cdf) return idx[i];
  }
  return idx[last];
}
} // namespace

std::vector<int32_t> LlamaModel::generate(const std::vector<int32_t> &prompt, int64_t steps,
                                          int32_t stop_token, const Sampling &sampling) const {
  torch::NoGradGuard no_grad;
  const Impl &m = *impl_;
  if (prompt.empty()) fail(NWC_E_INVALID_ARG, "generate: empty prompt");
  const int64_t max_len = m.shape.cos.size(0);
  std::vector<int32_t> out = prompt;
  std::vector<torch::Tensor> kc(m.layers.size()), vc(m.layers.size());
  auto ids = as_tokens(prompt, 1, static_cast<int64_t>(prompt.size()), m.arch.vocab_size, max_len);
  int64_t pos = 0;
  if (sampling.temperature < 0.0f || !std::isfinite(sampling.temperature))
    fail(NWC_E_INVALID_ARG, "generate: temperature must be a finite number >= 0");
  if (sampling.temperature > 0.0f && sampling.seed == 0)
    fail(NWC_E_INVALID_ARG, "generate: the sampling seed must not be 0 (xorshift)");
  uint64_t rng = sampling.seed;
  for (int64_t s = 0; s < steps && static_cast<int64_t>(out.size()) < max_len; ++s) {
    auto hidden = m.forward(ids, pos, &kc, &vc, nullptr);
    pos += ids.size(1);
    auto logits = torch::matmul(hidden.select(1, hidden.size(1) - 1), m.classifier.t());
    int32_t next;
    if (sampling.temperature == 0.0f) {
      next = static_cast<int32_t>(logits.argmax(-1).item<int64_t>());
    } else {
      auto l = logits.reshape({-1}).contiguous();
      next = sample_token(std::vector<float>(l.data_ptr<float>(), l.data_ptr<float>() + l.numel()),
                          sampling, rng);
    }
    out.push_back(next);
    if (next == stop_token) break;
    ids = torch::full({1, 1}, static_cast<int64_t>(next), torch::kInt64);
  }
  return out;
}

void LlamaModel::forward_with_hook(const std::vector<int32_t> &tokens, int64_t batch,
                                   int64_t seq_len, const LinearInputHook &hook) const {
  torch::NoGradGuard no_grad;
  const Impl &m = *impl_;
  auto ids = as_tokens(tokens, batch, seq_len, m.arch.vocab_size, m.shape.cos.size(0));
  m.forward(ids, 0, nullptr, nullptr, &hook);
}

std::vector<std::string> LlamaModel::input_names() const {
  std::vector<std::string> names;
  for (size_t l = 0; l < impl_->layers.size(); ++l)
    for (const char *s : {"attn_in", "attn_out", "mlp_in", "mlp_out"})
      names.push_back("layers." + std::to_string(l) + "." + s);
  return names;
}

std::vector<std::string> LlamaModel::linears_of(const std::string &input) const {
  auto dot = input.find('.', 7);
  if (input.rfind("layers.", 0) != 0 || dot == std::string::npos) return {};
  const std::string p = "model.layers." + input.substr(7, dot - 7) + ".";
  const std::string kind = input.substr(dot + 1);
  if (kind == "attn_in")
    return {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
            p + "self_attn.v_proj.weight"};
  if (kind == "attn_out") return {p + "self_attn.o_proj.weight"};
  if (kind == "mlp_in") return {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"};
  if (kind == "mlp_out") return {p + "mlp.down_proj.weight"};
  return {};
}

} // namespace nwc::runtime
