// nwc.quant.hqq through its C ABI: agreement with the reference implementation's own outputs
// (golden/hqq_reference.txt, written by running mobiusml/hqq; see ../README.md), closed-form cases,
// bit-identical encoder/decoder reconstruction, honest side info, rejection of corrupt input.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.quant.hqq";

double half_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -mag : mag;
}

uint16_t f16_bits(float x) { // independent float -> fp16 (nearest-even) conversion
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

// The harness's quantize output, with accessors for the side information.
struct Quantized : QuantizerOutput {
  uint16_t scale_bits(size_t r) const {
    return static_cast<uint16_t>(side[4 * r] | side[4 * r + 1] << 8);
  }
  uint16_t zero_bits(size_t r) const {
    return static_cast<uint16_t>(side[4 * r + 2] | side[4 * r + 3] << 8);
  }
};

Quantized quantize(Instance &inst, const std::vector<float> &x, int64_t n, int64_t m,
                   const char *tensor = "layers.0.q_proj") {
  return {run_quantize(inst, x, n, m, tensor)};
}

nwc_status dequantize(Instance &inst, const std::vector<int32_t> &symbols,
                      const std::vector<uint8_t> &side, int64_t n, int64_t m,
                      std::vector<float> &out) {
  return run_dequantize(inst, symbols, side.data(), side.size(), n, m, out, "layers.0.q_proj");
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return bitwise_equal(a, b);
}

// ---- the reference's outputs --------------------------------------------------------------------

struct RefCase {
  std::string version, name;
  int bits = 0, group = 0, axis = 1;
  bool round_zero = false;
  int64_t rows = 0, cols = 0;
  std::vector<float> w, scale, zero;
  std::vector<uint16_t> scale16, zero16;
  std::vector<int32_t> wq;
  size_t iterations = 0;
};

std::vector<float> hex_floats(std::istringstream &in) {
  std::vector<float> v;
  std::string t;
  while (in >> t) {
    const auto u = static_cast<uint32_t>(std::stoul(t, nullptr, 16));
    float f;
    std::memcpy(&f, &u, 4);
    v.push_back(f);
  }
  return v;
}

std::vector<RefCase> load_reference() {
  const std::string path =
      std::string(NWC_TEST_SOURCE_DIR) + "/plugins/quantizer/hqq/tests/golden/hqq_reference.txt";
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::vector<RefCase> cases;
  std::map<std::string, std::vector<float>> inputs;
  std::string line, version;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key == "version") {
      in >> version;
    } else if (key == "case") {
      RefCase c;
      int rz = 0;
      in >> c.name >> c.bits >> c.group >> rz >> c.axis >> c.rows >> c.cols;
      c.round_zero = rz != 0;
      c.version = version;
      if (inputs.count(c.name)) c.w = inputs[c.name];
      cases.push_back(c);
    } else {
      REQUIRE(!cases.empty());
      RefCase &c = cases.back();
      if (key == "W") {
        c.w = hex_floats(in);
        inputs[c.name] = c.w;
      } else if (key == "scale") {
        c.scale = hex_floats(in);
      } else if (key == "zero") {
        c.zero = hex_floats(in);
      } else if (key == "scale16" || key == "zero16") {
        std::string t;
        auto &dst = key == "scale16" ? c.scale16 : c.zero16;
        while (in >> t) dst.push_back(static_cast<uint16_t>(std::stoul(t, nullptr, 16)));
      } else if (key == "wq") {
        int v;
        while (in >> v) c.wq.push_back(v);
      } else if (key == "errors") {
        c.iterations = hex_floats(in).size();
      }
    }
  }
  return cases;
}

} // namespace

TEST_CASE("hqq: descriptor") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_QUANTIZER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 7);
  for (uint32_t i = 0; i < d.option_count; ++i) {
    const std::string key = d.options[i].key;
    CAPTURE(key);
    CHECK(d.options[i].doc != nullptr);
    CHECK(((d.options[i].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0) == (key == "bits"));
  }
}

