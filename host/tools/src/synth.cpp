// synth.cpp — synthetic Llama checkpoints: a counter-based generator with Llama-like weight
// statistics, streamed chunk by chunk into (sharded) safetensors. See synth.hpp for the model.
//
// Portability of the bytes: every random value is a function of (seed, tensor name, row, column)
// computed with IEEE float/double +, -, *, /, sqrt, floor and ldexp only (own log, exp, sin, cos),
// and this file is compiled with -ffp-contract=off, so vectorised, scalar, x86 and ARM builds
// agree.
#include "nwc/tools/synth.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/formats/safetensors.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <unistd.h>

namespace nwc::tools {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The per-element helpers are inlined into generate_row(), which on x86-64 Linux is also compiled
// for AVX2 and chosen at run time (an ifunc): a vector width changes the speed, never a value.
// Not under sanitizers: an instrumented ifunc resolver runs before the sanitizer runtime is up.
#define NWC_SYNTH_INLINE inline __attribute__((always_inline))
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define NWC_SYNTH_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define NWC_SYNTH_SANITIZED 1
#endif
#if defined(__x86_64__) && defined(__linux__) && !defined(NWC_SYNTH_SANITIZED)
#define NWC_SYNTH_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NWC_SYNTH_CLONES
#endif

// ---- counter-based random numbers ----------------------------------------------------------

// SplitMix64's finaliser: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A bijective 32-bit mixer (C. Wellons' "lowbias32"); 32-bit so that loops over columns vectorise.
NWC_SYNTH_INLINE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

uint64_t fnv1a(const std::string &s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// One stream of 32-bit draws, addressed by a counter.
struct Stream {
  uint32_t a = 0, b = 0;
  Stream() = default;
  explicit Stream(uint64_t key)
      : a(static_cast<uint32_t>(key)), b(static_cast<uint32_t>(key >> 32)) {}
  NWC_SYNTH_INLINE uint32_t operator()(uint32_t counter) const {
    return mix32(mix32(counter ^ a) + b);
  }
};

// The key of a named stream under a seed: streams of different names are unrelated.
uint64_t stream_key(uint64_t seed, const std::string &name) {
  return mix64(mix64(seed) ^ fnv1a(name));
}
Stream row_stream(uint64_t key, int64_t row) {
  return Stream(mix64(key ^ mix64(static_cast<uint64_t>(row) + 0x5bd1e995ull)));
}

// ---- portable float functions ----------------------------------------------------------------

NWC_SYNTH_INLINE uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
NWC_SYNTH_INLINE float float_of(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

// Uniform in (0, 1), never 0 or 1: (k + 0.5) / 2^23 from 23 bits of h (exact in float).
NWC_SYNTH_INLINE float uniform(uint32_t h) {
  return (static_cast<float>(h >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// Natural log of a positive normal float (relative error ~1e-7).
NWC_SYNTH_INLINE float log_f(float x) {
  const uint32_t b = bits_of(x);
  int32_t e = static_cast<int32_t>(b >> 23) - 127;
  float m = float_of((b & 0x7fffffu) | 0x3f800000u); // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  const float p =
      2.0f * s *
      (1.0f + s2 * (1.0f / 3.0f + s2 * (1.0f / 5.0f + s2 * (1.0f / 7.0f + s2 * (1.0f / 9.0f)))));
  return static_cast<float>(e) * 0.693147180559945f + p;
}

// e^x for |x| < 80.
float exp_f(float x) {
  const float k = std::floor(x * 1.44269504088896f + 0.5f);
  const float r = x - k * 0.693147180559945f;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f +
                                          r * (1.0f / 24.0f +
                                               r * (1.0f / 120.0f +
                                                    r * (1.0f / 720.0f + r * (1.0f / 5040.0f)))))));
  return std::ldexp(p, static_cast<int>(k));
}

// A uniformly distributed direction (cos, sin) from 32 bits: quadrant from the top 2 bits, an
// angle in (-pi/4, pi/4) from the next 23 (Taylor polynomials, error < 2e-9).
NWC_SYNTH_INLINE void direction(uint32_t h, float &c, float &s) {
  const float f = (static_cast<float>((h >> 7) & 0x7fffffu) + 0.5f) * (1.0f / 8388608.0f);
  const float x = (f - 0.5f) * 1.57079632679490f, x2 = x * x;
  const float sx =
      x * (1.0f + x2 * (-1.0f / 6.0f +
                        x2 * (1.0f / 120.0f + x2 * (-1.0f / 5040.0f + x2 * (1.0f / 362880.0f)))));
  const float cx =
      1.0f +
      x2 * (-0.5f + x2 * (1.0f / 24.0f + x2 * (-1.0f / 720.0f + x2 * (1.0f / 40320.0f +
                                                                      x2 * (-1.0f / 3628800.0f)))));
  const uint32_t q = h >> 30;
  const float c1 = (q & 1u) ? -sx : cx, s1 = (q & 1u) ? cx : sx;
  c = (q & 2u) ? -c1 : c1;
  s = (q & 2u) ? -s1 : s1;
}

// A standard normal from two draws (Box-Muller).
NWC_SYNTH_INLINE float normal(uint32_t h1, uint32_t h2) {
  float c, s;
  direction(h2, c, s);
  return std::sqrt(-2.0f * log_f(uniform(h1))) * c;
}

// The heavy-tailed unit-variance draw of element c of a row: Student-t with 5 degrees of freedom
// (z1 / sqrt(chi2_5 / 5), chi2_5 = -2 ln(u3 u4) + z2^2), scaled by sqrt(3/5) to unit variance,
// then softly saturated towards 12: t / (1 + (t/12)^4)^(1/4).
NWC_SYNTH_INLINE float heavy(const Stream &st, uint32_t c) {
  const uint32_t base = c * 4u;
  const uint32_t h1 = st(base), h2 = st(base + 1u), h3 = st(base + 2u), h4 = st(base + 3u);
  float dc, ds;
  direction(h2, dc, ds);
  const float r = std::sqrt(-2.0f * log_f(uniform(h1)));
  const float z1 = r * dc, z2 = r * ds;
  const float chi = -2.0f * log_f(uniform(h3) * uniform(h4)) + z2 * z2;
  const float t = z1 * std::sqrt(3.0f / chi);
  const float q = t * (1.0f / 12.0f), q2 = q * q;
  return t / std::sqrt(std::sqrt(1.0f + q2 * q2));
}

// ---- the statistical model ---------------------------------------------------------------------

constexpr float kRowSigma = 0.3f;                    // log-normal row multipliers
constexpr float kNormSigma = 0.25f;                  // log-normal spread of RMSNorm weights
constexpr int64_t kOutlierEvery = 200;               // 0.5 % of the input channels
constexpr float kLnOutlierMin = 1.60943791243410f;   // ln 5
constexpr float kLnOutlierRange = 1.38629436111989f; // ln 20 - ln 5
constexpr float kEmbedStd = 0.02f;

enum class Kind { Embed, Bias, Norm, Linear };

// Everything needed to generate any row of one tensor.
struct TensorGen {
  Kind kind = Kind::Linear;
  int64_t rows = 0, cols = 0;
  uint64_t key = 0;
  std::vector<float> row_scale; // Embed/Bias/Linear: std of each row (Embed/Linear: base * a
                                // log-normal multiplier; Bias: one row, the base)
  std::vector<float> col_scale; // Linear: 1, or the outlier factor of the input channel
  float norm_mean = 1.0f;       // Norm
};

// Log-normal multipliers exp(sigma z - sigma^2) (E[m^2] = 1) for n rows of a stream.
std::vector<float> log_normal_rows(uint64_t key, int64_t n, float base) {
  const Stream st(mix64(key ^ 0x726f77736361ull)); // "rowsca"
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const uint32_t i = static_cast<uint32_t>(r) * 2u;
    const float z = normal(st(i), st(i + 1u));
    out[static_cast<size_t>(r)] = base * exp_f(kRowSigma * z - kRowSigma * kRowSigma);
  }
  return out;
}

// Input-channel factors of a group of linears that read the same activations: 1/200 of the
// columns (at least one), those with the smallest hashes, scaled log-uniformly in [5, 20].
std::vector<float> outlier_columns(uint64_t seed, const std::string &group, int64_t cols) {
  const uint64_t key = stream_key(seed, group);
  const Stream pick(mix64(key ^ 1u)), factor(mix64(key ^ 2u));
  std::vector<std::pair<uint32_t, uint32_t>> order(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    const uint32_t cu = static_cast<uint32_t>(c);
    order[static_cast<size_t>(c)] = {pick(cu), cu};
  }
  const int64_t k = std::max<int64_t>(1, (cols + kOutlierEvery / 2) / kOutlierEvery);
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end());
  std::vector<float> scale(static_cast<size_t>(cols), 1.0f);
  for (int64_t i = 0; i < k; ++i) {
    const uint32_t c = order[static_cast<size_t>(i)].second;
    // log-uniform in [5, 20]: 5 * 4^u = exp(ln 5 + u ln 4)
    scale[c] = exp_f(kLnOutlierMin + uniform(factor(c)) * kLnOutlierRange);
  }
  return scale;
}

bool ends_with(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "model.layers.12.mlp.up_proj.weight" -> 12 (and the rest after "model.layers.12."); -1 if none.
int64_t layer_of(const std::string &name, std::string &rest) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  const size_t dot = name.find('.', prefix.size());
  rest = name.substr(dot + 1);
  return std::stoll(name.substr(prefix.size(), dot - prefix.size()));
}

TensorGen make_gen(const SynthSpec &spec, const TensorInfo &t) {
  TensorGen g;
  g.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  g.cols = t.shape.back();
  g.key = stream_key(spec.seed, t.name);
  const Architecture &a = spec.arch;
  if (t.name == "model.embed_tokens.weight") {
    g.kind = Kind::Embed;
    g.row_scale = log_normal_rows(g.key, g.rows, kEmbedStd);
    return g;
  }
  std::string rest;
  const int64_t layer = layer_of(t.name, rest);
  // Depth of the layer: 0 for the first, 1 for the last.
  const float frac = layer >= 0 && a.n_layers > 1
                         ? static_cast<float>(layer) / static_cast<float>(a.n_layers - 1)
                         : 0.0f;
  if (t.name == "model.norm.weight" || rest == "input_layernorm.weight" ||
      rest == "post_attention_layernorm.weight") {
    g.kind = Kind::Norm;
    g.norm_mean = t.name == "model.norm.weight"      ? 2.0f
                  : rest == "input_layernorm.weight" ? 0.15f + 0.35f * frac
                                                     : 0.2f + 0.4f * frac;
    return g;
  }
  if (rest == "self_attn.q_norm.weight" || rest == "self_attn.k_norm.weight") {
    g.kind = Kind::Norm; // Qwen 3's per-head norms of q and k
    g.norm_mean = 1.0f;
    return g;
  }
  // Biases: heavy-tailed values, larger on q and k (whose biases shift attention scores).
  static const std::pair<const char *, float> biases[] = {
      {"self_attn.q_proj.bias", 0.5f},  {"self_attn.k_proj.bias", 0.5f},
      {"self_attn.v_proj.bias", 0.05f}, {"self_attn.o_proj.bias", 0.05f},
      {"mlp.gate_proj.bias", 0.05f},    {"mlp.up_proj.bias", 0.05f},
      {"mlp.down_proj.bias", 0.05f}};
  for (const auto &[suffix, std_dev] : biases)
    if (rest == suffix) {
      g.kind = Kind::Bias;
      g.row_scale = {std_dev};
      return g;
    }
  struct LinearKind {
    const char *suffix;
    float scale;
    const char *group;
  };
  static const LinearKind kinds[] = {
      {"self_attn.q_proj.weight", 1.3f, "attn_in"}, {"self_attn.k_proj.weight", 1.8f, "attn_in"},
      {"self_attn.v_proj.weight", 0.6f, "attn_in"}, {"self_attn.o_proj.weight", 0.7f, "attn_out"},
      {"mlp.gate_proj.weight", 1.2f, "mlp_in"},     {"mlp.up_proj.weight", 0.9f, "mlp_in"},
      {"mlp.down_proj.weight", 1.3f, "mlp_out"},
  };
  float scale = 1.0f;
  std::string group;
  if (t.name == "lm_head.weight") {
    group = "lm_head.input";
  } else {
    for (const auto &k : kinds)
      if (rest == k.suffix) {
        scale = k.scale;
        group = "model.layers." + std::to_string(layer) + "." + k.group;
      }
  }
  if (group.empty()) fail(NWC_E_INTERNAL, "synth: no generator for tensor '" + t.name + "'");
  g.kind = Kind::Linear;
  const float base = scale / std::sqrt(static_cast<float>(g.cols));
  g.row_scale = log_normal_rows(g.key, g.rows, base);
  g.col_scale = outlier_columns(spec.seed, group, g.cols);
  return g;
}

// Row r of the tensor into out[0, cols).
NWC_SYNTH_CLONES void generate_row(const TensorGen &g, int64_t r, float *out) {
  const Stream st = row_stream(g.key, r);
  const uint32_t n = static_cast<uint32_t>(g.cols);
  switch (g.kind) {
  case Kind::Norm:
    for (uint32_t c = 0; c < n; ++c) {
      const float z = normal(st(2u * c), st(2u * c + 1u));
      out[c] = g.norm_mean * exp_f(kNormSigma * z - 0.5f * kNormSigma * kNormSigma);
    }
    return;
  case Kind::Embed:
  case Kind::Bias: {
    const float s = g.row_scale[static_cast<size_t>(r)];
    for (uint32_t c = 0; c < n; ++c) out[c] = s * heavy(st, c);
    return;
  }
  case Kind::Linear: {
    const float s = g.row_scale[static_cast<size_t>(r)];
    const float *col = g.col_scale.data();
    for (uint32_t c = 0; c < n; ++c) out[c] = (s * col[c]) * heavy(st, c);
    return;
  }
  }
}

// ---- layout ----------------------------------------------------------------------------------

constexpr size_t kMaxShards = 99999;

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

// Whether a file name is one that write_synthetic_model() writes.
bool is_synth_file(const std::string &f) {
  if (f == "config.json" || f == "model.safetensors" || f == "model.safetensors.index.json")
    return true;
  // model-NNNNN-of-NNNNN.safetensors
  if (f.size() != 32 || f.rfind("model-", 0) != 0 || f.compare(11, 4, "-of-") != 0 ||
      !ends_with(f, ".safetensors"))
    return false;
  for (size_t i : {6u, 7u, 8u, 9u, 10u, 15u, 16u, 17u, 18u, 19u})
    if (!std::isdigit(static_cast<unsigned char>(f[i]))) return false;
  return true;
}

// ---- the directory being built, for the signal handler -----------------------------------------

char g_tmp_dir[PATH_MAX];
std::atomic<long> g_pending_shards{-1}; // -1: nothing pending; 0: single file; N: N shards
static_assert(std::atomic<long>::is_always_lock_free, "read from a signal handler");

void set_pending(const fs::path &tmp, size_t shards) {
  const std::string d = tmp.string();
  if (d.size() + 64 >= PATH_MAX) return; // too long to register; the catch path still cleans up
  std::memcpy(g_tmp_dir, d.c_str(), d.size() + 1);
  g_pending_shards.store(static_cast<long>(shards));
}

// dst = g_tmp_dir + "/" + name (async-signal-safe).
void join_path(char *dst, const char *name) {
  size_t n = 0;
  for (const char *p = g_tmp_dir; *p; ++p) dst[n++] = *p;
  dst[n++] = '/';
  for (const char *p = name; *p; ++p) dst[n++] = *p;
  dst[n] = 0;
}

// ---- writing -----------------------------------------------------------------------------------

// Runs one job at a time on a background thread: the previous chunk is written while the next
// one is generated. An exception in the job is rethrown by the next run() or wait().
class Background {
public:
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }
  template <class F> void run(F f) {
    wait();
    thread_ = std::thread([this, f]() {
      try {
        f();
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }
  void wait() {
    if (thread_.joinable()) thread_.join();
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

private:
  std::thread thread_;
  std::exception_ptr error_;
};

constexpr size_t kChunkBytes = size_t{16} << 20;

// nwc::f32_to_bf16 (round to nearest even) for the finite values the generator makes, in a loop
// that vectorises; little-endian like every safetensors file.
void to_bf16(const float *src, size_t n, uint8_t *dst) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t x = bits_of(src[i]);
    const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    dst[2 * i] = static_cast<uint8_t>(rounded);
    dst[2 * i + 1] = static_cast<uint8_t>(rounded >> 8);
  }
}

// Fills dst with rows [r0, r1) of the tensor in dtype, on up to `threads` threads.
void generate_rows(const TensorGen &g, int64_t r0, int64_t r1, DType dtype, uint8_t *dst,
                   unsigned threads) {
  const size_t row_bytes = static_cast<size_t>(g.cols) * dtype_size(dtype);
  auto work = [&](int64_t a, int64_t b) {
    std::vector<float> row(static_cast<size_t>(g.cols));
    for (int64_t r = a; r < b; ++r) {
      generate_row(g, r, row.data());
      uint8_t *out = dst + static_cast<size_t>(r - r0) * row_bytes;
      if (dtype == DType::BF16)
        to_bf16(row.data(), row.size(), out);
      else
        from_float(dtype, row.data(), row.size(), out);
    }
  };
  const int64_t rows = r1 - r0;
  const int64_t elems = rows * g.cols;
  const int64_t n =
      std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(threads), rows, elems >> 15}));
  if (n == 1) return work(r0, r1);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(n - 1));
  try {
    for (int64_t i = 1; i < n; ++i)
      pool.emplace_back(work, r0 + rows * i / n, r0 + rows * (i + 1) / n);
  } catch (...) { // no thread to be had: join the ones started, then report
    for (auto &t : pool) t.join();
    throw;
  }
  work(r0, r0 + rows / n);
  for (auto &t : pool) t.join();
}

