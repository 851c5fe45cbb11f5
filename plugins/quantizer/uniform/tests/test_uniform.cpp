// nwc.quant.uniform through its C ABI: the half-step error bound with the stored fp16 scale,
// bit-identical encoder/decoder reconstruction, symbol ranges, the clipping search, and rejection
// of bad inputs and corrupt side info.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.quant.uniform";

// Test oracle for an fp16 bit pattern (finite values only).
double half_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -mag : mag;
}

// The harness's quantize output, with accessors for the side information.
struct Quantized : QuantizerOutput {
  double scale(size_t chunk) const {
    return half_value(static_cast<uint16_t>(side[4 * chunk] | side[4 * chunk + 1] << 8));
  }
  double offset(size_t chunk) const {
    return half_value(static_cast<uint16_t>(side[4 * chunk + 2] | side[4 * chunk + 3] << 8));
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

// Chunks of many kinds, m values each: a list of rows.
std::vector<std::vector<float>> test_chunks(std::mt19937_64 &rng, int64_t m) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<std::vector<float>> rows;
  auto make = [&](auto f) {
    std::vector<float> r(static_cast<size_t>(m));
    for (auto &v : r) v = static_cast<float>(f());
    rows.push_back(r);
  };
  make([&] { return normal(rng); });
  make([&] { return 0.02 * normal(rng); });               // typical weight scale
  make([&] { return 1.0 + 1e-6 * normal(rng); });         // tiny range far from zero
  make([&] { return 1e-7 * normal(rng); });               // tiny range around zero (fp16 subnormal)
  make([&] { return 1e-30 * normal(rng); });              // below fp16 resolution
  make([&] { return -5.0 - 5.0 * uni(rng); });            // negative only
  make([&] { return 3.0 + uni(rng); });                   // positive only
  make([&] { return 1e4 + 100.0 * normal(rng); });        // large values
  make([&] { return 1e4 + 0.01 * normal(rng); });         // large, narrow
  make([&] { return -3e4 * uni(rng) + 1.5e4; });          // wide, both signs
  make([&] { return 65504.0 * (2.0 * uni(rng) - 1.0); }); // the whole fp16 range
  for (double c : {0.0, 0.1, 3.0, -2.5, 1e-8, 65504.0, -65504.0, 1.0 / 3.0})
    make([&] { return c; });
  make([&] { return uni(rng) < 0.5 ? -1.0 : 1.0; }); // two levels
  return rows;
}

std::vector<float> flatten(const std::vector<std::vector<float>> &rows) {
  std::vector<float> x;
  for (const auto &r : rows) x.insert(x.end(), r.begin(), r.end());
  return x;
}

// Laplace(0, 1) with a few large outliers: the case clipping exists for.
std::vector<float> heavy_tailed(std::mt19937_64 &rng, size_t n) {
  std::exponential_distribution<double> ex(1.0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<float> x(n);
  for (auto &v : x) {
    const double mag = uni(rng) < 0.005 ? 8.0 + 4.0 * uni(rng) : ex(rng);
    v = static_cast<float>(uni(rng) < 0.5 ? -mag : mag);
  }
  return x;
}

double chunk_error(const std::vector<float> &x, const std::vector<float> &dq, int64_t r,
                   int64_t m) {
  double e = 0.0;
  for (int64_t c = 0; c < m; ++c) {
    const double d =
        static_cast<double>(x[static_cast<size_t>(r * m + c)]) - dq[static_cast<size_t>(r * m + c)];
    e += d * d;
  }
  return e;
}

} // namespace

TEST_CASE("uniform: descriptor") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_QUANTIZER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 9);
  for (uint32_t i = 0; i < d.option_count; ++i) {
    const std::string key = d.options[i].key;
    CAPTURE(key);
    CHECK(d.options[i].doc != nullptr);
    const bool affects = (d.options[i].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0;
    CHECK(affects == (key == "bits" || key == "mode" || key == "grid"));
  }
}

