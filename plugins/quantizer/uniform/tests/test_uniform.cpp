// nwc.quant.uniform through its C ABI: the half-step error bound with the stored fp16 scale,
// bit-identical encoder/decoder reconstruction, symbol ranges, the clipping search, and rejection
// of bad inputs and corrupt side info.
#include "stage_harness.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.quant.uniform";

// Test oracle for an fp16 bit pattern (finite values only).
double half_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -mag : mag;
}

struct Quantized {
  nwc_status status = NWC_E_INTERNAL;
  std::vector<int32_t> symbols;
  std::vector<float> dequantized;
  std::vector<uint8_t> side;
  double scale(size_t chunk) const {
    return half_value(static_cast<uint16_t>(side[4 * chunk] | side[4 * chunk + 1] << 8));
  }
  double offset(size_t chunk) const {
    return half_value(static_cast<uint16_t>(side[4 * chunk + 2] | side[4 * chunk + 3] << 8));
  }
};

const nwc_quantizer_interface &quantizer(Instance &inst) {
  const auto *q = inst.iface<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  REQUIRE(q != nullptr);
  return *q;
}

Quantized quantize(Instance &inst, const std::vector<float> &x, int64_t n, int64_t m,
                   const char *tensor = "layers.0.q_proj") {
  Quantized out;
  out.symbols.assign(static_cast<size_t>(n * m), INT32_MIN);
  out.dequantized.assign(static_cast<size_t>(n * m), NAN);
  Block block(tensor, n, m, 0, m);
  View in(x.data(), n, m), sym(out.symbols.data(), n, m), dq(out.dequantized.data(), n, m);
  VecSink side;
  out.status =
      quantizer(inst).quantize(inst.get(), block.get(), in.get(), sym.get(), dq.get(), side.get());
  out.side = side.bytes;
  return out;
}

nwc_status dequantize(Instance &inst, const std::vector<int32_t> &symbols,
                      const std::vector<uint8_t> &side, int64_t n, int64_t m,
                      std::vector<float> &out) {
  out.assign(static_cast<size_t>(n * m), NAN);
  Block block("layers.0.q_proj", n, m, 0, m);
  View sym(symbols.data(), n, m), lat(out.data(), n, m);
  return quantizer(inst).dequantize(inst.get(), block.get(), sym.get(),
                                    nwc_bytes{side.data(), side.size()}, lat.get());
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
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
  REQUIRE(d.option_count == 5);
  for (uint32_t i = 0; i < d.option_count; ++i) {
    const std::string key = d.options[i].key;
    CAPTURE(key);
    CHECK(d.options[i].doc != nullptr);
    const bool affects = (d.options[i].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0;
    CHECK(affects == (key == "bits" || key == "mode"));
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
  const auto &q = quantizer(inst);
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
