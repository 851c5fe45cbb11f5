// nwc.quant.uniform — per-chunk affine (min/max or absmax) quantization with an fp16 scale and
// offset per chunk, optionally with an MSE-optimal clipping search.
//
// Reconstruction is value = offset + q * scale, evaluated as (float)((double)offset + q * scale):
// offset and scale are fp16 and |q| < 2^8, so the double sum is exact and the single rounding to
// float gives the same bits on every machine and compiler (no FMA-contraction differences).
// Encoder and decoder both read scale and offset back from the fp16 bits that go to the side
// stream, so their reconstructions are bit-identical.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

// ---- fp16 (IEEE binary16) helpers
// ----------------------------------------------------------------

constexpr double kHalfMax = 65504.0;
enum class Round { nearest_even, up, down }; // up/down: toward +inf / -inf

double half_to_double(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  double mag;
  if (exp == 0)
    mag = std::ldexp(static_cast<double>(man), -24);
  else if (exp == 31)
    mag = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    mag = std::ldexp(static_cast<double>(man + 1024), exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

// x must be finite. Returns the bits of the fp16 value x rounds to (0x7c00 | sign = overflow).
uint16_t double_to_half(double x, Round mode) {
  const bool neg = std::signbit(x);
  const double a = std::fabs(x);
  // The quantum (ulp) of a in fp16: 2^-24 for subnormals, else 2^(e - 10) for a in [2^e, 2^(e+1)).
  int e = -15;
  if (a >= std::ldexp(1.0, -14)) {
    std::frexp(a, &e); // a = f * 2^e, f in [0.5, 1)
    e -= 1;
  }
  const int qexp = e < -14 ? -24 : e - 10;
  const double n = std::ldexp(a, -qexp); // exact: scaling by a power of two
  double m;
  const bool toward_larger_mag = (mode == Round::up && !neg) || (mode == Round::down && neg);
  if (mode == Round::nearest_even) {
    m = std::floor(n);
    const double frac = n - m;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(m, 2.0) != 0.0)) m += 1.0;
  } else {
    m = toward_larger_mag ? std::ceil(n) : std::floor(n);
  }
  uint32_t bits;
  if (qexp == -24) {
    bits = static_cast<uint32_t>(m); // m == 1024 is the smallest normal, encoded the same way
  } else {
    // m in [1024, 2048]; 2048 carries into the exponent through the addition.
    const double mm = std::min(m, 2048.0);
    bits = (static_cast<uint32_t>(e + 15) << 10) + (static_cast<uint32_t>(mm) - 1024u);
    if (e + 15 >= 31) bits = 0x7c00u;
  }
  if (bits > 0x7c00u) bits = 0x7c00u;
  return static_cast<uint16_t>(bits | (neg ? 0x8000u : 0u));
}

// The fp16 value just above a finite, non-negative one.
uint16_t next_half_up(uint16_t h) {
  return (h & 0x8000) ? (h == 0x8000 ? 1 : h - 1) : h + 1;
}

// ---- quantizer ----------------------------------------------------------------------------------

const char *const kModeChoices[] = {"asymmetric", "symmetric"};

// Parameters of one chunk: fp16 bits as stored, and their exact values.
struct Params {
  uint16_t scale_bits = 0, offset_bits = 0;
  double scale = 0.0, offset = 0.0;
};

inline float reconstruct(const Params &p, int32_t q) {
  return static_cast<float>(p.offset + static_cast<double>(q) * p.scale);
}

class UniformQuantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.uniform";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "uniform";
  static constexpr const char *description =
      "Uniform affine quantization of each chunk (one chunk = one group of the chunker) to `bits` "
      "bits. Asymmetric mode maps [min, max] onto symbols 0..2^bits-1 (value = offset + q * "
      "scale); symmetric mode maps [-absmax, absmax] onto -(2^(bits-1)-1)..2^(bits-1)-1 (value = "
      "q * scale). Scale and offset are stored as fp16, 4 bytes of side info per chunk; the scale "
      "is rounded up so that every value stays within half a step. Optionally searches a "
      "clipping ratio that minimizes the squared error (as in GPTQ/HQQ).";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static constexpr bool supports_fitted = true;
  NWC_OPTIONS(
      nwc::int_option("bits", 4, 2, 8, "Bits per symbol: 2^bits levels per chunk.",
                      NWC_OPTF_AFFECTS_BITSTREAM, "bits"),
      nwc::enum_option("mode", "asymmetric", kModeChoices, 2,
                       "\"asymmetric\": min/max range with an fp16 offset; \"symmetric\": "
                       "range [-absmax, absmax] around zero, offset fixed at 0 and one level "
                       "fewer.",
                       NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::bool_option("clip_search", false,
                       "Search a shrunk range that minimizes each chunk's squared error; values "
                       "outside it are clipped. Encoder-only: decoding does not need it."),
      nwc::float_option("clip_min_ratio", 0.5, 0.01, 1.0,
                        "Smallest fraction of the full range the clipping search tries."),
      nwc::int_option("clip_steps", 50, 1, 1000,
                      "Number of equal steps from ratio 1.0 down to clip_min_ratio (1.0, 0.99, "
                      "..., 0.5 by default)."));

  explicit UniformQuantizer(const nwc::Options &opts)
      : bits_(static_cast<int>(opts.get_int("bits"))),
        symmetric_(opts.get_string("mode") == "symmetric"), clip_(opts.get_bool("clip_search")),
        clip_min_(opts.get_float("clip_min_ratio")),
        clip_steps_(static_cast<int>(opts.get_int("clip_steps"))) {
    qmin_ = symmetric_ ? -((1 << (bits_ - 1)) - 1) : 0;
    qmax_ = symmetric_ ? (1 << (bits_ - 1)) - 1 : (1 << bits_) - 1;
  }

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                nwc::Tensor<int32_t> symbols, nwc::Tensor<float> dequantized,
                nwc::Sink &side) override {
    quantize_on(b, latents, latents, symbols, dequantized, side);
  }

  // The grid of each chunk is fitted on the reference chunk; values outside it are clamped.
  void quantize_fitted(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                       nwc::ConstTensor<float> reference, nwc::Tensor<int32_t> symbols,
                       nwc::Tensor<float> dequantized, nwc::Sink &side) override {
    check_shape(b, "reference", latents, reference.rows, reference.cols);
    quantize_on(b, latents, reference, symbols, dequantized, side);
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> latents) override {
    if (latents.rows != symbols.rows || latents.cols != symbols.cols)
      nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': latents are [" +
                                       std::to_string(latents.rows) + ", " +
                                       std::to_string(latents.cols) + "], symbols are [" +
                                       std::to_string(symbols.rows) + ", " +
                                       std::to_string(symbols.cols) + "]");
    const uint64_t need = static_cast<uint64_t>(symbols.rows) * 4u;
    if (side.size != need)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                          "': side info has " + std::to_string(side.size) +
                                          " bytes, expected " + std::to_string(need) +
                                          " (4 per chunk)");
    const int64_t m = symbols.cols;
    const auto qmin = static_cast<uint32_t>(qmin_), span = static_cast<uint32_t>(qmax_ - qmin_);
    // With at least as many values in a chunk as levels, the chunk's levels are reconstructed once
    // into a table and looked up; otherwise each value is computed. Same expression either way.
    const bool table = static_cast<int64_t>(span) < m;
    std::vector<float> lut(table ? span + 1 : 0);
    for (int64_t r = 0; r < symbols.rows; ++r) {
      const uint8_t *s = side.data + r * 4;
      Params p;
      p.scale_bits = static_cast<uint16_t>(s[0] | (s[1] << 8));
      p.offset_bits = static_cast<uint16_t>(s[2] | (s[3] << 8));
      p.scale = half_to_double(p.scale_bits);
      p.offset = half_to_double(p.offset_bits);
      if (!std::isfinite(p.scale) || p.scale < 0.0 || !std::isfinite(p.offset) ||
          (symmetric_ && p.offset != 0.0))
        nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) + "': chunk " +
                                            std::to_string(r) +
                                            " has an invalid scale/offset in its side info");
      const int32_t *__restrict q = symbols.row(r);
      float *__restrict out = latents.row(r);
      // Symbols are checked first, without a branch per value: q - qmin in [0, span], unsigned.
      uint32_t bad = 0;
      for (int64_t c = 0; c < m; ++c) bad |= static_cast<uint32_t>(q[c]) - qmin > span;
      if (bad)
        for (int64_t c = 0; c < m; ++c)
          if (q[c] < qmin_ || q[c] > qmax_)
            nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) + "': symbol " +
                                                std::to_string(q[c]) + " at chunk " +
                                                std::to_string(r) + " is outside [" +
                                                std::to_string(qmin_) + ", " +
                                                std::to_string(qmax_) + "]");
      if (table) {
        for (uint32_t k = 0; k <= span; ++k)
          lut[k] = reconstruct(p, static_cast<int32_t>(k) + qmin_);
        const float *l = lut.data();
        for (int64_t c = 0; c < m; ++c) out[c] = l[static_cast<uint32_t>(q[c]) - qmin];
      } else {
        const double offset = p.offset, scale = p.scale;
        for (int64_t c = 0; c < m; ++c)
          out[c] = static_cast<float>(offset + static_cast<double>(q[c]) * scale);
      }
    }
  }