TEST_CASE("uniform: half-step bound, bit-identical decode and symbol range") {
  std::mt19937_64 rng(11);
  for (int64_t m : {1, 7, 64}) {
    const auto rows = test_chunks(rng, m);
    const auto x = flatten(rows);
    const auto n = static_cast<int64_t>(rows.size());
    for (int bits = 2; bits <= 8; ++bits)
      for (const char *mode : {"asymmetric", "symmetric"}) {
        CAPTURE(m);
        CAPTURE(bits);
        const std::string mode_name = mode;
        CAPTURE(mode_name);
        const bool sym = std::string(mode) == "symmetric";
        Instance inst(kId, {opt_int("bits", bits), opt_enum("mode", mode)});
        REQUIRE(inst.ok());
        const Quantized q = quantize(inst, x, n, m);
        REQUIRE(q.status == NWC_OK);
        REQUIRE(q.side.size() == static_cast<size_t>(n) * 4);

        const int32_t qmin = sym ? -((1 << (bits - 1)) - 1) : 0;
        const int32_t qmax = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
        for (int64_t r = 0; r < n; ++r) {
          CAPTURE(r);
          const double scale = q.scale(static_cast<size_t>(r));
          const double offset = q.offset(static_cast<size_t>(r));
          REQUIRE(std::isfinite(scale));
          REQUIRE(scale >= 0.0);
          if (sym) CHECK(offset == 0.0);
          double lo = INFINITY, hi = -INFINITY;
          for (int64_t c = 0; c < m; ++c) {
            const size_t i = static_cast<size_t>(r * m + c);
            lo = std::min(lo, static_cast<double>(x[i]));
            hi = std::max(hi, static_cast<double>(x[i]));
            REQUIRE(q.symbols[i] >= qmin);
            REQUIRE(q.symbols[i] <= qmax);
            // The decoder's formula with the stored fp16 values.
            const double recon = offset + q.symbols[i] * scale;
            CHECK(q.dequantized[i] == static_cast<float>(recon));
            // Tolerance: the reconstruction is rounded once to float (half a float ulp of it),
            // and the symbol is chosen with a double division (relative error ~1e-16 of the step).
            const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(recon), 1e-38)) - 23);
            const double err = std::fabs(static_cast<double>(x[i]) - q.dequantized[i]);
            CHECK(err <= scale / 2 * (1 + 1e-12) + ulp / 2);
          }
          // The scale is not inflated: at most the exact min/max step rounded up to fp16, unless
          // fp16 cannot place the offset precisely enough (large values with a narrow range).
          const double exact =
              sym ? (lo == hi ? std::fabs(lo) : std::max(-lo, hi) / qmax) : (hi - lo) / qmax;
          const double offset_ulp =
              std::ldexp(1.0, std::ilogb(std::max(std::fabs(lo), std::ldexp(1.0, -14))) - 10);
          if (sym || exact >= 2 * offset_ulp)
            CHECK(scale <= exact * (1 + 1.0 / 512) + std::ldexp(1.0, -24));
          // Constants representable in fp16 reconstruct exactly.
          if (lo == hi) {
            const bool representable =
                lo == 0.0 || lo == 3.0 || lo == -2.5 || lo == 65504.0 || lo == -65504.0;
            if (representable)
              for (int64_t c = 0; c < m; ++c)
                CHECK(q.dequantized[static_cast<size_t>(r * m + c)] == static_cast<float>(lo));
          }
        }

        std::vector<float> back;
        REQUIRE(dequantize(inst, q.symbols, q.side, n, m, back) == NWC_OK);
        CHECK(same_bits(back, q.dequantized));
      }
  }
}

TEST_CASE("uniform: clip search never hurts and helps on heavy tails") {
  std::mt19937_64 rng(5);
  const int64_t m = 128, n = 64;
  const auto x = heavy_tailed(rng, static_cast<size_t>(n * m));
  for (int bits : {2, 3, 4, 8})
    for (const char *mode : {"asymmetric", "symmetric"}) {
      CAPTURE(bits);
      const std::string mode_name = mode;
      CAPTURE(mode_name);
      Instance plain(kId, {opt_int("bits", bits), opt_enum("mode", mode)});
      Instance clip(kId,
                    {opt_int("bits", bits), opt_enum("mode", mode), opt_bool("clip_search", true)});
      REQUIRE(plain.ok());
      REQUIRE(clip.ok());
      const Quantized a = quantize(plain, x, n, m);
      const Quantized b = quantize(clip, x, n, m);
      REQUIRE(a.status == NWC_OK);
      REQUIRE(b.status == NWC_OK);
      CHECK(b.side.size() == a.side.size());
      double total_a = 0, total_b = 0;
      for (int64_t r = 0; r < n; ++r) {
        const double ea = chunk_error(x, a.dequantized, r, m);
        const double eb = chunk_error(x, b.dequantized, r, m);
        CHECK(eb <= ea);
        total_a += ea;
        total_b += eb;
      }
      // At 8 bits the rounding noise is so small that clipping rarely pays; below, it must.
      if (bits <= 4)
        CHECK(total_b < 0.95 * total_a);
      else
        CHECK(total_b <= total_a);
      // Clipped symbols still decode bit-identically (clipping is encoder-only).
      std::vector<float> back;
      REQUIRE(dequantize(plain, b.symbols, b.side, n, m, back) == NWC_OK);
      CHECK(same_bits(back, b.dequantized));
    }

  // Without outliers the search may pick ratio 1.0; it must never be worse on any chunk.
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<float> g(static_cast<size_t>(n * m));
  for (auto &v : g) v = static_cast<float>(normal(rng));
  Instance plain(kId, {opt_int("bits", 8)});
  Instance clip(kId, {opt_int("bits", 8), opt_bool("clip_search", true),
                      opt_float("clip_min_ratio", 0.2), opt_int("clip_steps", 7)});
  const Quantized a = quantize(plain, g, n, m), b = quantize(clip, g, n, m);
  REQUIRE(a.status == NWC_OK);
  REQUIRE(b.status == NWC_OK);
  for (int64_t r = 0; r < n; ++r)
    CHECK(chunk_error(g, b.dequantized, r, m) <= chunk_error(g, a.dequantized, r, m));
}

