// nwc.quant.uniform — per-chunk affine (min/max or absmax) quantization with an fp16 scale and
// offset per chunk, optionally with an MSE-optimal clipping search; and GPTQ's grid (grid = "gptq":
// an fp16 scale and an integer zero point, as GPTQ's quant.py computes them and AutoGPTQ/GPTQModel
// checkpoints store them), asymmetric or symmetric.
//
// grid = "offset" (mode "asymmetric" or "symmetric"):
// Reconstruction is value = offset + q * scale, evaluated as (float)((double)offset + q * scale):
// offset and scale are fp16 and |q| < 2^8, so the double sum is exact and the single rounding to
// float gives the same bits on every machine and compiler (no FMA-contraction differences).
// Encoder and decoder both read scale and offset back from the fp16 bits that go to the side
// stream, so their reconstructions are bit-identical.
//
// grid = "gptq": the parameters are computed in float32 exactly as quant.py does
// (Quantizer.find_params and its mse grid search), the scale is rounded to fp16 (nearest-even, as
// torch's .half()), the symbols are q = clamp(round(x / scale16) + zero, 0, 2^bits - 1) and the
// value is scale16 * (q - zero), exact in float (11 significant bits times at most 9).
#include "nwc/cpp/half.hpp"
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

// ---- fp16 (IEEE binary16) helpers: nwc/cpp/half.hpp, plus -------------------------------------

using nwc::double_to_half;
using nwc::half_to_double;
using nwc::kHalfMax;
using Round = nwc::HalfRound;

// The fp16 value just above a finite, non-negative one.
uint16_t next_half_up(uint16_t h) {
  return (h & 0x8000) ? (h == 0x8000 ? 1 : h - 1) : h + 1;
}

// ---- quantizer ----------------------------------------------------------------------------------

const char *const kModeChoices[] = {"asymmetric", "symmetric"};
const char *const kGridChoices[] = {"offset", "gptq"};
// The four grids: mode x grid.
enum class Mode { asymmetric, symmetric, gptq, gptq_sym };

Mode parse_mode(const std::string &mode, const std::string &grid) {
  const bool sym = mode == "symmetric";
  if (grid == "gptq") return sym ? Mode::gptq_sym : Mode::gptq;
  return sym ? Mode::symmetric : Mode::asymmetric;
}

// fp16 bits of a finite float, rounded to nearest-even (torch's float -> half conversion).
uint16_t float_to_half_rne(float x) {
  return double_to_half(static_cast<double>(x), Round::nearest_even);
}

// Parameters of one chunk: fp16 bits as stored, and their exact values.
struct Params {
  uint16_t scale_bits = 0, offset_bits = 0;
  double scale = 0.0, offset = 0.0;
};

inline float reconstruct(const Params &p, int32_t q) {
  return static_cast<float>(p.offset + static_cast<double>(q) * p.scale);
}

// GPTQ-grid parameters of one chunk: the fp16 scale as stored (bits and value) and the integer
// zero point. value(q) = scale * (q - zero).
struct GptqParams {
  uint16_t scale_bits = 0;
  float scale = 0.0f;
  int32_t zero = 0;
};

inline float gptq_value(const GptqParams &p, int32_t q) {
  return p.scale * static_cast<float>(q - p.zero); // exact: <= 11 x 9 significant bits
}

class UniformQuantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.uniform";
  static constexpr const char *version = "1.1.0";
  // 1: grid "offset" (4 bytes per chunk). 2: adds grid "gptq", whose side layout is new; the
  // layout of grid "offset" is unchanged, so version-1 streams decode as before.
  static constexpr uint32_t stream_version = 2;
  static constexpr const char *name = "uniform";
  static constexpr const char *description =
      "Uniform affine quantization of each chunk (one chunk = one group of the chunker) to `bits` "
      "bits. Asymmetric mode maps [min, max] onto symbols 0..2^bits-1 (value = offset + q * "
      "scale); symmetric mode maps [-absmax, absmax] onto -(2^(bits-1)-1)..2^(bits-1)-1 (value = "
      "q * scale). Scale and offset are stored as fp16, 4 bytes of side info per chunk; the scale "
      "is rounded up so that every value stays within half a step. With grid = \"gptq\" the grid "
      "is GPTQ's, as its reference code and AutoGPTQ/GPTQModel checkpoints have it: a range that "
      "contains 0, an fp16 scale and an integer zero point stored in `bits` bits (value = scale * "
      "(q - zero); symmetric: zero fixed at 2^(bits-1)). Optionally searches a clipping ratio "
      "(min squared error for the offset grid, GPTQ's mse grid search for GPTQ's).";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static constexpr bool supports_fitted = true;
  NWC_OPTIONS(
      nwc::int_option("bits", 4, 2, 8, "Bits per symbol: 2^bits levels per chunk.",
                      NWC_OPTF_AFFECTS_BITSTREAM, "bits"),
      nwc::enum_option("mode", "asymmetric", kModeChoices, 2,
                       "\"asymmetric\": min/max range with an fp16 offset; \"symmetric\": "
                       "range [-absmax, absmax] around zero, offset fixed at 0 and one level "
                       "fewer. With grid = \"gptq\": GPTQ's sym=False / sym=True.",
                       NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::enum_option("grid", "offset", kGridChoices, 2,
                       "\"offset\": nwc's grid above (fp16 scale rounded up, fp16 offset); "
                       "\"gptq\": GPTQ's grid (range widened to contain 0, fp16 scale, integer "
                       "zero point stored in `bits` bits; symmetric: zero fixed at 2^(bits-1), "
                       "not stored).",
                       NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::bool_option("clip_search", false,
                       "Search a shrunk range per chunk; values outside it are clipped. "
                       "Offset grid: minimal squared error over clip_min_ratio/clip_steps; GPTQ "
                       "grid: GPTQ's mse=True grid search (clip_grid, clip_maxshrink, "
                       "clip_norm). Encoder-only: decoding does not need it."),
      nwc::float_option("clip_min_ratio", 0.5, 0.01, 1.0,
                        "Offset grid: smallest fraction of the full range the clipping "
                        "search tries."),
      nwc::int_option("clip_steps", 50, 1, 1000,
                      "Offset grid: number of equal steps from ratio 1.0 down to "
                      "clip_min_ratio (1.0, 0.99, ..., 0.5 by default)."),
      nwc::int_option("clip_grid", 100, 1, 10000,
                      "GPTQ grid: ratios p = 1 - i / clip_grid (GPTQ's `grid`)."),
      nwc::float_option("clip_maxshrink", 0.8, 0.0, 1.0,
                        "GPTQ grid: i runs over 0 .. int(clip_maxshrink * clip_grid) - 1 "
                        "(GPTQ's `maxshrink`)."),
      nwc::float_option("clip_norm", 2.4, 0.1, 16.0,
                        "GPTQ grid: exponent of the error sum |q(x) - x|^clip_norm that the "
                        "search minimizes (GPTQ's `norm`)."));

  explicit UniformQuantizer(const nwc::Options &opts)
      : bits_(static_cast<int>(opts.get_int("bits"))),
        mode_(parse_mode(opts.get_string("mode"), opts.get_string("grid"))),
        symmetric_(mode_ == Mode::symmetric), gptq_(mode_ == Mode::gptq || mode_ == Mode::gptq_sym),
        clip_(opts.get_bool("clip_search")), clip_min_(opts.get_float("clip_min_ratio")),
        clip_steps_(static_cast<int>(opts.get_int("clip_steps"))),
        clip_grid_(static_cast<int>(opts.get_int("clip_grid"))),
        clip_maxshrink_(opts.get_float("clip_maxshrink")), clip_norm_(opts.get_float("clip_norm")) {
    if (gptq_) {
      qmin_ = 0;
      qmax_ = (1 << bits_) - 1;
    } else {
      qmin_ = symmetric_ ? -((1 << (bits_ - 1)) - 1) : 0;
      qmax_ = symmetric_ ? (1 << (bits_ - 1)) - 1 : (1 << bits_) - 1;
    }
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
    nwc::require_shape(b, "latents", latents.rows, latents.cols, symbols.rows, symbols.cols,
                       "symbols");
    if (gptq_) {
      dequantize_gptq(b, symbols, side, latents);
      return;
    }
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
      check_symbols(b, q, m, r);
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
  // Symbols are checked first, without a branch per value: q - qmin in [0, span], unsigned.
  void check_symbols(const nwc::BlockInfo &b, const int32_t *q, int64_t m, int64_t r) const {
    const auto qmin = static_cast<uint32_t>(qmin_), span = static_cast<uint32_t>(qmax_ - qmin_);
    uint32_t bad = 0;
    for (int64_t c = 0; c < m; ++c) bad |= static_cast<uint32_t>(q[c]) - qmin > span;
    if (bad)
      for (int64_t c = 0; c < m; ++c)
        if (q[c] < qmin_ || q[c] > qmax_)
          nwc::fail(NWC_E_CORRUPT_STREAM,
                    "tensor '" + std::string(b.tensor_name) + "': symbol " + std::to_string(q[c]) +
                        " at chunk " + std::to_string(r) + " is outside [" + std::to_string(qmin_) +
                        ", " + std::to_string(qmax_) + "]");
  }

  // Bytes of the GPTQ side info for n chunks: n fp16 scales, then (gptq only) the n zero points
  // bit-packed, `bits` bits each, LSB first.
  uint64_t gptq_side_size(int64_t n) const {
    const auto un = static_cast<uint64_t>(n);
    return 2 * un + (mode_ == Mode::gptq ? (un * static_cast<uint64_t>(bits_) + 7) / 8 : 0);
  }

  void dequantize_gptq(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                       nwc::Tensor<float> latents) const {
    const int64_t n = symbols.rows, m = symbols.cols;
    const uint64_t need = gptq_side_size(n);
    if (side.size != need)
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "tensor '" + std::string(b.tensor_name) + "': side info has " +
                    std::to_string(side.size) + " bytes, expected " + std::to_string(need) +
                    (mode_ == Mode::gptq ? " (2 per chunk + " + std::to_string(bits_) +
                                               " bits per chunk, rounded up to bytes)"
                                         : " (2 per chunk)"));
    const uint8_t *zbits = side.data + 2 * n;
    if (mode_ == Mode::gptq && (static_cast<uint64_t>(n) * static_cast<uint64_t>(bits_)) % 8 != 0) {
      const unsigned used = static_cast<unsigned>(static_cast<uint64_t>(n) * bits_ % 8);
      if (side.data[side.size - 1] >> used)
        nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                            "': nonzero padding bits after the zero points");
    }
    const auto span = static_cast<uint32_t>(qmax_);
    const bool table = static_cast<int64_t>(span) < m;
    std::vector<float> lut(table ? span + 1 : 0);
    for (int64_t r = 0; r < n; ++r) {
      GptqParams p;
      p.scale_bits = static_cast<uint16_t>(side.data[2 * r] | (side.data[2 * r + 1] << 8));
      const double s = half_to_double(p.scale_bits);
      if (!std::isfinite(s) || (p.scale_bits & 0x8000u))
        nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) + "': chunk " +
                                            std::to_string(r) +
                                            " has an invalid (negative or non-finite) scale");
      p.scale = static_cast<float>(s);
      p.zero = mode_ == Mode::gptq ? read_bits(zbits, r) : 1 << (bits_ - 1);
      const int32_t *__restrict q = symbols.row(r);
      float *__restrict out = latents.row(r);
      check_symbols(b, q, m, r);
      if (table) {
        for (uint32_t k = 0; k <= span; ++k) lut[k] = gptq_value(p, static_cast<int32_t>(k));
        const float *l = lut.data();
        for (int64_t c = 0; c < m; ++c) out[c] = l[static_cast<uint32_t>(q[c])];
      } else {
        for (int64_t c = 0; c < m; ++c) out[c] = gptq_value(p, q[c]);
      }
    }
  }

  int32_t read_bits(const uint8_t *data, int64_t index) const {
    uint32_t v = 0;
    const uint64_t bit0 = static_cast<uint64_t>(index) * static_cast<uint64_t>(bits_);
    for (int k = 0; k < bits_; ++k) {
      const uint64_t bit = bit0 + static_cast<uint64_t>(k);
      v |= static_cast<uint32_t>((data[bit / 8] >> (bit % 8)) & 1u) << k;
    }
    return static_cast<int32_t>(v);
  }

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
    if (gptq_) {
      quantize_gptq(latents, fit, symbols, dequantized, side);
      return;
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

  // ---- GPTQ grid ----------------------------------------------------------------------------
  // Every step below is one float32 operation, in the order of GPTQ's quant.py (find_params and
  // quantize); torch.round is round-half-to-even, as std::nearbyint in the default rounding mode.

  // The reference's quantize(x, scale, zero, maxq) in float32: its reconstruction of x.
  float gptq_fake_quant(float x, float scale, float zero) const {
    float q = std::nearbyint(x / scale) + zero;
    q = std::min(std::max(q, 0.0f), static_cast<float>(qmax_));
    return scale * (q - zero);
  }

  // Scale (float32) and zero (float32, an integer) of quant.py's find_params for one chunk.
  void gptq_find_params(const float *f, int64_t m, float &scale, float &zero) const {
    const bool sym = mode_ == Mode::gptq_sym;
    const auto maxq = static_cast<float>(qmax_);
    float xmin = 0.0f, xmax = 0.0f; // min(0, min x), max(0, max x)
    for (int64_t c = 0; c < m; ++c) {
      xmin = std::min(xmin, f[c]);
      xmax = std::max(xmax, f[c]);
    }
    if (sym) {
      xmax = std::max(std::fabs(xmin), xmax);
      if (xmin < 0.0f) xmin = -xmax; // as quant.py: only where xmin < 0
    }
    if (xmin == 0.0f && xmax == 0.0f) {
      xmin = -1.0f;
      xmax = 1.0f;
    }
    const float sym_zero = (maxq + 1.0f) / 2.0f;
    auto zero_for = [&](float lo, float s) { return sym ? sym_zero : std::nearbyint(-lo / s); };
    scale = (xmax - xmin) / maxq;
    zero = zero_for(xmin, scale);
    if (!clip_) return;
    // quant.py, mse=True: p = 1 - i / grid for i in range(int(maxshrink * grid)); a candidate
    // replaces the best only with a strictly lower error sum(|q(x) - x|^norm). p is a Python float
    // (double) that torch rounds to float32 before multiplying the float32 tensor.
    double best = std::numeric_limits<double>::infinity();
    const int count = static_cast<int>(clip_maxshrink_ * clip_grid_);
    for (int i = 0; i < count; ++i) {
      const auto p = static_cast<float>(1.0 - static_cast<double>(i) / clip_grid_);
      const float xmin1 = p * xmin, xmax1 = p * xmax;
      const float scale1 = (xmax1 - xmin1) / maxq;
      if (!(scale1 > 0.0f)) continue; // the reference's error would be NaN: never chosen
      const float zero1 = zero_for(xmin1, scale1);
      double err = 0.0;
      for (int64_t c = 0; c < m; ++c) {
        const float d = std::fabs(gptq_fake_quant(f[c], scale1, zero1) - f[c]);
        err += std::pow(static_cast<double>(d), clip_norm_);
      }
      if (err < best) {
        best = err;
        scale = scale1;
        zero = zero1;
      }
    }
  }

  GptqParams gptq_params(const float *f, int64_t m) const {
    float scale = 0.0f, zero = 0.0f;
    gptq_find_params(f, m, scale, zero);
    GptqParams p;
    if (mode_ == Mode::gptq_sym) {
      p.zero = 1 << (bits_ - 1);
    } else if (scale > 0.0f && zero >= 0.0f) {
      // In [0, 2^bits - 1] whenever scale > 0 (-xmin <= xmax - xmin); clamped for safety.
      p.zero = static_cast<int32_t>(std::min(zero, static_cast<float>(qmax_)));
    } else {
      p.zero = 0; // scale underflowed to 0 (denormal input): every value reconstructs to 0
    }
    p.scale_bits = scale > 0.0f ? float_to_half_rne(scale) : 0;
    p.scale = static_cast<float>(half_to_double(p.scale_bits));
    return p;
  }

  // Symbol of x on the stored grid: clamp(round(x / scale16) + zero, 0, 2^bits - 1), in float32
  // as the checkpoint packers compute it with the fp16 scale. A zero scale (a chunk whose scale
  // is below fp16's smallest subnormal) codes every value as the zero point, i.e. 0.
  int32_t gptq_symbol(const GptqParams &p, float x) const {
    if (p.scale == 0.0f) return p.zero;
    float q = std::nearbyint(x / p.scale) + static_cast<float>(p.zero);
    q = std::min(std::max(q, 0.0f), static_cast<float>(qmax_));
    return static_cast<int32_t>(q);
  }

  void quantize_gptq(nwc::ConstTensor<float> latents, nwc::ConstTensor<float> fit,
                     nwc::Tensor<int32_t> symbols, nwc::Tensor<float> dequantized,
                     nwc::Sink &side) const {
    const int64_t n = latents.rows, m = latents.cols;
    std::vector<uint8_t> out(static_cast<size_t>(gptq_side_size(n)), 0);
    uint8_t *zbits = out.data() + 2 * n;
    for (int64_t r = 0; r < n; ++r) {
      const GptqParams p = gptq_params(fit.row(r), m);
      const float *x = latents.row(r);
      int32_t *q = symbols.row(r);
      float *dq = dequantized.row(r);
      for (int64_t c = 0; c < m; ++c) {
        q[c] = gptq_symbol(p, x[c]);
        dq[c] = gptq_value(p, q[c]);
      }
      out[static_cast<size_t>(2 * r)] = static_cast<uint8_t>(p.scale_bits);
      out[static_cast<size_t>(2 * r + 1)] = static_cast<uint8_t>(p.scale_bits >> 8);
      if (mode_ == Mode::gptq) {
        const uint64_t bit0 = static_cast<uint64_t>(r) * static_cast<uint64_t>(bits_);
        for (int k = 0; k < bits_; ++k) {
          const uint64_t bit = bit0 + static_cast<uint64_t>(k);
          zbits[bit / 8] |=
              static_cast<uint8_t>(((static_cast<uint32_t>(p.zero) >> k) & 1u) << (bit % 8));
        }
      }
    }
    side.write(out.data(), out.size());
  }

  static void check_shape(const nwc::BlockInfo &b, const char *what,
                          const nwc::ConstTensor<float> &latents, int64_t rows, int64_t cols) {
    nwc::require_shape(b, what, rows, cols, latents.rows, latents.cols, "latents");
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
  Mode mode_;
  bool symmetric_; // mode "symmetric" on the offset grid
  bool gptq_;      // grid "gptq"
  bool clip_;
  double clip_min_;
  int clip_steps_;
  int clip_grid_;
  double clip_maxshrink_;
  double clip_norm_;
  int32_t qmin_ = 0, qmax_ = 0;
};

} // namespace

NWC_MODULE(UniformQuantizer)
