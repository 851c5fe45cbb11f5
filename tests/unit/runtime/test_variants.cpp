// The model-config variants (Llama 3 RoPE scaling, head_dim, attention/MLP biases, Qwen 2's q/k/v
// biases, Qwen 3's q/k norms, Mistral's sliding window, BF16/F16 shards) against an independent
// transcription of transformers' modeling code: each variant is written by `nwc synth`'s library
// function, run by nwc's forward pass, and its logits compared with the reference below, which
// reads only config.json (as transformers does) and the tensors, in double precision.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/tools/synth.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>

using namespace nwc;
using namespace nwc::tools;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// ---- reference: transformers' LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM /
// Qwen3ForCausalLM forward pass, transcribed with plain loops -------------------------------------

using Vec = std::vector<double>;

struct RefConfig {
  std::string model_type;
  int64_t hidden = 0, inter = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, head_dim = 0;
  double eps = 1e-6, theta = 10000.0;
  bool q_bias = false, k_bias = false, v_bias = false, o_bias = false, mlp_bias = false;
  bool qk_norm = false, tied = false;
  int64_t sliding_window = 0; // 0: none
  json rope_scaling;          // null or the llama3 object
};

// What each configuration class and attention module makes of config.json.
RefConfig ref_config(const fs::path &dir) {
  std::ifstream in(dir / "config.json");
  const json c = json::parse(in);
  RefConfig r;
  r.model_type = c.at("model_type");
  r.hidden = c.at("hidden_size");
  r.inter = c.at("intermediate_size");
  r.layers = c.at("num_hidden_layers");
  r.heads = c.at("num_attention_heads");
  r.kv_heads = c.value("num_key_value_heads", r.heads);
  r.vocab = c.at("vocab_size");
  r.eps = c.at("rms_norm_eps");
  r.theta = c.at("rope_theta");
  r.tied = c.value("tie_word_embeddings", false);
  // getattr(config, "head_dim", hidden_size // num_attention_heads); Qwen3Config's default 128.
  r.head_dim = r.model_type == "qwen3" ? 128 : r.hidden / r.heads;
  if (c.contains("head_dim") && !c["head_dim"].is_null()) r.head_dim = c["head_dim"];
  if (r.model_type == "llama") { // LlamaAttention: bias=config.attention_bias on q, k, v, o
    r.q_bias = r.k_bias = r.v_bias = r.o_bias = c.value("attention_bias", false);
    r.mlp_bias = c.value("mlp_bias", false);
  } else if (r.model_type == "qwen2") { // Qwen2Attention: q, k, v bias=True, o bias=False
    r.q_bias = r.k_bias = r.v_bias = true;
  } else if (r.model_type == "qwen3") { // Qwen3Attention: attention_bias; q_norm, k_norm
    r.q_bias = r.k_bias = r.v_bias = r.o_bias = c.value("attention_bias", false);
    r.qk_norm = true;
  } else if (r.model_type == "mistral") { // MistralConfig(sliding_window=4096)
    r.sliding_window = 4096;
    if (c.contains("sliding_window"))
      r.sliding_window = c["sliding_window"].is_null() ? 0 : c["sliding_window"].get<int64_t>();
  }
  if (c.contains("rope_scaling")) r.rope_scaling = c["rope_scaling"];
  return r;
}