TEST_CASE("uniform: non-finite and out-of-range inputs are refused") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  for (float bad : {NAN, INFINITY, -INFINITY, 70000.0f, -65505.0f}) {
    CAPTURE(bad);
    std::vector<float> x(16, 0.5f);
    x[9] = bad;
    const Quantized q = quantize(inst, x, 2, 8, "blk.3.attn_k");
    CHECK(q.status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("'blk.3.attn_k'") != std::string::npos);
    if (std::isfinite(bad))
      CHECK(inst.last_error().find("fp16") != std::string::npos);
    else
      CHECK(inst.last_error().find("non-finite") != std::string::npos);
  }
}

TEST_CASE("uniform: corrupt side info and symbols are rejected") {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 4, m = 16;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  std::vector<float> out;

  SUBCASE("side of the wrong size") {
    Instance inst(kId);
    const Quantized q = quantize(inst, x, n, m);
    REQUIRE(q.status == NWC_OK);
    for (size_t size : {size_t{0}, q.side.size() - 1, q.side.size() + 1, q.side.size() * 2}) {
      std::vector<uint8_t> side = q.side;
      side.resize(size);
      CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
    }
  }
  SUBCASE("non-finite or negative scale") {
    Instance inst(kId);
    const Quantized q = quantize(inst, x, n, m);
    for (uint16_t bits : {uint16_t{0x7c00}, uint16_t{0x7e00}, uint16_t{0xbc00}}) {
      std::vector<uint8_t> side = q.side;
      side[4] = static_cast<uint8_t>(bits);
      side[5] = static_cast<uint8_t>(bits >> 8);
      CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
    }
  }
  for (int bits : {2, 4, 8})
    for (const char *mode : {"asymmetric", "symmetric"}) {
      CAPTURE(bits);
      const std::string mode_name = mode;
      CAPTURE(mode_name);
      const bool sym = std::string(mode) == "symmetric";
      Instance inst(kId, {opt_int("bits", bits), opt_enum("mode", mode)});
      const Quantized q = quantize(inst, x, n, m);
      REQUIRE(q.status == NWC_OK);
      const int32_t qmax = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
      const int32_t qmin = sym ? -qmax : 0;
      for (int32_t bad : {qmin - 1, qmax + 1, INT32_MIN, INT32_MAX}) {
        std::vector<int32_t> s = q.symbols;
        s[37] = bad;
        CHECK(dequantize(inst, s, q.side, n, m, out) == NWC_E_CORRUPT_STREAM);
        CHECK(inst.last_error().find(std::to_string(bad)) != std::string::npos);
      }
      if (sym) { // the offset of a symmetric chunk must be zero
        std::vector<uint8_t> side = q.side;
        side[3] = 0x3c; // offset 1.0
        CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
      }
    }
}

TEST_CASE("uniform: option bounds") {
  CHECK(Instance(kId, {opt_int("bits", 1)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("bits", 9)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_enum("mode", "nf4")}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_enum("mode", "gptq")}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_enum("grid", "minmax")}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_float("clip_min_ratio", 0.0)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("clip_steps", 0)}).status == NWC_E_INVALID_OPTION);
  Instance ok(kId,
              {opt_int("bits", 8), opt_enum("mode", "symmetric"), opt_bool("clip_search", true),
               opt_float("clip_min_ratio", 0.3), opt_int("clip_steps", 10)});
  CHECK(ok.ok());
}

TEST_CASE("uniform: fp16 oracle sanity") {
  CHECK(half_value(0x3c00) == 1.0);
  CHECK(half_value(0x7bff) == 65504.0);
  CHECK(half_value(0x0001) == std::ldexp(1.0, -24));
  CHECK(half_value(0xc000) == -2.0);
}