// The reference ran in float32 on the CPU (torch 1.13, one thread). Our solver performs the same
// float32 operations per element, but sums (the per-group mean that gives the zero point and the
// mean error that stops the loop) are accumulated in double instead of torch's float32 pairwise
// order, and powf may differ from torch's vectorized pow by an ulp. So:
//  - scales are not optimized: the fp16 scale must match exactly;
//  - zero points must match within 2^-12 of a quantization step (fp32 rounding of sums of up to
//    128 terms of magnitude 2^bits), i.e. the same fp16 value or its neighbour;
//  - symbols are round(W * s + z): at most 1 apart, and different only where W * s + z is within
//    that tolerance of a rounding boundary (a handful per case).
TEST_CASE("hqq: agrees with the reference implementation's outputs (mobiusml/hqq)") {
  const auto cases = load_reference();
  REQUIRE(cases.size() == 16);
  for (const RefCase &c : cases) {
    CAPTURE(c.version);
    CAPTURE(c.name);
    REQUIRE(c.axis == 1);
    const int64_t m = c.group, n = c.rows * c.cols / c.group;
    REQUIRE(c.w.size() == static_cast<size_t>(n * m));
    REQUIRE(c.zero.size() == static_cast<size_t>(n));
    REQUIRE(c.wq.size() == c.w.size());
    // hqq 0.2.7+ (HEAD) never updates beta; 0.2.6 multiplied it by kappa = 1.01 per iteration.
    const double kappa = c.version == "head" ? 1.0 : 1.01;
    Instance inst(kId, {opt_int("bits", c.bits), opt_bool("round_zero", c.round_zero),
                        opt_float("kappa", kappa)});
    REQUIRE(inst.ok());
    const Quantized q = quantize(inst, c.w, n, m);
    REQUIRE(q.status == NWC_OK);
    REQUIRE(q.side.size() == static_cast<size_t>(4 * n));
    size_t zero_diff = 0, sym_diff = 0;
    double worst = 0;
    for (int64_t r = 0; r < n; ++r) {
      const auto i = static_cast<size_t>(r);
      CHECK(q.scale_bits(i) == c.scale16[i]);
      CHECK(f16_bits(c.scale[i]) == c.scale16[i]); // the reference's own fp16 rounding
      const double ours = half_value(q.zero_bits(i)), ref = half_value(c.zero16[i]);
      worst = std::max(worst, std::fabs(ours - ref));
      zero_diff += q.zero_bits(i) != c.zero16[i];
      CHECK(std::fabs(ours - ref) <=
            std::max(std::ldexp(1.0, -12), std::fabs(ref) * std::ldexp(1.0, -10)));
    }
    for (size_t i = 0; i < c.wq.size(); ++i) {
      CHECK(std::abs(q.symbols[i] - c.wq[i]) <= 1);
      sym_diff += q.symbols[i] != c.wq[i];
    }
    CAPTURE(zero_diff); // fp16 zero points that differ (0 on the development machine)
    CAPTURE(worst);
    CAPTURE(sym_diff);                    // symbols that differ (0 on the development machine)
    CHECK(sym_diff * 500 <= c.wq.size()); // at most 0.2%
    std::vector<float> back;
    REQUIRE(dequantize(inst, q.symbols, q.side, n, m, back) == NWC_OK);
    CHECK(same_bits(back, q.dequantized));
  }
}

TEST_CASE(
    "hqq: kappa changes the result where the shrinkage is active (the golden discriminates)") {
  const auto cases = load_reference();
  for (const RefCase &c : cases) {
    if (c.version != "v026" || c.name != "w4g64rz") continue;
    const int64_t m = c.group, n = c.rows * c.cols / c.group;
    Instance head(kId, {opt_int("bits", c.bits), opt_bool("round_zero", c.round_zero)});
    const Quantized q = quantize(head, c.w, n, m);
    REQUIRE(q.status == NWC_OK);
    size_t diff = 0;
    for (int64_t r = 0; r < n; ++r)
      diff += q.zero_bits(static_cast<size_t>(r)) != c.zero16[static_cast<size_t>(r)];
    CHECK(diff > 0); // kappa = 1 does not reproduce hqq 0.2.6
  }
}

namespace {

std::vector<float> normal_weights(uint64_t seed, size_t count, double sigma) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, sigma);
  std::vector<float> x(count);
  for (auto &v : x) v = static_cast<float>(normal(rng));
  return x;
}

double mean_abs_error(const std::vector<float> &x, const std::vector<float> &y) {
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) e += std::fabs(static_cast<double>(x[i]) - y[i]);
  return e / static_cast<double>(x.size());
}

} // namespace