// _compute_default_rope_parameters, then _compute_llama3_parameters when rope_type is llama3.
Vec inv_freq(const RefConfig &c) {
  const int64_t dim = c.head_dim;
  Vec f(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i)
    f[static_cast<size_t>(i)] =
        1.0 / std::pow(c.theta, static_cast<double>(2 * i) / static_cast<double>(dim));
  if (c.rope_scaling.is_null() || c.rope_scaling.value("rope_type", "") != "llama3") return f;
  const double factor = c.rope_scaling.at("factor");
  const double low_freq_factor = c.rope_scaling.at("low_freq_factor");
  const double high_freq_factor = c.rope_scaling.at("high_freq_factor");
  const double old_context_len = c.rope_scaling.at("original_max_position_embeddings");
  const double low_freq_wavelen = old_context_len / low_freq_factor;
  const double high_freq_wavelen = old_context_len / high_freq_factor;
  for (double &inv : f) {
    const double wavelen = 2 * std::numbers::pi / inv;
    // inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    const double llama = wavelen > low_freq_wavelen ? inv / factor : inv;
    const double smooth =
        (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    const double smoothed = (1 - smooth) * llama / factor + smooth * llama;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    inv = medium ? smoothed : llama;
  }
  return f;
}

struct RefModel {
  RefConfig c;
  const Model *m = nullptr;
  Vec get(const std::string &name) const {
    const ModelTensor *t = m->find(name);
    REQUIRE_MESSAGE(t != nullptr, name);
    const std::vector<float> v = t->load();
    return Vec(v.begin(), v.end());
  }
};

// LlamaRMSNorm: weight * x / sqrt(mean(x^2) + eps), over n values at x.
void rms_norm(double *x, const Vec &w, int64_t n, double eps) {
  double ms = 0;
  for (int64_t i = 0; i < n; ++i) ms += x[i] * x[i];
  const double r = 1.0 / std::sqrt(ms / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) x[i] = w[static_cast<size_t>(i)] * (x[i] * r);
}

// nn.Linear: y = W x + b; W [out, in].
Vec linear(const Vec &w, const Vec *b, const Vec &x, int64_t out, int64_t in) {
  Vec y(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    double s = b ? (*b)[static_cast<size_t>(o)] : 0.0;
    for (int64_t i = 0; i < in; ++i)
      s += w[static_cast<size_t>(o * in + i)] * x[static_cast<size_t>(i)];
    y[static_cast<size_t>(o)] = s;
  }
  return y;
}

// apply_rotary_pos_emb with rotate_half, on one head of d values at position pos.
void rope(double *x, const Vec &inv, int64_t d, int64_t pos) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double a = static_cast<double>(pos) * inv[static_cast<size_t>(i)];
    const double c = std::cos(a), s = std::sin(a);
    const double x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;        // x * cos + rotate_half(x) * sin, first half: -x2
    x[i + half] = x2 * c + x1 * s; // second half: x1
  }
}