TEST_CASE("uniform: quantize_fitted codes values on the grid fitted to the reference") {
  Instance inst(kId, {opt_int("bits", 3)});
  const auto &q = quantizer_interface(inst);
  REQUIRE(q.struct_size >= sizeof(nwc_quantizer_interface));
  REQUIRE(static_cast<bool>(q.quantize_fitted));
  const int64_t n = 4, m = 16;
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> ref(static_cast<size_t>(n * m)), x(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ref[i] = dist(rng);
    x[i] = ref[i] + 0.3f * dist(rng); // moved by error feedback; some fall outside the grid
  }
  // The grid of the reference alone, from plain quantize.
  const Quantized grid = quantize(inst, ref, n, m);
  REQUIRE(grid.status == NWC_OK);
  std::vector<int32_t> sym(ref.size());
  std::vector<float> dq(ref.size());
  Block block("layers.0.q_proj", n, m, 0, m);
  View xv(x.data(), n, m), rv(ref.data(), n, m), sv(sym.data(), n, m), dv(dq.data(), n, m);
  VecSink side;
  REQUIRE(q.quantize_fitted(inst.get(), block.get(), xv.get(), rv.get(), sv.get(), dv.get(),
                            side.get()) == NWC_OK);
  CHECK(side.bytes == grid.side); // same scale/offset as fitting on the reference
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t chunk = i / static_cast<size_t>(m);
    const double s = grid.scale(chunk), o = grid.offset(chunk);
    // Nearest grid point to x, clamped to the 8 levels.
    double t = std::floor((x[i] - o) / s + 0.5);
    t = std::min(std::max(t, 0.0), 7.0);
    CHECK(sym[i] == static_cast<int32_t>(t));
  }
  std::vector<float> back;
  REQUIRE(dequantize(inst, sym, side.bytes, n, m, back) == NWC_OK);
  CHECK(same_bits(back, dq));
}

// ---- GPTQ's grid (grid = "gptq", mode asymmetric or symmetric) --------------------------------

namespace {

// A direct transcription of GPTQ's quant.py (Quantizer.find_params with perchannel over one group,
// and quantize()), in float32 as torch computes it; torch.round is round-half-to-even
// (std::nearbyint). The one place fp16 enters: the scale is rounded to fp16 (nearest-even, as
// torch's .half() when the checkpoint is written; here _Float16, independent of the plugin's own
// conversion), and both the symbols (AutoGPTQ's packing: round(W / scale_fp16) + zero) and the
// reconstruction (the loader's scale_fp16 * (q - zero)) use that fp16 scale.
struct GptqOracle {
  int bits = 4;
  bool sym = false;
  bool mse = false;
  int grid = 100;
  double maxshrink = 0.8, norm = 2.4;

  float maxq() const { return static_cast<float>((1 << bits) - 1); }

  // quant.py's quantize(x, scale, zero, maxq)
  float fake(float x, float scale, float zero) const {
    const float q = std::clamp(std::nearbyint(x / scale) + zero, 0.0f, maxq());
    return scale * (q - zero);
  }