// Refuses an output directory that is neither absent, empty, nor an earlier synth output.
// Returns whether it exists.
bool check_output_dir(const fs::path &dir) {
  std::error_code ec;
  const auto st = fs::symlink_status(dir, ec);
  if (ec || st.type() == fs::file_type::not_found) return false;
  if (st.type() != fs::file_type::directory)
    fail(NWC_E_IO, dir.string() + ": exists and is not a directory (choose a new directory)");
  std::string foreign;
  bool any = false;
  for (const auto &e : fs::directory_iterator(dir)) {
    any = true;
    const std::string f = e.path().filename().string();
    if (!is_synth_file(f) || !e.is_regular_file()) {
      foreign = f;
      break;
    }
  }
  if (!any) return true;
  bool marked = false;
  if (foreign.empty() && fs::is_regular_file(dir / "config.json")) {
    try {
      MappedFile f(dir / "config.json");
      const char *b = reinterpret_cast<const char *>(f.data());
      const json c = json::parse(b, b + f.size(), nullptr, false);
      marked = c.is_object() && c.contains("nwc_synth");
    } catch (const Error &) {
      marked = false;
    }
  }
  if (!foreign.empty() || !marked)
    fail(NWC_E_IO, dir.string() + ": not empty and not an earlier `nwc synth` output (" +
                       (foreign.empty() ? std::string("config.json has no nwc_synth mark")
                                        : "holds '" + foreign + "'") +
                       "); choose a new or empty directory");
  return true;
}