TEST_CASE("hqq: a group already on an fp16 grid is reproduced exactly") {
  // Levels -0.375 + k/8, k = 0..15, in a scrambled order: s = 8, z = 3, every step exact.
  std::vector<float> x;
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 16; ++k) x.push_back(static_cast<float>(-0.375 + ((k * 7 + r) % 16) / 8.0));
  for (bool round_zero : {false, true})
    for (bool optimize : {false, true}) {
      CAPTURE(round_zero);
      CAPTURE(optimize);
      Instance inst(kId, {opt_bool("round_zero", round_zero), opt_bool("optimize", optimize)});
      const Quantized q = quantize(inst, x, 4, 16);
      REQUIRE(q.status == NWC_OK);
      CHECK(same_bits(q.dequantized, x));
      CHECK(half_value(q.scale_bits(0)) == 0.125);
      CHECK(half_value(q.zero_bits(0)) == 3.0);
    }
  // Constant groups of fp16 values: the small-denominator rule (s = 1, z = -c) reproduces them.
  std::vector<float> c;
  for (float v : {0.0f, 0.25f, -3.5f, 1e-3f * 1.0009765625f})
    for (int k = 0; k < 8; ++k) c.push_back(static_cast<float>(half_value(f16_bits(v))));
  Instance inst(kId);
  const Quantized q = quantize(inst, c, 4, 8);
  REQUIRE(q.status == NWC_OK);
  CHECK(same_bits(q.dequantized, c));
}

TEST_CASE("hqq: one iteration without shrinkage is the least-squares zero point") {
  // Weights of 0.01: every error |W - Wr| is far below the shrinkage threshold (|e|^0.3 * |e|
  // > 1/beta needs |e| > 0.17), so We = 0 and the update is z = mean(Wq - W * s).
  const int64_t n = 16, m = 64;
  const auto x = normal_weights(3, static_cast<size_t>(n * m), 0.01);
  for (int bits : {2, 3, 4}) {
    CAPTURE(bits);
    Instance inst(kId, {opt_int("bits", bits), opt_int("iters", 1)});
    const Quantized q = quantize(inst, x, n, m);
    REQUIRE(q.status == NWC_OK);
    const auto maxv = static_cast<float>((1 << bits) - 1);
    for (int64_t r = 0; r < n; ++r) {
      const float *w = x.data() + r * m;
      const float mn = *std::min_element(w, w + m), mx = *std::max_element(w, w + m);
      const float s = maxv / (mx - mn), z0 = -mn * s;
      double acc = 0;
      for (int64_t c = 0; c < m; ++c) {
        const float wq = std::clamp(std::nearbyint(w[c] * s + z0), 0.0f, maxv);
        acc += static_cast<double>(wq - w[c] * s);
      }
      const auto z1 = static_cast<float>(acc / m);
      CHECK(q.zero_bits(static_cast<size_t>(r)) == f16_bits(z1));
      CHECK(q.scale_bits(static_cast<size_t>(r)) == f16_bits(1.0f / s));
      for (int64_t c = 0; c < m; ++c)
        CHECK(q.symbols[static_cast<size_t>(r * m + c)] ==
              static_cast<int32_t>(std::clamp(std::nearbyint(w[c] * s + z1), 0.0f, maxv)));
    }
  }
}

TEST_CASE("hqq: with an infinite penalty the zero point is a fixed point") {
  // beta -> infinity: shrink(e) = e, so z_new = mean(Wq - Wr * s) = z (up to float rounding).
  const int64_t n = 8, m = 32;
  const auto x = normal_weights(5, static_cast<size_t>(n * m), 1.0);
  Instance fixed(kId, {opt_float("beta", 1e12), opt_int("bits", 3)});
  Instance plain(kId, {opt_bool("optimize", false), opt_int("bits", 3)});
  const Quantized a = quantize(fixed, x, n, m), b = quantize(plain, x, n, m);
  REQUIRE(a.status == NWC_OK);
  REQUIRE(b.status == NWC_OK);
  for (size_t r = 0; r < static_cast<size_t>(n); ++r)
    CHECK(std::fabs(half_value(a.zero_bits(r)) - half_value(b.zero_bits(r))) <= 1.0 / 256);
}

// Not a guarantee of the algorithm: the solver stops on the first iteration whose mean absolute
// error is not lower and keeps the zero point that iteration computed, which is never evaluated.
// Measured here on Gaussian weights at two scales (with and without active shrinkage).
TEST_CASE("hqq: lower mean absolute error than its own min/max grid on Gaussian weights") {
  const int64_t n = 64, m = 64;
  for (double sigma : {0.02, 1.0})
    for (int bits : {2, 3, 4, 8}) {
      CAPTURE(sigma);
      CAPTURE(bits);
      const auto x = normal_weights(static_cast<uint64_t>(bits), static_cast<size_t>(n * m), sigma);
      Instance hqq(kId, {opt_int("bits", bits)});
      Instance rtn(kId, {opt_int("bits", bits), opt_bool("optimize", false)});
      const Quantized a = quantize(hqq, x, n, m), b = quantize(rtn, x, n, m);
      REQUIRE(a.status == NWC_OK);
      REQUIRE(b.status == NWC_OK);
      CHECK(mean_abs_error(x, a.dequantized) < mean_abs_error(x, b.dequantized));
    }
}