  void find_params(const float *x, int64_t m, float &scale, float &zero) const {
    float xmin = 0.0f, xmax = 0.0f;
    if (m > 0) {
      xmin = *std::min_element(x, x + m);
      xmax = *std::max_element(x, x + m);
    }
    xmin = std::min(xmin, 0.0f); // torch.minimum(x.min(1)[0], zeros)
    xmax = std::max(xmax, 0.0f);
    if (sym) {
      xmax = std::max(std::fabs(xmin), xmax);
      if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) {
      xmin = -1;
      xmax = +1;
    }
    scale = (xmax - xmin) / maxq();
    zero = sym ? (maxq() + 1) / 2 : std::nearbyint(-xmin / scale);
    if (!mse) return;
    // The reference sums the error in float32 (torch.sum); here in double, as the plugin does.
    double best = INFINITY;
    for (int i = 0; i < static_cast<int>(maxshrink * grid); ++i) {
      const double p = 1 - static_cast<double>(i) / grid; // a Python float, rounded to float32
      const float xmin1 = static_cast<float>(p) * xmin, xmax1 = static_cast<float>(p) * xmax;
      const float scale1 = (xmax1 - xmin1) / maxq();
      if (!(scale1 > 0)) continue; // float denormals: the reference's error is NaN, never lower
      const float zero1 = sym ? zero : std::nearbyint(-xmin1 / scale1);
      double err = 0;
      for (int64_t c = 0; c < m; ++c)
        err += std::pow(std::fabs(static_cast<double>(fake(x[c], scale1, zero1) - x[c])), norm);
      if (err < best) {
        best = err;
        scale = scale1;
        zero = zero1;
      }
    }
  }
};

// The oracle's stored values: fp16 scale bits, zero point, symbols and reconstruction.
struct GptqExpected {
  uint16_t scale_bits;
  int32_t zero;
  std::vector<int32_t> q;
  std::vector<float> value;
};

uint16_t f16_bits(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

GptqExpected gptq_expected(const GptqOracle &o, const float *fit, const float *x, int64_t m) {
  float scale = 0, zero = 0;
  o.find_params(fit, m, scale, zero);
  // A float scale of 0 (float denormal input) gives the reference a NaN zero point; the plugin
  // stores 0 (gptq) and every value of such a group reconstructs to 0 either way.
  if (!(scale > 0) && !o.sym) zero = 0;
  GptqExpected e;
  e.scale_bits = f16_bits(scale);
  e.zero = static_cast<int32_t>(zero);
  const float s16 = static_cast<float>(half_value(e.scale_bits));
  for (int64_t c = 0; c < m; ++c) {
    const float q = s16 == 0 ? zero : std::clamp(std::nearbyint(x[c] / s16) + zero, 0.0f, o.maxq());
    e.q.push_back(static_cast<int32_t>(q));
    e.value.push_back(static_cast<float>(static_cast<double>(s16) * (q - zero)));
  }
  return e;
}

uint32_t unpack_bits(const uint8_t *data, size_t index, int bits) {
  uint32_t v = 0;
  for (int k = 0; k < bits; ++k) {
    const size_t bit = index * static_cast<size_t>(bits) + static_cast<size_t>(k);
    v |= static_cast<uint32_t>((data[bit / 8] >> (bit % 8)) & 1) << k;
  }
  return v;
}

size_t gptq_side_bytes(size_t n, int bits, bool sym) {
  return 2 * n + (sym ? 0 : (n * static_cast<size_t>(bits) + 7) / 8);
}

std::vector<nwc_option> gptq_opts(int bits, bool sym, bool mse) {
  return {opt_int("bits", bits), opt_enum("mode", sym ? "symmetric" : "asymmetric"),
          opt_enum("grid", "gptq"), opt_bool("clip_search", mse)};
}

// Checks plugin output against the oracle, chunk by chunk, bit for bit.
void check_against_oracle(const GptqOracle &o, const std::vector<float> &fit,
                          const std::vector<float> &x, int64_t n, int64_t m,
                          const std::vector<int32_t> &symbols, const std::vector<float> &dq,
                          const std::vector<uint8_t> &side) {
  REQUIRE(side.size() == gptq_side_bytes(static_cast<size_t>(n), o.bits, o.sym));
  for (int64_t r = 0; r < n; ++r) {
    CAPTURE(r);
    const size_t off = static_cast<size_t>(r * m);
    const GptqExpected e = gptq_expected(o, fit.data() + off, x.data() + off, m);
    const auto ri = static_cast<size_t>(r);
    CHECK(static_cast<uint16_t>(side[2 * ri] | side[2 * ri + 1] << 8) == e.scale_bits);
    const uint32_t zero = o.sym ? (1u << (o.bits - 1))
                                : unpack_bits(side.data() + 2 * static_cast<size_t>(n), ri, o.bits);
    CHECK(zero == static_cast<uint32_t>(e.zero));
    for (int64_t c = 0; c < m; ++c) {
      CHECK(symbols[off + static_cast<size_t>(c)] == e.q[static_cast<size_t>(c)]);
      CHECK(std::memcmp(&dq[off + static_cast<size_t>(c)], &e.value[static_cast<size_t>(c)], 4) ==
            0);
    }
  }
}

} // namespace

TEST_CASE("uniform: gptq grid matches a transcription of GPTQ's quant.py bit for bit") {
  std::mt19937_64 rng(23);
  for (int64_t m : {1, 7, 32, 128}) {
    auto rows = test_chunks(rng, m);
    // Weight-like groups, and groups with every value of one sign (the range is widened to 0).
    std::normal_distribution<double> normal(0.0, 1.0);
    for (double s : {0.02, 0.1}) {
      std::vector<float> r(static_cast<size_t>(m)), p(r.size()), neg(r.size());
      for (size_t i = 0; i < r.size(); ++i) {
        r[i] = static_cast<float>(s * normal(rng));
        p[i] = std::fabs(r[i]) + 0.01f;
        neg[i] = -p[i];
      }
      rows.push_back(r);
      rows.push_back(p);
      rows.push_back(neg);
    }
    const auto x = flatten(rows);
    const auto n = static_cast<int64_t>(rows.size());
    for (int bits = 2; bits <= 8; ++bits)
      for (bool sym : {false, true})
        for (bool mse : {false, true}) {
          CAPTURE(m);
          CAPTURE(bits);
          CAPTURE(sym);
          CAPTURE(mse);
          Instance inst(kId, gptq_opts(bits, sym, mse));
          REQUIRE(inst.ok());
          const Quantized q = quantize(inst, x, n, m);
          REQUIRE(q.status == NWC_OK);
          GptqOracle o;
          o.bits = bits;
          o.sym = sym;
          o.mse = mse;
          check_against_oracle(o, x, x, n, m, q.symbols, q.dequantized, q.side);
          std::vector<float> back;
          REQUIRE(dequantize(inst, q.symbols, q.side, n, m, back) == NWC_OK);
          CHECK(same_bits(back, q.dequantized));
        }
  }
}

TEST_CASE("uniform: gptq clip search options follow quant.py's grid, maxshrink and norm") {
  std::mt19937_64 rng(29);
  const int64_t m = 64, n = 48;
  const auto x = heavy_tailed(rng, static_cast<size_t>(n * m));
  for (int grid : {10, 100, 37})
    for (double maxshrink : {0.8, 0.5, 1.0})
      for (double norm : {2.4, 2.0, 1.0}) {
        CAPTURE(grid);
        CAPTURE(maxshrink);
        CAPTURE(norm);
        auto opts = gptq_opts(3, false, true);
        opts.push_back(opt_int("clip_grid", grid));
        opts.push_back(opt_float("clip_maxshrink", maxshrink));
        opts.push_back(opt_float("clip_norm", norm));
        Instance inst(kId, opts);
        REQUIRE(inst.ok());
        const Quantized q = quantize(inst, x, n, m);
        REQUIRE(q.status == NWC_OK);
        GptqOracle o;
        o.bits = 3;
        o.mse = true;
        o.grid = grid;
        o.maxshrink = maxshrink;
        o.norm = norm;
        check_against_oracle(o, x, x, n, m, q.symbols, q.dequantized, q.side);
      }
  // The search pays on heavy tails: lower squared error in total than min/max.
  Instance plain(kId, gptq_opts(3, false, false)), mse(kId, gptq_opts(3, false, true));
  const Quantized a = quantize(plain, x, n, m), b = quantize(mse, x, n, m);
  double ea = 0, eb = 0;
  for (int64_t r = 0; r < n; ++r) {
    ea += chunk_error(x, a.dequantized, r, m);
    eb += chunk_error(x, b.dequantized, r, m);
  }
  CHECK(eb < 0.95 * ea);
}

TEST_CASE("uniform: gptq degenerate groups") {
  for (bool sym : {false, true})
    for (int bits : {2, 3, 4, 8}) {
      CAPTURE(sym);
      CAPTURE(bits);
      Instance inst(kId, gptq_opts(bits, sym, false));
      REQUIRE(inst.ok());
      GptqOracle o;
      o.bits = bits;
      o.sym = sym;
      const int64_t m = 8;
      // all zeros (xmin = -1, xmax = 1 as the reference), a positive and a negative constant, an
      // fp16-subnormal group whose scale rounds to fp16 zero, and float denormals
      std::vector<std::vector<float>> rows = {std::vector<float>(8, 0.0f),
                                              std::vector<float>(8, 0.75f),
                                              std::vector<float>(8, -3.0f),
                                              {1e-9f, -2e-9f, 3e-9f, 0, 0, 0, 0, 1e-9f},
                                              {1e-44f, 0, 0, 0, 0, 0, 0, 0}};
      const auto x = flatten(rows);
      const auto n = static_cast<int64_t>(rows.size());
      const Quantized q = quantize(inst, x, n, m);
      REQUIRE(q.status == NWC_OK);
      check_against_oracle(o, x, x, n, m, q.symbols, q.dequantized, q.side);
      for (int64_t c = 0; c < m; ++c) {
        CHECK(q.dequantized[static_cast<size_t>(c)] == 0.0f);         // zeros stay exactly zero
        CHECK(q.dequantized[static_cast<size_t>(3 * m + c)] == 0.0f); // scale below fp16: 0
        CHECK(q.dequantized[static_cast<size_t>(4 * m + c)] == 0.0f);
      }
      CHECK(q.side[6] == 0); // fp16 scale of the tiny group is 0
      CHECK(q.side[7] == 0);
      // asymmetric: a constant c > 0 has xmin = 0, xmax = c and reconstructs to within the fp16
      // rounding of its scale; symmetric GPTQ keeps xmin = 0 for a non-negative group (quant.py
      // only sets xmin = -xmax where xmin < 0), so its positive values clip at (2^(b-1) - 1) steps.
      const double s = half_value(static_cast<uint16_t>(q.side[2] | q.side[3] << 8));
      const double top = sym ? s * ((1 << (bits - 1)) - 1) : s * ((1 << bits) - 1);
      CHECK(q.dequantized[static_cast<size_t>(m)] == static_cast<float>(top));
      std::vector<float> back;
      REQUIRE(dequantize(inst, q.symbols, q.side, n, m, back) == NWC_OK);
      CHECK(same_bits(back, q.dequantized));
    }
}

TEST_CASE("uniform: gptq side info is 2 bytes of scale plus bits per zero point, packed") {
  std::mt19937_64 rng(31);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (int bits : {2, 3, 4, 5, 8})
    for (int64_t n : {1, 2, 3, 5, 8, 64, 173})
      for (bool sym : {false, true}) {
        CAPTURE(bits);
        CAPTURE(n);
        CAPTURE(sym);
        const int64_t m = 32;
        std::vector<float> x(static_cast<size_t>(n * m));
        for (auto &v : x) v = normal(rng);
        Instance inst(kId, gptq_opts(bits, sym, false));
        const Quantized q = quantize(inst, x, n, m);
        REQUIRE(q.status == NWC_OK);
        // 16 + bits bits per chunk, the zero points' bytes rounded up once per block
        CHECK(q.side.size() == static_cast<size_t>(2 * n + (sym ? 0 : (n * bits + 7) / 8)));
        std::vector<float> back;
        REQUIRE(dequantize(inst, q.symbols, q.side, n, m, back) == NWC_OK);
        CHECK(same_bits(back, q.dequantized));
      }
}

TEST_CASE("uniform: gptq corrupt side info and symbols are rejected") {
  std::mt19937_64 rng(37);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 5, m = 16;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  std::vector<float> out;
  for (bool sym : {false, true})
    for (int bits : {3, 4}) {
      CAPTURE(sym);
      CAPTURE(bits);
      Instance inst(kId, gptq_opts(bits, sym, false));
      const Quantized q = quantize(inst, x, n, m);
      REQUIRE(q.status == NWC_OK);
      for (size_t size : {size_t{0}, q.side.size() - 1, q.side.size() + 1, size_t{4 * n}}) {
        if (size == q.side.size()) continue;
        std::vector<uint8_t> side = q.side;
        side.resize(size);
        CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
      }
      for (uint16_t h : {uint16_t{0x7c00}, uint16_t{0xfc00}, uint16_t{0x7e00}, uint16_t{0xbc00},
                         uint16_t{0x8000}}) {
        std::vector<uint8_t> side = q.side;
        side[2] = static_cast<uint8_t>(h);
        side[3] = static_cast<uint8_t>(h >> 8);
        CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
      }
      if (!sym && (n * bits) % 8 != 0) { // the padding bits after the last zero point
        std::vector<uint8_t> side = q.side;
        side.back() = static_cast<uint8_t>(side.back() | 0x80);
        CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_E_CORRUPT_STREAM);
        CHECK(inst.last_error().find("padding") != std::string::npos);
      }
      for (int32_t bad : {-1, 1 << bits, INT32_MIN, INT32_MAX}) {
        std::vector<int32_t> s = q.symbols;
        s[21] = bad;
        CHECK(dequantize(inst, s, q.side, n, m, out) == NWC_E_CORRUPT_STREAM);
      }
      // Any zero point of `bits` bits and any finite non-negative scale decode.
      std::vector<uint8_t> side = q.side;
      for (size_t i = 2 * static_cast<size_t>(n); i < side.size(); ++i)
        side[i] = static_cast<uint8_t>(0x5a);
      if (!sym && (n * bits) % 8 != 0)
        side.back() = static_cast<uint8_t>(side.back() & ((1u << ((n * bits) % 8)) - 1));
      CHECK(dequantize(inst, q.symbols, side, n, m, out) == NWC_OK);
    }
}