void write_json_file(const fs::path &path, const json &j) {
  const std::string text = j.dump(2) + "\n";
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

} // namespace

// ---- public (the specification's presets, parsing and checks: synth_spec.cpp) -----------------

std::vector<SynthTensorPlan> plan_synthetic_model(const SynthSpec &spec) {
  validate_synth_spec(spec);
  const Architecture &a = spec.arch;
  const int64_t D = a.dim, F = a.hidden_dim, V = a.vocab_size, HD = a.head_size();
  const int64_t QD = a.n_heads * HD, KVD = a.n_kv_heads * HD;
  std::vector<TensorInfo> ts;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    ts.push_back({std::move(name), spec.dtype, std::move(shape)});
  };
  // A linear and, when the architecture has one, its bias (transformers' order).
  auto linear = [&](const std::string &name, int64_t out, int64_t in, bool bias) {
    add(name + ".weight", {out, in});
    if (bias) add(name + ".bias", {out});
  };
  add("model.embed_tokens.weight", {V, D});
  for (int64_t l = 0; l < a.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {D});
    linear(p + "self_attn.q_proj", QD, D, a.attention_bias);
    linear(p + "self_attn.k_proj", KVD, D, a.attention_bias);
    linear(p + "self_attn.v_proj", KVD, D, a.attention_bias);
    linear(p + "self_attn.o_proj", D, QD, a.attention_out_bias);
    if (a.qk_norm) {
      add(p + "self_attn.q_norm.weight", {HD});
      add(p + "self_attn.k_norm.weight", {HD});
    }
    add(p + "post_attention_layernorm.weight", {D});
    linear(p + "mlp.gate_proj", F, D, a.mlp_bias);
    linear(p + "mlp.up_proj", F, D, a.mlp_bias);
    linear(p + "mlp.down_proj", D, F, a.mlp_bias);
  }
  add("model.norm.weight", {D});
  if (!a.tied_embeddings) add("lm_head.weight", {V, D});

  // Shards as HF cuts them: a new file when the next tensor would overflow the current one.
  std::vector<size_t> shard_of(ts.size(), 0);
  size_t shards = 1;
  if (spec.shard_bytes > 0) {
    uint64_t used = 0;
    for (size_t i = 0; i < ts.size(); ++i) {
      const uint64_t b = ts[i].numel() * dtype_size(ts[i].dtype);
      if (used > 0 && used + b > spec.shard_bytes) {
        ++shards;
        used = 0;
      }
      used += b;
      shard_of[i] = shards - 1;
    }
  }
  if (shards > kMaxShards)
    fail(NWC_E_INVALID_ARG,
         "synth: shard_bytes (--shard-size) " + std::to_string(spec.shard_bytes) + " gives " +
             std::to_string(shards) + " shards (at most " + std::to_string(kMaxShards) + ")");
  std::vector<SynthTensorPlan> plan;
  for (size_t i = 0; i < ts.size(); ++i)
    plan.push_back(
        {ts[i], shards == 1 ? "model.safetensors" : shard_name(shard_of[i] + 1, shards)});
  return plan;
}

