#include "nwc/formats/codec_file.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

#include <algorithm>
#include <cmath>
#include <map>

namespace nwc::neural {

namespace {

using nlohmann::json;

void bad(const std::string &where, const std::string &what) {
  fail(NWC_E_CORRUPT_STREAM, where + ": " + what);
}

} // namespace

// ---- configuration -----------------------------------------------------------------------------

json CodecConfig::to_json() const {
  json j{{"chunk", chunk},
         {"width", width},
         {"blocks", blocks},
         {"latent", latent},
         {"levels", levels},
         {"layer_norm", layer_norm},
         {"density_filters", density_filters},
         {"init_scale", init_scale},
         {"tail_mass", tail_mass}};
  if (level_priors) j["level_priors"] = true; // absent in version 1 files
  return j;
}

CodecConfig CodecConfig::from_json(const json &j, const std::string &where) {
  if (!j.is_object()) bad(where, "codec config must be an object");
  CodecConfig c;
  auto integer = [&](const char *key, int64_t &out) {
    if (!j.contains(key) || !j[key].is_number_integer())
      bad(where, std::string("codec config: '") + key + "' must be an integer");
    out = j[key].get<int64_t>();
  };
  integer("chunk", c.chunk);
  integer("width", c.width);
  integer("blocks", c.blocks);
  integer("latent", c.latent);
  integer("levels", c.levels);
  if (!j.contains("layer_norm") || !j["layer_norm"].is_boolean())
    bad(where, "codec config: 'layer_norm' must be a bool");
  c.layer_norm = j["layer_norm"].get<bool>();
  if (j.contains("level_priors")) {
    if (!j["level_priors"].is_boolean()) bad(where, "codec config: 'level_priors' must be a bool");
    c.level_priors = j["level_priors"].get<bool>();
  }
  if (!j.contains("density_filters") || !j["density_filters"].is_array())
    bad(where, "codec config: 'density_filters' must be an array of integers");
  c.density_filters.clear();
  for (const auto &f : j["density_filters"]) {
    if (!f.is_number_integer()) bad(where, "codec config: 'density_filters' must hold integers");
    c.density_filters.push_back(f.get<int64_t>());
  }
  for (const char *key : {"init_scale", "tail_mass"})
    if (!j.contains(key) || !j[key].is_number())
      bad(where, std::string("codec config: '") + key + "' must be a number");
  c.init_scale = j["init_scale"].get<double>();
  c.tail_mass = j["tail_mass"].get<double>();
  c.validate(where);
  return c;
}

void CodecConfig::validate(const std::string &where) const {
  auto in = [&](const char *what, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      bad(where, std::string("codec config: ") + what + " = " + std::to_string(v) +
                     " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  in("chunk", chunk, 1, 4096);
  in("width", width, 1, 8192);
  in("blocks", blocks, 0, 64);
  in("latent", latent, 1, 4096);
  in("levels", levels, 1, 16);
  if (density_filters.empty() || density_filters.size() > 8)
    bad(where, "codec config: density_filters must have 1 to 8 entries");
  for (int64_t f : density_filters) in("density filter", f, 1, 64);
  if (!(init_scale > 0 && init_scale < 1e6)) bad(where, "codec config: init_scale out of range");
  if (!(tail_mass > 0 && tail_mass < 0.1)) bad(where, "codec config: tail_mass out of range");
}

std::vector<double> default_level_coefficients(int64_t levels) {
  switch (levels) {
  case 1:
    return {1.0};
  case 2:
    return {3.4, 0.05};
  case 4:
    return {3.4, 1.2, 0.1, 0.05};
  case 8:
    return {4.0, 1.707, 0.724, 0.307, 0.130, 0.055, 0.024, 0.010};
  default: { // geometric from 4.0 down to 0.001, as the reference does for Q = 16
    std::vector<double> c(static_cast<size_t>(levels));
    for (int64_t q = 0; q < levels; ++q)
      c[static_cast<size_t>(q)] =
          4.0 * std::pow(0.001 / 4.0, static_cast<double>(q) / static_cast<double>(levels - 1));
    return c;
  }
  }
}

// ---- CDF tables
// ----------------------------------------------------------------------------------

std::vector<uint32_t> quantize_pmf(const std::vector<double> &pmf, uint32_t precision) {
  const size_t n = pmf.size();
  const uint64_t total = uint64_t{1} << precision;
  if (n == 0 || n > total) fail(NWC_E_INVALID_ARG, "quantize_pmf: bad symbol count");
  double sum = 0;
  for (double p : pmf) {
    if (!(p >= 0) || !std::isfinite(p)) fail(NWC_E_INVALID_ARG, "quantize_pmf: bad probability");
    sum += p;
  }
  // One unit per symbol, the rest shared in proportion to the mass (floor), and the remainder
  // handed out one unit at a time by largest fractional part (ties: lower index).
  const uint64_t spare = total - n;
  std::vector<uint64_t> freq(n, 1);
  std::vector<std::pair<double, size_t>> frac(n);
  uint64_t used = n;
  for (size_t i = 0; i < n; ++i) {
    const double share = sum > 0 ? pmf[i] / sum * static_cast<double>(spare) : 0.0;
    const auto whole = static_cast<uint64_t>(std::floor(share));
    freq[i] += whole;
    used += whole;
    frac[i] = {share - static_cast<double>(whole), i};
  }
  if (used > total) fail(NWC_E_INTERNAL, "quantize_pmf: rounding overflow");
  std::stable_sort(frac.begin(), frac.end(), [](const auto &a, const auto &b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (size_t k = 0; used < total; ++k, ++used) ++freq[frac[k % n].second];
  std::vector<uint32_t> cdf(n + 1, 0);
  for (size_t i = 0; i < n; ++i) cdf[i + 1] = cdf[i] + static_cast<uint32_t>(freq[i]);
  return cdf;
}

// ---- the MLPs in plain C++
// ------------------------------------------------------------------------

namespace {

// out[v][j] = (sum_k in[v][k] * W[j][k]) + bias[j] for n vectors: every sum starts at 0.0f and adds
// the products in k order, each product and each sum rounded to float (no fused multiply-add), so a
// vector's outputs are the same bits however many vectors share the call and whichever code path
// (vector width, tile) computes them. The tiles keep the accumulators of 4 vectors x 16 outputs in
// registers and read every weight row once per 4 vectors.
using v8f = float __attribute__((vector_size(32)));

// V vectors (V <= 4) x 8 * J outputs (J = 1 or 2) starting at output j0.
template <int V, int J>
__attribute__((always_inline)) inline void dense_tile(const DenseLayer &l, const float *in,
                                                      float *out, int64_t j0) {
  // The small loops are unrolled completely, so that acc lives in registers.
  v8f acc[V][J];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v)
#pragma GCC unroll 2
    for (int q = 0; q < J; ++q) acc[v][q] = v8f{};
  const float *w = l.weight_t.data() + j0;
  for (int64_t k = 0; k < l.in; ++k, w += l.out) {
    v8f wk[J];
#pragma GCC unroll 2
    for (int q = 0; q < J; ++q) __builtin_memcpy(&wk[q], w + 8 * q, sizeof(v8f));
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const float x = in[v * l.in + k];
#pragma GCC unroll 2
      for (int q = 0; q < J; ++q) acc[v][q] += x * wk[q];
    }
  }
#pragma GCC unroll 2
  for (int q = 0; q < J; ++q) {
    v8f b;
    __builtin_memcpy(&b, l.bias.data() + j0 + 8 * q, sizeof b);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const v8f r = acc[v][q] + b;
      __builtin_memcpy(out + v * l.out + j0 + 8 * q, &r, sizeof r);
    }
  }
}

// V vectors, outputs [j0, out) one at a time (the last out % 8 of them).
template <int V>
__attribute__((always_inline)) inline void dense_tail(const DenseLayer &l, const float *in,
                                                      float *out, int64_t j0) {
  for (int64_t j = j0; j < l.out; ++j)
    for (int v = 0; v < V; ++v) {
      float acc = 0.0f;
      for (int64_t k = 0; k < l.in; ++k) acc += in[v * l.in + k] * l.weight_t[k * l.out + j];
      out[v * l.out + j] = acc + l.bias[static_cast<size_t>(j)];
    }
}

template <int V>
__attribute__((always_inline)) inline void dense_rows(const DenseLayer &l, const float *in,
                                                      float *out) {
  int64_t j = 0;
  for (; j + 16 <= l.out; j += 16) dense_tile<V, 2>(l, in, out, j);
  for (; j + 8 <= l.out; j += 8) dense_tile<V, 1>(l, in, out, j);
  dense_tail<V>(l, in, out, j);
}

__attribute__((always_inline)) inline void dense_batch(const DenseLayer &l, const float *in,
                                                       int64_t n, float *out) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) dense_rows<4>(l, in + i * l.in, out + i * l.out);
  for (; i < n; ++i) dense_rows<1>(l, in + i * l.in, out + i * l.out);
}

// LayerNorm mean and 1 / sqrt(var + eps) of V vectors (row stride width). Each vector's sums add
// its values in order j = 0, 1, ...; V of them run interleaved, so that the additions of different
// vectors overlap instead of waiting on one another.
template <int V>
__attribute__((always_inline)) inline void norm_stats(const float *t, int64_t width, float *mean,
                                                      float *inv) {
  float m[V], var[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) m[v] = var[v] = 0.0f;
  for (int64_t j = 0; j < width; ++j)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) m[v] += t[v * width + j];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) m[v] /= static_cast<float>(width);
  for (int64_t j = 0; j < width; ++j)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) var[v] += (t[v * width + j] - m[v]) * (t[v * width + j] - m[v]);
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    mean[v] = m[v];
    inv[v] = 1.0f / std::sqrt(var[v] / static_cast<float>(width) + 1e-5f);
  }
}