TEST_CASE("hqq: round trips for every width, honest side info") {
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t m : {1, 7, 32, 300}) {
      CAPTURE(bits);
      CAPTURE(m);
      const int64_t n = 5;
      const auto x =
          normal_weights(static_cast<uint64_t>(bits * 1000 + m), static_cast<size_t>(n * m), 0.05);
      Instance inst(kId, {opt_int("bits", bits)});
      const Quantized q = quantize(inst, x, n, m);
      REQUIRE(q.status == NWC_OK);
      CHECK(q.side.size() == static_cast<size_t>(4 * n)); // fp16 scale + fp16 zero per chunk
      for (int32_t s : q.symbols) {
        CHECK(s >= 0);
        CHECK(s < (1 << bits));
      }
      std::vector<float> back;
      REQUIRE(dequantize(inst, q.symbols, q.side, n, m, back) == NWC_OK);
      CHECK(same_bits(back, q.dequantized));
      // The decoder's formula with the stored fp16 values.
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < m; ++c) {
          const auto i = static_cast<size_t>(r * m + c);
          const double v = (q.symbols[i] - half_value(q.zero_bits(static_cast<size_t>(r)))) *
                           half_value(q.scale_bits(static_cast<size_t>(r)));
          CHECK(back[i] == static_cast<float>(v));
        }
    }
  // Empty chunks: nothing to code, 4 bytes each all the same.
  Instance inst(kId);
  const Quantized q = quantize(inst, {}, 3, 0);
  REQUIRE(q.status == NWC_OK);
  CHECK(q.side.size() == 12);
  std::vector<float> back;
  CHECK(dequantize(inst, {}, q.side, 3, 0, back) == NWC_OK);
}

TEST_CASE("hqq: bad inputs are refused") {
  Instance inst(kId);
  for (float bad : {NAN, INFINITY, 70000.0f}) {
    CAPTURE(bad);
    std::vector<float> x(16, 0.5f);
    x[9] = bad;
    const Quantized q = quantize(inst, x, 2, 8, "blk.3.attn_k");
    CHECK(q.status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("'blk.3.attn_k'") != std::string::npos);
  }
  // A narrow range far from zero: s is clamped to 2e4 and z = -min * s overflows fp16.
  std::vector<float> x = {5.0f, 5.001f, 5.0005f, 5.0002f};
  const Quantized q = quantize(inst, x, 1, 4, "blk.0.ffn_up");
  CHECK(q.status == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("fp16") != std::string::npos);
  CHECK(Instance(kId, {opt_int("bits", 0)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("bits", 9)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_float("lp_norm", 1.5)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_float("kappa", 0.5)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("iters", 0)}).status == NWC_E_INVALID_OPTION);
}

TEST_CASE("hqq: corrupt side info and symbols are rejected") {
  const int64_t n = 4, m = 16;
  const auto x = normal_weights(9, static_cast<size_t>(n * m), 0.1);
  Instance inst(kId, {opt_int("bits", 3)});
  const Quantized q = quantize(inst, x, n, m);
  REQUIRE(q.status == NWC_OK);
  std::vector<float> out;
  for (size_t size : {size_t{0}, q.side.size() - 1, q.side.size() + 1, q.side.size() * 2}) {
    std::vector<uint8_t> side = q.side;
    side.resize(size);
    CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
  }
  for (size_t at : {size_t{4}, size_t{6}}) // scale, zero of chunk 1
    for (uint16_t h : {uint16_t{0x7c00}, uint16_t{0xfc00}, uint16_t{0x7e00}}) {
      std::vector<uint8_t> side = q.side;
      side[at] = static_cast<uint8_t>(h);
      side[at + 1] = static_cast<uint8_t>(h >> 8);
      CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
    }
  std::vector<uint8_t> neg = q.side;
  neg[5] = static_cast<uint8_t>(neg[5] | 0x80); // negative scale
  CHECK(dequantize(inst, q.symbols, neg, n, m, out) == NWC_E_CORRUPT_STREAM);
  for (int32_t bad : {-1, 8, INT32_MIN, INT32_MAX}) {
    std::vector<int32_t> s = q.symbols;
    s[37] = bad;
    CHECK(dequantize(inst, s, q.side, n, m, out) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find(std::to_string(bad)) != std::string::npos);
  }
}