void remove_pending_synth_directory() noexcept {
  const long shards = g_pending_shards.load();
  if (shards < 0) return;
  char path[PATH_MAX];
  for (const char *f : {"config.json", "model.safetensors.index.json", "model.safetensors"}) {
    join_path(path, f);
    ::unlink(path);
  }
  // model-NNNNN-of-NNNNN.safetensors, formatted without allocation
  char name[] = "model-00000-of-00000.safetensors";
  for (long k = 1; k <= shards; ++k) {
    long v = k, n = shards;
    for (int i = 10; i >= 6; --i, v /= 10) name[i] = static_cast<char>('0' + v % 10);
    for (int i = 19; i >= 15; --i, n /= 10) name[i] = static_cast<char>('0' + n % 10);
    join_path(path, name);
    ::unlink(path);
  }
  ::rmdir(g_tmp_dir);
}

SynthResult write_synthetic_model(const SynthSpec &spec, const fs::path &out_dir,
                                  const SynthProgressFn &progress) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<SynthTensorPlan> plan = plan_synthetic_model(spec);
  fs::path out = fs::absolute(out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();
  if (out == out.root_path() || out.filename() == "." || out.filename() == "..")
    fail(NWC_E_IO, out_dir.string() + ": not a usable output directory name");
  check_output_dir(out);

  std::vector<std::string> files;
  for (const auto &p : plan)
    if (files.empty() || files.back() != p.file) files.push_back(p.file);
  const bool sharded = files.size() > 1;

  const fs::path tmp = out.parent_path() /
                       ("." + out.filename().string() + ".synth.tmp." + std::to_string(getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec); // a leftover of a crashed run with the same pid
  set_pending(tmp, sharded ? files.size() : 0);
  SynthResult res;
  res.dir = out;
  res.files = files;
  try {
    fs::create_directories(tmp);
    const unsigned threads =
        spec.threads ? spec.threads : std::max(1u, std::thread::hardware_concurrency());
    const std::map<std::string, std::string> meta = {
        {"format", "pt"},
        {"nwc_synth", "seed " + std::to_string(spec.seed) + ", preset " + spec.preset}};
    std::vector<uint8_t> buffers[2];
    int cur = 0;
    std::unique_ptr<SafetensorsWriter> writer;
    std::string writer_file;
    Background io; // declared last: joined before the writer and buffers it uses go away
    json weight_map = json::object();
    auto finish_file = [&]() {
      io.wait();
      if (!writer) return;
      writer->commit();
      writer.reset();
      res.file_bytes += fs::file_size(tmp / writer_file);
    };
    for (size_t i = 0; i < plan.size(); ++i) {
      const TensorInfo &t = plan[i].info;
      if (plan[i].file != writer_file) {
        finish_file();
        std::vector<TensorInfo> infos;
        for (const auto &p : plan)
          if (p.file == plan[i].file) infos.push_back(p.info);
        writer_file = plan[i].file;
        writer = std::make_unique<SafetensorsWriter>(tmp / writer_file, infos, meta);
      }
      weight_map[t.name] = plan[i].file;
      const TensorGen g = make_gen(spec, t);
      const size_t row_bytes = static_cast<size_t>(g.cols) * dtype_size(spec.dtype);
      const int64_t rows_per_chunk =
          std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / std::max<size_t>(row_bytes, 1)));
      for (int64_t r0 = 0; r0 < g.rows; r0 += rows_per_chunk) {
        const int64_t r1 = std::min(g.rows, r0 + rows_per_chunk);
        std::vector<uint8_t> &buf = buffers[cur];
        cur ^= 1;
        const size_t len = static_cast<size_t>(r1 - r0) * row_bytes;
        if (buf.size() < len) buf.resize(len);
        // buf was last handed to the writer two chunks ago; run() below waited for that.
        generate_rows(g, r0, r1, spec.dtype, buf.data(), threads);
        SafetensorsWriter *w = writer.get();
        const uint8_t *data = buf.data();
        const std::string name = t.name;
        io.run([w, data, len, name]() { w->write_raw_part(name, data, len); });
      }
      res.tensors += 1;
      res.parameters += t.numel();
      res.data_bytes += t.numel() * dtype_size(t.dtype);
      if (progress) progress(i + 1, plan.size(), t.name);
    }
    finish_file();

    if (sharded) {
      const json index = {{"metadata", {{"total_size", res.data_bytes}}},
                          {"weight_map", weight_map}};
      write_json_file(tmp / "model.safetensors.index.json", index);
      res.file_bytes += fs::file_size(tmp / "model.safetensors.index.json");
    }
    write_hf_config(tmp / "config.json", spec.arch, spec.dtype,
                    {{"nwc_synth",
                      {{"version", 1},
                       {"preset", spec.preset},
                       {"seed", spec.seed},
                       {"statistics", "llama-like-v1"}}}});
    res.file_bytes += fs::file_size(tmp / "config.json");

    // Into place: an empty directory is replaced by rename(); an earlier synth output is moved
    // aside first and removed once the new one is in place.
    if (check_output_dir(out) && !fs::is_empty(out)) {
      const fs::path old = out.parent_path() / ("." + out.filename().string() + ".synth.old." +
                                                std::to_string(getpid()));
      fs::remove_all(old, ec);
      fs::rename(out, old);
      fs::rename(tmp, out);
      g_pending_shards.store(-1);
      fs::remove_all(old, ec);
    } else {
      fs::rename(tmp, out);
      g_pending_shards.store(-1);
    }
  } catch (...) {
    g_pending_shards.store(-1);
    fs::remove_all(tmp, ec);
    throw;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

} // namespace nwc::tools