TEST_CASE("uniform: gptq quantize_fitted fits the grid on the reference") {
  std::mt19937 rng(41);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t n = 6, m = 32;
  std::vector<float> ref(static_cast<size_t>(n * m)), x(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ref[i] = dist(rng);
    x[i] = ref[i] + 0.5f * dist(rng); // some fall outside the grid and clamp
  }
  for (bool sym : {false, true})
    for (bool mse : {false, true}) {
      CAPTURE(sym);
      CAPTURE(mse);
      Instance inst(kId, gptq_opts(4, sym, mse));
      const auto &qi = quantizer_interface(inst);
      std::vector<int32_t> sym_out(ref.size());
      std::vector<float> dq(ref.size());
      Block block("layers.0.q_proj", n, m, 0, m);
      View xv(x.data(), n, m), rv(ref.data(), n, m), sv(sym_out.data(), n, m), dv(dq.data(), n, m);
      VecSink side;
      REQUIRE(qi.quantize_fitted(inst.get(), block.get(), xv.get(), rv.get(), sv.get(), dv.get(),
                                 side.get()) == NWC_OK);
      GptqOracle o;
      o.sym = sym;
      o.mse = mse;
      check_against_oracle(o, ref, x, n, m, sym_out, dq, side.bytes);
      CHECK(side.bytes == quantize(inst, ref, n, m).side); // the grid of the reference alone
      std::vector<float> back;
      REQUIRE(dequantize(inst, sym_out, side.bytes, n, m, back) == NWC_OK);
      CHECK(same_bits(back, dq));
    }
}