// Logits [T, vocab] of one sequence.
Vec reference_logits(const RefModel &rm, const std::vector<int32_t> &ids) {
  const RefConfig &c = rm.c;
  const int64_t T = static_cast<int64_t>(ids.size()), D = c.hidden, HD = c.head_dim;
  const int64_t H = c.heads, KV = c.kv_heads, F = c.inter, V = c.vocab, rep = H / KV;
  const Vec inv = inv_freq(c);
  const Vec embed = rm.get("model.embed_tokens.weight");
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    x[static_cast<size_t>(t)] = Vec(embed.begin() + ids[static_cast<size_t>(t)] * D,
                                    embed.begin() + (ids[static_cast<size_t>(t)] + 1) * D);
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto opt = [&](bool has, const std::string &name) {
      return has ? std::optional<Vec>(rm.get(p + name)) : std::nullopt;
    };
    const Vec ln1 = rm.get(p + "input_layernorm.weight"),
              ln2 = rm.get(p + "post_attention_layernorm.weight");
    const Vec wq = rm.get(p + "self_attn.q_proj.weight"),
              wk = rm.get(p + "self_attn.k_proj.weight"),
              wv = rm.get(p + "self_attn.v_proj.weight"),
              wo = rm.get(p + "self_attn.o_proj.weight");
    const auto bq = opt(c.q_bias, "self_attn.q_proj.bias"),
               bk = opt(c.k_bias, "self_attn.k_proj.bias"),
               bv = opt(c.v_bias, "self_attn.v_proj.bias"),
               bo = opt(c.o_bias, "self_attn.o_proj.bias");
    const auto qn = opt(c.qk_norm, "self_attn.q_norm.weight"),
               kn = opt(c.qk_norm, "self_attn.k_norm.weight");
    const Vec wg = rm.get(p + "mlp.gate_proj.weight"), wu = rm.get(p + "mlp.up_proj.weight"),
              wd = rm.get(p + "mlp.down_proj.weight");
    const auto bg = opt(c.mlp_bias, "mlp.gate_proj.bias"), bu = opt(c.mlp_bias, "mlp.up_proj.bias"),
               bd = opt(c.mlp_bias, "mlp.down_proj.bias");
    auto ptr = [](const std::optional<Vec> &v) { return v ? &*v : nullptr; };

    std::vector<Vec> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)),
        v(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      Vec h = x[static_cast<size_t>(t)];
      rms_norm(h.data(), ln1, D, c.eps);
      q[static_cast<size_t>(t)] = linear(wq, ptr(bq), h, H * HD, D);
      k[static_cast<size_t>(t)] = linear(wk, ptr(bk), h, KV * HD, D);
      v[static_cast<size_t>(t)] = linear(wv, ptr(bv), h, KV * HD, D);
      for (int64_t hh = 0; hh < H; ++hh) {
        double *qh = q[static_cast<size_t>(t)].data() + hh * HD;
        if (qn) rms_norm(qh, *qn, HD, c.eps); // self.q_norm(q.view(hidden_shape)) before RoPE
        rope(qh, inv, HD, t);
      }
      for (int64_t hh = 0; hh < KV; ++hh) {
        double *kh = k[static_cast<size_t>(t)].data() + hh * HD;
        if (kn) rms_norm(kh, *kn, HD, c.eps);
        rope(kh, inv, HD, t);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec att(static_cast<size_t>(H * HD), 0.0);
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t g = hh / rep; // repeat_kv: kv head g serves query heads g*rep .. g*rep+rep-1
        // Causal mask; sliding window: kv_idx > q_idx - sliding_window.
        const int64_t first =
            c.sliding_window > 0 ? std::max<int64_t>(0, t - c.sliding_window + 1) : 0;
        Vec score;
        double mx = -1e300;
        for (int64_t s = first; s <= t; ++s) {
          double d = 0;
          for (int64_t i = 0; i < HD; ++i)
            d += q[static_cast<size_t>(t)][static_cast<size_t>(hh * HD + i)] *
                 k[static_cast<size_t>(s)][static_cast<size_t>(g * HD + i)];
          score.push_back(d / std::sqrt(static_cast<double>(HD))); // scaling = head_dim**-0.5
          mx = std::max(mx, score.back());
        }
        double sum = 0;
        for (double &e : score) sum += (e = std::exp(e - mx));
        for (int64_t s = first; s <= t; ++s)
          for (int64_t i = 0; i < HD; ++i)
            att[static_cast<size_t>(hh * HD + i)] +=
                score[static_cast<size_t>(s - first)] / sum *
                v[static_cast<size_t>(s)][static_cast<size_t>(g * HD + i)];
      }
      const Vec o = linear(wo, ptr(bo), att, D, H * HD);
      Vec &xt = x[static_cast<size_t>(t)];
      for (int64_t i = 0; i < D; ++i) xt[static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
      Vec h = xt;
      rms_norm(h.data(), ln2, D, c.eps);
      const Vec gate = linear(wg, ptr(bg), h, F, D), up = linear(wu, ptr(bu), h, F, D);
      Vec m(static_cast<size_t>(F));
      for (int64_t i = 0; i < F; ++i) {
        const double gi = gate[static_cast<size_t>(i)];
        m[static_cast<size_t>(i)] = gi / (1 + std::exp(-gi)) * up[static_cast<size_t>(i)]; // silu
      }
      const Vec down = linear(wd, ptr(bd), m, D, F);
      for (int64_t i = 0; i < D; ++i) xt[static_cast<size_t>(i)] += down[static_cast<size_t>(i)];
    }
  }
  const Vec norm = rm.get("model.norm.weight");
  const Vec head = rm.m->find("lm_head.weight") ? rm.get("lm_head.weight") : embed;
  Vec out;
  for (int64_t t = 0; t < T; ++t) {
    Vec h = x[static_cast<size_t>(t)];
    rms_norm(h.data(), norm, D, c.eps);
    const Vec l = linear(head, nullptr, h, V, D);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

// ---- the checks
// -----------------------------------------------------------------------------------

// A small model whose head size (16) is not dim / heads (48 / 4 = 12), in F32.
SynthSpec small_spec(const std::string &model_type) {
  SynthSpec s = synth_preset("tiny");
  set_synth_model_type(s.arch, model_type);
  s.arch.dim = 48;
  s.arch.hidden_dim = 80;
  s.arch.n_layers = 2;
  s.arch.n_heads = 4;
  s.arch.n_kv_heads = 2;
  s.arch.head_dim = 16;
  s.arch.vocab_size = 96;
  s.arch.max_seq_len = 64;
  s.arch.norm_eps = 1e-6;
  s.dtype = DType::F32;
  s.seed = 7;
  s.threads = 1;
  return s;
}

std::vector<int32_t> some_tokens(int64_t n, int32_t vocab) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 11) % vocab));
  return ids;
}