// Input Linear -> blocks x (h = (h + ReLU(LN(Linear(h)))) * e_q) -> output Linear, for n vectors:
// in batches of kBatch, layer by layer (one batched product per layer while the batch's hidden
// states stay in cache). h and t hold kBatch x width floats.
constexpr int64_t kBatch = 64;

__attribute__((always_inline)) inline void
run_coder_body(const DenseCoder &c, const float *embedding, int64_t width, const float *x,
               int64_t n, const uint8_t *levels, float *y, float *h, float *t) {
  const int64_t in = c.input.in, out = c.output.out;
  for (int64_t i0 = 0; i0 < n; i0 += kBatch) {
    const int64_t nb = std::min(kBatch, n - i0);
    dense_batch(c.input, x + i0 * in, nb, h);
    for (size_t b = 0; b < c.linears.size(); ++b) {
      dense_batch(c.linears[b], h, nb, t);
      float mean[kBatch], inv[kBatch];
      if (!c.norm_weight.empty()) {
        int64_t v = 0;
        for (; v + 8 <= nb; v += 8) norm_stats<8>(t + v * width, width, mean + v, inv + v);
        for (; v < nb; ++v) norm_stats<1>(t + v * width, width, mean + v, inv + v);
      }
      for (int64_t v = 0; v < nb; ++v) {
        float *__restrict tv = t + v * width;
        float *__restrict hv = h + v * width;
        const float *e = embedding + levels[i0 + v] * width;
        if (!c.norm_weight.empty()) {
          const float *g = c.norm_weight[b].data(), *be = c.norm_bias[b].data();
          const float mv = mean[v], iv = inv[v];
          for (int64_t j = 0; j < width; ++j) tv[j] = (tv[j] - mv) * iv * g[j] + be[j];
        }
        for (int64_t j = 0; j < width; ++j) hv[j] = (hv[j] + std::max(tv[j], 0.0f)) * e[j];
      }
    }
    dense_batch(c.output, h, nb, y + i0 * out);
  }
}