TEST_CASE("uniform: gptq 4-bit g128 costs 4 + 20/128 bits per weight in side info and symbols") {
  // 64 rows x 128 columns in one block: 64 chunks of 128 values.
  const int64_t n = 64, m = 128;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(static_cast<double>(i * 7919 % 1000) / 1000.0 - 0.5);
  Instance inst(kId, gptq_opts(4, false, false));
  const Quantized q = quantize(inst, x, n, m);
  REQUIRE(q.status == NWC_OK);
  CHECK(static_cast<double>(q.side.size()) * 8 / static_cast<double>(n * m) == 20.0 / 128);
}

// The offset grid (both modes) writes exactly what nwc.quant.uniform 1.0.0 (stream_version 1)
// wrote: a hash of symbols and side info over fixed inputs, pinned with the 1.0.0 source. The
// inputs come from an explicit LCG so that they do not depend on the standard library's
// distributions.
TEST_CASE("uniform: the offset grid is unchanged from 1.0.0") {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&] { // uniform in [-1, 1)
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) / 4503599627370496.0 - 1.0;
  };
  const int64_t n = 40, m = 37;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (size_t i = 0; i < x.size(); ++i) {
    const double u = next();
    const double scale = std::pow(10.0, static_cast<double>(i / static_cast<size_t>(m) % 8) - 5);
    x[i] = static_cast<float>(u * u * u * scale + (i % 3 == 0 ? 0.0 : scale * 0.3));
  }
  uint64_t h = 1469598103934665603ull; // FNV-1a over every configuration's output
  auto mix = [&](const void *p, size_t len) {
    for (size_t i = 0; i < len; ++i) {
      h ^= static_cast<const uint8_t *>(p)[i];
      h *= 1099511628211ull;
    }
  };
  for (const char *mode : {"asymmetric", "symmetric"})
    for (int bits : {2, 3, 4, 8})
      for (bool clip : {false, true}) {
        Instance inst(
            kId, {opt_int("bits", bits), opt_enum("mode", mode), opt_bool("clip_search", clip)});
        REQUIRE(inst.ok());
        const Quantized q = quantize(inst, x, n, m);
        REQUIRE(q.status == NWC_OK);
        mix(q.symbols.data(), q.symbols.size() * 4);
        mix(q.side.data(), q.side.size());
        mix(q.dequantized.data(), q.dequantized.size() * 4);
      }
  CHECK(h == 10582042137062160233ull);
}