private:
  // Symbols of latents on grids fitted on fit (the same array for plain quantize).
  void quantize_on(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                   nwc::ConstTensor<float> fit, nwc::Tensor<int32_t> symbols,
                   nwc::Tensor<float> dequantized, nwc::Sink &side) const {
    check_shape(b, "symbols", latents, symbols.rows, symbols.cols);
    check_shape(b, "dequantized", latents, dequantized.rows, dequantized.cols);
    const int64_t m = latents.cols;
    for (const nwc::ConstTensor<float> *t : {&latents, &fit})
      for (int64_t r = 0; r < t->rows; ++r)
        for (int64_t c = 0; c < m; ++c) {
          const float x = (*t)(r, c);
          if (!std::isfinite(x))
            nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                             "': non-finite value at chunk " + std::to_string(r) +
                                             ", element " + std::to_string(c));
          if (std::fabs(static_cast<double>(x)) > kHalfMax)
            nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': value " +
                                             std::to_string(x) + " at chunk " + std::to_string(r) +
                                             ", element " + std::to_string(c) +
                                             " is outside the fp16 range +-65504 that the "
                                             "uniform quantizer's fp16 scales can address");
        }

    std::vector<uint8_t> out;
    out.reserve(static_cast<size_t>(latents.rows) * 4);
    for (int64_t r = 0; r < latents.rows; ++r) {
      const float *x = latents.row(r), *f = fit.row(r);
      double lo = 0.0, hi = 0.0;
      for (int64_t c = 0; c < m; ++c) {
        const double v = f[c];
        lo = c == 0 ? v : std::min(lo, v);
        hi = c == 0 ? v : std::max(hi, v);
      }
      Params best = params_for(lo, hi, 1.0);
      if (clip_ && m > 0) {
        // Ratio 1.0 comes first and only a strictly lower error replaces it, so clipping never
        // does worse than no clipping.
        double best_err = squared_error(best, f, m);
        for (int k = 1; k <= clip_steps_; ++k) {
          const double ratio = 1.0 - (1.0 - clip_min_) * k / clip_steps_;
          const Params p = params_for(lo, hi, ratio);
          const double err = squared_error(p, f, m);
          if (err < best_err) {
            best_err = err;
            best = p;
          }
        }
      }
      int32_t *q = symbols.row(r);
      float *dq = dequantized.row(r);
      for (int64_t c = 0; c < m; ++c) {
        q[c] = symbol(best, x[c]);
        dq[c] = reconstruct(best, q[c]);
      }
      for (uint16_t h : {best.scale_bits, best.offset_bits}) {
        out.push_back(static_cast<uint8_t>(h));
        out.push_back(static_cast<uint8_t>(h >> 8));
      }
    }
    side.write(out.data(), out.size());
  }

  static void check_shape(const nwc::BlockInfo &b, const char *what,
                          const nwc::ConstTensor<float> &latents, int64_t rows, int64_t cols) {
    if (rows != latents.rows || cols != latents.cols)
      nwc::fail(NWC_E_INVALID_ARG,
                "tensor '" + std::string(b.tensor_name) + "': " + what + " are [" +
                    std::to_string(rows) + ", " + std::to_string(cols) + "], latents are [" +
                    std::to_string(latents.rows) + ", " + std::to_string(latents.cols) + "]");
  }

  // Scale and offset for the range [lo, hi] shrunk by ratio. The fp16 values are chosen so that
  // every x in the shrunk range is within scale / 2 of a grid point offset + q * scale, q in
  // [qmin, qmax]:  offset - scale/2 <= lo'  and  offset + (qmax + 1/2) * scale >= hi'.
  Params params_for(double lo, double hi, double ratio) const {
    Params p;
    if (symmetric_) {
      const double amax = std::max(std::fabs(lo), std::fabs(hi)) * ratio;
      // A constant chunk uses symbols +-1 with scale |v|: exact whenever v is an fp16 value.
      const double levels = lo == hi ? 1.0 : qmax_;
      p.scale_bits = double_to_half(amax / levels, Round::up);
      p.scale = half_to_double(p.scale_bits);
      return p; // offset +0
    }
    // Shrink toward the point of the range closest to zero (0 when it straddles zero, as GPTQ).
    const double anchor = std::min(std::max(0.0, lo), hi);
    lo = anchor + (lo - anchor) * ratio;
    hi = anchor + (hi - anchor) * ratio;
    // Two offset candidates, the fp16 values just below and just above lo; keep the finer grid.
    bool have = false;
    for (Round mode : {Round::down, Round::up}) {
      Params c;
      c.offset_bits = double_to_half(lo, mode);
      c.offset = half_to_double(c.offset_bits);
      // All these quotients of doubles are only approximate; the exact check below fixes that.
      const double need = std::max(
          {(hi - lo) / qmax_, (hi - c.offset) / (qmax_ + 0.5), 2.0 * (c.offset - lo), 0.0});
      c.scale_bits = double_to_half(need, Round::up);
      c.scale = half_to_double(c.scale_bits);
      // Exact in double: fp16 values times small integers, summed within 50 significant bits.
      while (c.offset - c.scale / 2 > lo || c.offset + (qmax_ + 0.5) * c.scale < hi) {
        c.scale_bits = next_half_up(c.scale_bits);
        c.scale = half_to_double(c.scale_bits);
      }
      if (!have || c.scale < p.scale) p = c;
      have = true;
    }
    return p;
  }

  int32_t symbol(const Params &p, float x) const {
    if (p.scale == 0.0) return 0; // zero range: every value equals the offset
    double t = std::floor((static_cast<double>(x) - p.offset) / p.scale + 0.5);
    t = std::min(std::max(t, static_cast<double>(qmin_)), static_cast<double>(qmax_));
    return static_cast<int32_t>(t);
  }

  double squared_error(const Params &p, const float *x, int64_t m) const {
    double e = 0.0;
    for (int64_t c = 0; c < m; ++c) {
      const double d = static_cast<double>(x[c]) - reconstruct(p, symbol(p, x[c]));
      e += d * d;
    }
    return e;
  }

  int bits_;
  bool symmetric_;
  bool clip_;
  double clip_min_;
  int clip_steps_;
  int32_t qmin_ = 0, qmax_ = 0;
};

} // namespace

NWC_MODULE(UniformQuantizer)