void run_coder_generic(const DenseCoder &c, const float *embedding, int64_t width, const float *x,
                       int64_t n, const uint8_t *levels, float *y, float *h, float *t) {
  run_coder_body(c, embedding, width, x, n, levels, y, h, t);
}

#if defined(__x86_64__) || defined(__i386__)
// The same code with 8-wide AVX2 registers (AVX2 only: no FMA, whose single rounding would change
// the bits).
__attribute__((target("avx2"))) void run_coder_avx2(const DenseCoder &c, const float *embedding,
                                                    int64_t width, const float *x, int64_t n,
                                                    const uint8_t *levels, float *y, float *h,
                                                    float *t) {
  run_coder_body(c, embedding, width, x, n, levels, y, h, t);
}
#endif

void run_coder(const DenseCoder &c, const std::vector<float> &embedding, int64_t width,
               int64_t levels_count, const float *x, int64_t n, const uint8_t *levels, float *y) {
  for (int64_t i = 0; i < n; ++i)
    if (levels[i] >= levels_count) fail(NWC_E_INVALID_ARG, "quality level out of range");
  // The batch's hidden states, kept per thread from call to call (no fresh pages per block).
  thread_local std::vector<float> h, t;
  h.resize(static_cast<size_t>(std::min(n, kBatch) * width));
  t.resize(h.size());
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return run_coder_avx2(c, embedding.data(), width, x, n, levels, y, h.data(), t.data());
#endif
  run_coder_generic(c, embedding.data(), width, x, n, levels, y, h.data(), t.data());
}

} // namespace