// max |a - b| / max |b|
double relative_error(const std::vector<float> &a, const Vec &b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

double relative_difference(const Vec &a, const Vec &b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

// Writes the spec, checks config.json -> Architecture, and compares nwc's logits with the
// reference on one window of T tokens. Returns the reference logits.
Vec check_variant(const SynthSpec &spec, int64_t T = 24) {
  test::TempDir dir;
  write_synthetic_model(spec, dir / "m");
  const Model model = load_model(dir / "m");
  RefModel rm{ref_config(dir / "m"), &model};
  const std::vector<int32_t> ids = some_tokens(T, static_cast<int32_t>(spec.arch.vocab_size));
  const Vec want = reference_logits(rm, ids);
  runtime::LlamaModel llama(model, 1);
  const std::vector<float> got = llama.logits(ids, 1, T);
  const double err = relative_error(got, want);
  INFO("relative error " << err);
  CHECK(err < 1e-5);
  // Batched windows give the logits of one (up to float rounding: BLAS blocks differently).
  std::vector<int32_t> two = ids;
  two.insert(two.end(), ids.begin(), ids.end());
  const std::vector<float> both = llama.logits(two, 2, T);
  const std::vector<float> second(both.begin() + static_cast<std::ptrdiff_t>(got.size()),
                                  both.end());
  CHECK(relative_error(second, Vec(got.begin(), got.end())) < 1e-5);
  return want;
}

} // namespace

TEST_CASE("variant: plain Llama matches the transformers transcription") {
  SynthSpec s = small_spec("llama");
  s.arch.head_dim = 0; // dim / heads = 12
  check_variant(s);
}

TEST_CASE("variant: Llama with head_dim 16 and attention and MLP biases") {
  SynthSpec s = small_spec("llama");
  s.arch.attention_bias = s.arch.attention_out_bias = true;
  s.arch.mlp_bias = true;
  check_variant(s);
}

TEST_CASE("variant: Llama 3 rope_scaling changes the logits as transformers computes them") {
  SynthSpec s = small_spec("llama");
  // head_dim 16, theta 10000: wavelengths 6.3, 20, 66, 216, 628, ...; with original context 256
  // and factors 1 and 4, two frequencies are kept, two interpolated and four divided by 8.
  s.arch.rope_scaling = llama3_rope_scaling();
  s.arch.rope_scaling.original_max_position_embeddings = 256;
  const Vec scaled = check_variant(s, 40);
  s.arch.rope_scaling = {};
  const Vec plain = check_variant(s, 40);
  CHECK(relative_difference(scaled, plain) > 1e-3); // the scaling is visible at these positions
}

TEST_CASE("variant: Mistral with a sliding window shorter than the window evaluated") {
  SynthSpec s = small_spec("mistral");
  s.arch.sliding_window = 6;
  const Vec windowed = check_variant(s, 20);
  s.arch.sliding_window = 0;
  const Vec full = check_variant(s, 20);
  CHECK(relative_difference(windowed, full) > 1e-3);

  // Incremental decoding (key/value cache) applies the same window: greedy tokens equal the
  // reference's argmax over full recomputation.
  s.arch.sliding_window = 4;
  test::TempDir dir;
  write_synthetic_model(s, dir / "m");
  const Model model = load_model(dir / "m");
  CHECK(model.arch.sliding_window == 4);
  RefModel rm{ref_config(dir / "m"), &model};
  runtime::LlamaModel llama(model, 1);
  std::vector<int32_t> ids = some_tokens(3, 96);
  const std::vector<int32_t> got = llama.generate(ids, 10, -1);
  for (int step = 0; step < 10; ++step) {
    const Vec l = reference_logits(rm, ids);
    const auto last = l.begin() + static_cast<std::ptrdiff_t>((ids.size() - 1) * 96);
    ids.push_back(static_cast<int32_t>(std::max_element(last, last + 96) - last));
  }
  CHECK(got == ids);
}

TEST_CASE("variant: Qwen 2 with q/k/v biases and tied embeddings") {
  SynthSpec s = small_spec("qwen2");
  s.arch.tied_embeddings = true;
  check_variant(s);
}

TEST_CASE("variant: Qwen 3 with q/k norms and head_dim 16 with and without attention biases") {
  SynthSpec s = small_spec("qwen3");
  check_variant(s);
  s.arch.attention_bias = s.arch.attention_out_bias = true;
  check_variant(s);
}

TEST_CASE("variant: BF16 and F16 shards run as their values read back") {
  for (DType dt : {DType::BF16, DType::F16}) {
    SynthSpec s = small_spec("qwen2");
    s.dtype = dt;
    s.shard_bytes = 20000; // several shards
    test::TempDir dir;
    write_synthetic_model(s, dir / "m");
    CHECK(fs::exists(dir / "m" / "model.safetensors.index.json"));
    const Model model = load_model(dir / "m");
    CHECK(model.find("model.layers.0.self_attn.q_proj.bias")->info.dtype == dt);
    RefModel rm{ref_config(dir / "m"), &model};
    const std::vector<int32_t> ids = some_tokens(16, 96);
    runtime::LlamaModel llama(model, 1);
    CHECK(relative_error(llama.logits(ids, 1, 16), reference_logits(rm, ids)) < 1e-5);
  }
}

TEST_CASE("variant: the runtime refuses what the architecture does not describe and names it") {
  test::TempDir dir;
  write_synthetic_model(small_spec("qwen2"), dir / "m");
  Model model = load_model(dir / "m");
  Model m = model;
  m.arch.attention_bias = false; // the file has biases the architecture says it lacks
  CHECK_THROWS_WITH_AS(runtime::LlamaModel(m, 1), doctest::Contains("attention_bias is off"),
                       Error);
  m = model;
  m.arch.family = "gemma";
  CHECK_THROWS_WITH_AS(runtime::LlamaModel(m, 1), doctest::Contains("model_type 'gemma'"), Error);
  m = model;
  m.arch.rope_scaling.type = "yarn";
  CHECK_THROWS_WITH_AS(runtime::LlamaModel(m, 1), doctest::Contains("rope_scaling type 'yarn'"),
                       Error);
  m = model;
  m.arch.qk_norm = true; // Qwen 3's norms are missing
  CHECK_THROWS_WITH_AS(runtime::LlamaModel(m, 1), doctest::Contains("q_norm.weight"), Error);
}