// GPTQ's own quant.py, run under torch (golden/gptq_reference.txt; see ../README.md): find_params
// with perchannel=True on fixed groups, for bits 2, 3, 4, 8, sym and mse on and off; the file
// holds its float32 scales, zero points, fp16 scales and the symbols
// clamp(round(W / scale_fp16) + zero, 0, maxq) computed by torch. Ours must match exactly, except
// the symbols of groups whose fp16 scale is 0, which torch turns into +-inf / NaN divisions and
// which the plugin codes as the zero point (both reconstruct to 0).
TEST_CASE("uniform: gptq grid matches GPTQ's quant.py run under torch") {
  const std::string path = std::string(NWC_TEST_SOURCE_DIR) +
                           "/plugins/quantizer/uniform/tests/golden/gptq_reference.txt";
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::string line;
  std::vector<float> w;
  int64_t g = 0, n = 0;
  int cases = 0;
  int bits = 0, sym = 0, mse = 0;
  std::vector<uint16_t> scale16;
  std::vector<int32_t> zero;
  auto hex = [](const std::string &t) { return static_cast<uint32_t>(std::stoul(t, nullptr, 16)); };
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string key, t;
    in >> key;
    if (key == "input") {
      in >> g >> n;
      w.clear();
      while (in >> t) {
        const uint32_t u = hex(t);
        float v;
        std::memcpy(&v, &u, 4);
        w.push_back(v);
      }
      REQUIRE(w.size() == static_cast<size_t>(g * n));
    } else if (key == "case") {
      int64_t gg = 0;
      in >> gg >> bits >> sym >> mse;
      REQUIRE(gg == g);
    } else if (key == "scale16") {
      scale16.clear();
      while (in >> t) scale16.push_back(static_cast<uint16_t>(hex(t)));
    } else if (key == "zero") {
      zero.clear();
      int v;
      while (in >> v) zero.push_back(v);
    } else if (key == "q") {
      std::vector<int32_t> ref;
      int v;
      while (in >> v) ref.push_back(v);
      CAPTURE(g);
      CAPTURE(bits);
      CAPTURE(sym);
      CAPTURE(mse);
      REQUIRE(ref.size() == w.size());
      Instance inst(kId, gptq_opts(bits, sym != 0, mse != 0));
      const Quantized q = quantize(inst, w, n, g);
      REQUIRE(q.status == NWC_OK);
      for (int64_t r = 0; r < n; ++r) {
        CAPTURE(r);
        const auto i = static_cast<size_t>(r);
        const auto ours = static_cast<uint16_t>(q.side[2 * i] | q.side[2 * i + 1] << 8);
        CHECK(ours == scale16[i]);
        const uint32_t z = sym ? (1u << (bits - 1)) : unpack_bits(q.side.data() + 2 * n, i, bits);
        CHECK(z == static_cast<uint32_t>(zero[i]));
        if (scale16[i] == 0) continue;
        for (int64_t c = 0; c < g; ++c) {
          const auto k = static_cast<size_t>(r * g + c);
          CHECK(q.symbols[k] == ref[k]);
        }
      }
      ++cases;
    }
  }
  CHECK(cases == 32);
}

TEST_CASE("uniform: passes the SDK's quantizer checks (nwc/testing) in every grid") {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(8 * 32);
  for (float &x : w) x = normal(rng);
  for (const char *grid : {"offset", "gptq"})
    for (int64_t bits : {2, 4, 8}) {
      INFO(grid << " " << bits);
      Instance inst(kId, {opt_int("bits", bits), opt_enum("grid", grid)});
      REQUIRE(inst.ok());
      CHECK(check_quantizer(inst, w, 8, 32) == "");
    }
}