double ChannelDensity::logits_cumulative(double x) const {
  std::vector<double> v{x}, next;
  for (size_t i = 0; i < matrices.size(); ++i) {
    const auto &m = matrices[i];
    const size_t out = biases[i].size(), in = v.size();
    next.assign(out, 0.0);
    for (size_t j = 0; j < out; ++j) {
      double acc = biases[i][j];
      for (size_t k = 0; k < in; ++k) acc += m[j * in + k] * v[k];
      if (i < factors.size()) acc += factors[i][j] * std::tanh(acc);
      next[j] = acc;
    }
    v.swap(next);
  }
  return v[0];
}

double ChannelDensity::likelihood(double y) const {
  const double lower = logits_cumulative(y - 0.5), upper = logits_cumulative(y + 0.5);
  const double s = (lower + upper) > 0 ? -1.0 : (lower + upper) < 0 ? 1.0 : 0.0;
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  return std::max(std::fabs(sigmoid(s * upper) - sigmoid(s * lower)), 1e-9);
}

double CodecFile::estimate_bits(const float *y_hat, int64_t n, const uint8_t *levels) const {
  double bits = 0;
  const int64_t m = config.latent;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = config.level_priors && levels ? levels[i] : 0;
    if (q >= config.levels)
      fail(NWC_E_INVALID_ARG, "codec estimate: quality level " + std::to_string(q) +
                                  " is out of range for a codec with " +
                                  std::to_string(config.levels) + " levels");
    const ChannelDensity *d = density.data() + q * m;
    for (int64_t c = 0; c < m; ++c) bits -= std::log2(d[c].likelihood(y_hat[i * m + c]));
  }
  return bits;
}

void CodecFile::analyze(const float *x, int64_t n, const uint8_t *levels, float *y) const {
  run_coder(analysis, level_embedding, config.width, config.levels, x, n, levels, y);
}

void CodecFile::synthesize(const float *y, int64_t n, const uint8_t *levels, float *x) const {
  run_coder(synthesis, level_embedding, config.width, config.levels, y, n, levels, x);
}

// ---- codec files -------------------------------------------------------------------------------

CodecFile load_codec(const std::filesystem::path &path) {
  const std::string where = path.string();
  Model m = read_safetensors(path);
  json meta;
  try {
    meta = json::parse(m.metadata.at("__metadata__").at("nwc.codec").get<std::string>());
  } catch (const std::exception &) {
    bad(where, "not an NWC codec file (safetensors metadata lacks a valid \"nwc.codec\" entry)");
  }
  if (!meta.is_object() || !meta.contains("format") || meta["format"] != "nwcc")
    bad(where, "not an NWC codec file (metadata format is not \"nwcc\")");
  if (!meta.contains("version") || !meta["version"].is_number_integer() ||
      meta["version"].get<int>() < 1 || meta["version"].get<int>() > kCodecFormatVersion)
    bad(where, "unsupported codec file version (expected 1 to " +
                   std::to_string(kCodecFormatVersion) + ")");
  CodecFile f;
  f.config = CodecConfig::from_json(meta.value("config", json()), where);
  if (meta["version"].get<int>() != f.config.format_version())
    bad(where, "codec file version " + std::to_string(meta["version"].get<int>()) +
                   (f.config.level_priors ? " cannot hold priors per level (version 2)"
                                          : " is for priors per level, which the config lacks"));
  f.metadata = meta;
  const CodecConfig &c = f.config;
  std::map<std::string, const ModelTensor *> by_name;
  for (const auto &t : m.tensors) {
    by_name[t.info.name] = &t;
    f.parameter_names.push_back(t.info.name);
  }
  auto get = [&](const std::string &name, const std::vector<int64_t> &shape) {
    auto it = by_name.find(name);
    if (it == by_name.end()) bad(where, "missing tensor " + name);
    if (it->second->info.shape != shape) bad(where, "tensor " + name + " has the wrong shape");
    std::vector<float> v = it->second->load();
    for (float x : v)
      if (!std::isfinite(x)) bad(where, "tensor " + name + " holds a non-finite value");
    return v;
  };
  auto dense_layer = [&](const std::string &prefix, int64_t in, int64_t out) {
    DenseLayer l;
    l.in = in;
    l.out = out;
    std::vector<float> w = get(prefix + ".weight", {out, in});
    l.weight_t.resize(w.size());
    for (int64_t j = 0; j < out; ++j)
      for (int64_t k = 0; k < in; ++k) l.weight_t[k * out + j] = w[j * in + k];
    l.bias = get(prefix + ".bias", {out});
    return l;
  };
  auto coder = [&](const std::string &name, int64_t in, int64_t out) {
    DenseCoder k;
    k.input = dense_layer(name + ".input", in, c.width);
    for (int64_t b = 0; b < c.blocks; ++b) {
      k.linears.push_back(dense_layer(name + ".linear" + std::to_string(b), c.width, c.width));
      if (c.layer_norm) {
        k.norm_weight.push_back(get(name + ".norm" + std::to_string(b) + ".weight", {c.width}));
        k.norm_bias.push_back(get(name + ".norm" + std::to_string(b) + ".bias", {c.width}));
      }
    }
    k.output = dense_layer(name + ".output", c.width, out);
    return k;
  };
  f.analysis = coder("g_a", c.chunk, c.latent);
  f.synthesis = coder("g_s", c.latent, c.chunk);
  f.level_embedding = get("level_embedding.weight", {c.levels, c.width});
  {
    std::vector<int64_t> fl{1};
    fl.insert(fl.end(), c.density_filters.begin(), c.density_filters.end());
    fl.push_back(1);
    const int64_t C = c.priors() * c.latent;
    f.density.resize(static_cast<size_t>(C));
    for (size_t i = 0; i + 1 < fl.size(); ++i) {
      const std::string k = std::to_string(i);
      auto mats = get("bottleneck.matrix" + k, {C, fl[i + 1], fl[i]});
      auto b = get("bottleneck.bias" + k, {C, fl[i + 1], 1});
      std::vector<float> fa;
      if (i + 2 < fl.size()) fa = get("bottleneck.factor" + k, {C, fl[i + 1], 1});
      const size_t mm = static_cast<size_t>(fl[i + 1] * fl[i]), bb = static_cast<size_t>(fl[i + 1]);
      for (int64_t ch = 0; ch < C; ++ch) {
        auto &d = f.density[static_cast<size_t>(ch)];
        std::vector<double> mat(mm), bias(bb), fac;
        for (size_t q = 0; q < mm; ++q) {
          const double x = mats[static_cast<size_t>(ch) * mm + q];
          mat[q] = x > 20 ? x : std::log1p(std::exp(x)); // softplus
        }
        for (size_t q = 0; q < bb; ++q) bias[q] = b[static_cast<size_t>(ch) * bb + q];
        if (!fa.empty()) {
          fac.resize(bb);
          for (size_t q = 0; q < bb; ++q) fac[q] = std::tanh(fa[static_cast<size_t>(ch) * bb + q]);
          d.factors.push_back(std::move(fac));
        }
        d.matrices.push_back(std::move(mat));
        d.biases.push_back(std::move(bias));
      }
    }
  }

  const int64_t C = c.priors() * c.latent; // tables, level-major
  if (!meta.contains("cdf_precision") || !meta["cdf_precision"].is_number_integer() ||
      meta["cdf_precision"].get<int64_t>() != kCdfPrecision)
    bad(where, "CDF precision must be " + std::to_string(kCdfPrecision));
  auto lengths = get("tables.lengths", {C});
  auto offsets = get("tables.offsets", {C});
  auto medians = get("tables.medians", {c.latent});
  auto it = by_name.find("tables.cdf");
  if (it == by_name.end() || it->second->info.shape.size() != 2 || it->second->info.shape[0] != C ||
      it->second->info.shape[1] < 3 || it->second->info.shape[1] > 8194)
    bad(where, "tables.cdf must be [" + std::to_string(C) + ", 3..8194]");
  CdfTables &t = f.tables;
  t.channels = c.latent;
  t.levels = c.priors();
  t.max_length = it->second->info.shape[1];
  auto cdf = it->second->load();
  t.cdf.assign(cdf.size(), 0);
  for (size_t i = 0; i < cdf.size(); ++i) {
    if (!(cdf[i] >= 0 && cdf[i] <= 65536)) bad(where, "tables.cdf value out of range");
    t.cdf[i] = static_cast<uint32_t>(cdf[i]);
  }
  for (int64_t ch = 0; ch < C; ++ch) {
    if (!(lengths[ch] >= 3 && lengths[ch] <= static_cast<float>(t.max_length)))
      bad(where, "tables.lengths[" + std::to_string(ch) + "] out of range");
    if (!(std::fabs(offsets[ch]) <= 1e6f))
      bad(where, "tables.offsets[" + std::to_string(ch) + "] out of range");
    t.lengths.push_back(static_cast<uint32_t>(lengths[ch]));
    t.offsets.push_back(static_cast<int32_t>(offsets[ch]));
    if (ch < c.latent) t.medians.push_back(medians[ch]);
    const uint32_t *row = t.cdf.data() + ch * t.max_length;
    if (row[0] != 0 || row[t.lengths[ch] - 1] != (1u << kCdfPrecision))
      bad(where, "tables.cdf row " + std::to_string(ch) + " does not run from 0 to 2^16");
    for (uint32_t k = 0; k + 1 < t.lengths[ch]; ++k)
      if (row[k + 1] <= row[k])
        bad(where, "tables.cdf row " + std::to_string(ch) + " is not strictly increasing");
  }
  return f;
}

} // namespace nwc::neural
