// nwc.quant.hqq — Half-Quadratic Quantization (Badri & Shaji 2023; reference code
// github.com/mobiusml/hqq, hqq/core/quantize.py Quantizer.quantize and hqq/core/optimize.py
// optimize_weights_proximal_legacy): calibration-free affine quantization of each chunk whose zero
// point is refined by a half-quadratic (proximal) solver of the sparsity-promoting lp error, p < 1.
//
// Per chunk (one group; the reference's axis=1 groups are nwc.chunk.group's chunks), in float32
// operation by operation as the reference computes on the CPU:
//   s = (2^bits - 1) / (max - min)  (1 if |max - min| <= 1e-4), at most 2e4   (inverse scale)
//   z = -min * s  (rounded with round_zero)
//   repeat up to iters times, over all chunks of the call together:
//     Wq = clamp(round(W * s + z), 0, 2^bits - 1);  Wr = (Wq - z) / s
//     error = mean |W - Wr| over the call; We = shrink_lp(W - Wr, beta)
//     z = mean over the chunk of (Wq - (W - We) * s);  beta *= kappa
//     stop (keeping the z just computed) as soon as error is not below the best so far
//   Wq = clamp(round(W * s + z), 0, 2^bits - 1)
// Stored: scale = 1 / s and z, each rounded to fp16 (HQQ keeps them in its fp16 compute dtype).
// Value = (q - zero16) * scale16, evaluated exactly in double and rounded once to float, so the
// encoder's dequantized output and the decoder agree bit for bit on every machine.
#include "nwc/cpp/half.hpp"
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

using nwc::half_to_double;
using nwc::kHalfMax;

// fp16 bits of a finite float, rounded to nearest-even (torch's float -> half conversion);
// 0x7c00 | sign when it overflows.
uint16_t float_to_half(float f) {
  return nwc::double_to_half(static_cast<double>(f));
}

// The stored value of symbol q: exact in double (q - zero needs at most 33 bits, times the 11 of
// the scale), then one rounding to float.
inline float hqq_value(double scale, double zero, int32_t q) {
  return static_cast<float>((static_cast<double>(q) - zero) * scale);
}

class HqqQuantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.hqq";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "hqq";
  static constexpr const char *description =
      "Half-Quadratic Quantization (HQQ, Badri & Shaji 2023), calibration-free: each chunk (one "
      "group of the chunker; HQQ's axis=1 groups are nwc.chunk.group's) gets HQQ's min/max affine "
      "grid, then its zero point is refined by HQQ's half-quadratic solver of the lp error (p = "
      "lp_norm < 1) with early stopping on the mean absolute error over the quantize call (one "
      "compensator block; use nwc.comp.none with block = 0 for HQQ's whole-tensor criterion). "
      "Symbols 0..2^bits-1, value = (q - zero) * scale; scale and zero are stored as fp16, 4 "
      "bytes of side info per chunk. Follows mobiusml/hqq's Quantizer.quantize and "
      "optimize_weights_proximal_legacy in float32.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(
      nwc::int_option("bits", 4, 1, 8, "Bits per symbol: 2^bits levels per chunk (HQQ's nbits).",
                      NWC_OPTF_AFFECTS_BITSTREAM, "bits"),
      nwc::bool_option("optimize", true,
                       "Refine the zero point with the half-quadratic solver (HQQ's optimize); "
                       "false keeps the min/max grid (round to nearest)."),
      nwc::bool_option("round_zero", false,
                       "Round the initial zero point to an integer before optimizing (HQQ's "
                       "round_zero; hqq_base_quant_config and transformers' HqqConfig set it "
                       "for 4 bits)."),
      nwc::float_option("lp_norm", 0.7, 0.01, 1.0,
                        "p of the lp error the shrinkage operator targets (HQQ's lp_norm)."),
      nwc::float_option("beta", 10.0, 1e-6, 1e12,
                        "Initial half-quadratic penalty (HQQ's beta): shrinkage threshold "
                        "(1/beta) |e|^(p-1)."),
      nwc::float_option("kappa", 1.0, 1.0, 10.0,
                        "beta is multiplied by kappa after every iteration. 1.0 reproduces hqq "
                        "0.2.7 and later (their legacy solver no longer updates beta); 1.01 the "
                        "paper and hqq up to 0.2.6."),
      nwc::int_option("iters", 20, 1, 10000,
                      "Most solver iterations (HQQ's iters); it stops earlier once the mean "
                      "absolute error stops decreasing."));

  explicit HqqQuantizer(const nwc::Options &opts)
      : bits_(static_cast<int>(opts.get_int("bits"))), optimize_(opts.get_bool("optimize")),
        round_zero_(opts.get_bool("round_zero")), lp_norm_(opts.get_float("lp_norm")),
        beta_(opts.get_float("beta")), kappa_(opts.get_float("kappa")),
        iters_(static_cast<int>(opts.get_int("iters"))), qmax_((1 << bits_) - 1) {}

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> x, nwc::Tensor<int32_t> symbols,
                nwc::Tensor<float> dequantized, nwc::Sink &side) override {
    check_shape(b, "symbols", x, symbols.rows, symbols.cols);
    check_shape(b, "dequantized", x, dequantized.rows, dequantized.cols);
    const int64_t n = x.rows, m = x.cols;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < m; ++c) {
        const float v = x(r, c);
        if (!std::isfinite(v))
          nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                           "': non-finite value at chunk " + std::to_string(r) +
                                           ", element " + std::to_string(c));
        if (std::fabs(static_cast<double>(v)) > kHalfMax)
          nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': value " +
                                           std::to_string(v) + " at chunk " + std::to_string(r) +
                                           ", element " + std::to_string(c) +
                                           " is outside the fp16 range +-65504");
      }

    // Inverse scales and zero points, float32 as in the reference.
    std::vector<float> s(static_cast<size_t>(n), 1.0f), z(static_cast<size_t>(n), 0.0f);
    const auto maxv = static_cast<float>(qmax_);
    for (int64_t r = 0; r < n; ++r) {
      if (m == 0) continue; // nothing to code: scale 1, zero 0
      const float *w = x.row(r);
      const float mn = *std::min_element(w, w + m), mx = *std::max_element(w, w + m);
      const float denom = mx - mn;
      float si = maxv / denom;
      if (std::fabs(denom) <= 1e-4f) si = 1.0f; // avoid small denominators (hqq 0.2.7)
      si = std::min(si, 2e4f);                  // clamp(max=2e4) "for half precision"
      float zi = -mn * si;
      if (round_zero_) zi = std::nearbyint(zi);
      s[static_cast<size_t>(r)] = si;
      z[static_cast<size_t>(r)] = zi;
    }
    if (optimize_ && n > 0 && m > 0) solve(x, s, z);

    // Stored parameters: 1 / s and z rounded to fp16; symbols from the float32 ones (as HQQ).
    std::vector<uint8_t> out(static_cast<size_t>(n) * 4);
    for (int64_t r = 0; r < n; ++r) {
      const auto i = static_cast<size_t>(r);
      const uint16_t sb = float_to_half(1.0f / s[i]), zb = float_to_half(z[i]);
      if ((sb & 0x7c00u) == 0x7c00u || (zb & 0x7c00u) == 0x7c00u)
        nwc::fail(NWC_E_INVALID_ARG,
                  "tensor '" + std::string(b.tensor_name) + "': chunk " + std::to_string(r) +
                      (((sb & 0x7c00u) == 0x7c00u)
                           ? " has a scale 1/s = " + std::to_string(1.0f / s[i])
                           : " has a zero point " + std::to_string(z[i])) +
                      " beyond fp16's range (HQQ's fp16 meta-data would be infinite); such a "
                      "chunk (a narrow range far from zero) cannot be coded by HQQ");
      out[4 * i] = static_cast<uint8_t>(sb);
      out[4 * i + 1] = static_cast<uint8_t>(sb >> 8);
      out[4 * i + 2] = static_cast<uint8_t>(zb);
      out[4 * i + 3] = static_cast<uint8_t>(zb >> 8);
      const double scale = half_to_double(sb), zero = half_to_double(zb);
      const float *w = x.row(r);
      int32_t *q = symbols.row(r);
      float *dq = dequantized.row(r);
      for (int64_t c = 0; c < m; ++c) {
        q[c] = static_cast<int32_t>(level(w[c], s[i], z[i]));
        dq[c] = hqq_value(scale, zero, q[c]);
      }
    }
    side.write(out.data(), out.size());
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> latents) override {
    nwc::require_shape(b, "latents", latents.rows, latents.cols, symbols.rows, symbols.cols,
                       "symbols");
    const int64_t n = symbols.rows, m = symbols.cols;
    const uint64_t need = static_cast<uint64_t>(n) * 4u;
    if (side.size != need)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                          "': side info has " + std::to_string(side.size) +
                                          " bytes, expected " + std::to_string(need) +
                                          " (4 per chunk)");
    const auto span = static_cast<uint32_t>(qmax_);
    const bool table = static_cast<int64_t>(span) < m;
    std::vector<float> lut(table ? span + 1 : 0);
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t *p = side.data + 4 * r;
      const auto sb = static_cast<uint16_t>(p[0] | (p[1] << 8));
      const auto zb = static_cast<uint16_t>(p[2] | (p[3] << 8));
      const double scale = half_to_double(sb), zero = half_to_double(zb);
      if (!std::isfinite(scale) || (sb & 0x8000u) || !std::isfinite(zero))
        nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) + "': chunk " +
                                            std::to_string(r) +
                                            " has an invalid scale/zero in its side info");
      const int32_t *__restrict q = symbols.row(r);
      float *__restrict out = latents.row(r);
      uint32_t bad = 0;
      for (int64_t c = 0; c < m; ++c) bad |= static_cast<uint32_t>(q[c]) > span;
      if (bad)
        for (int64_t c = 0; c < m; ++c)
          if (q[c] < 0 || q[c] > qmax_)
            nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) + "': symbol " +
                                                std::to_string(q[c]) + " at chunk " +
                                                std::to_string(r) + " is outside [0, " +
                                                std::to_string(qmax_) + "]");
      if (table) {
        for (uint32_t k = 0; k <= span; ++k)
          lut[k] = hqq_value(scale, zero, static_cast<int32_t>(k));
        const float *l = lut.data();
        for (int64_t c = 0; c < m; ++c) out[c] = l[static_cast<uint32_t>(q[c])];
      } else {
        for (int64_t c = 0; c < m; ++c) out[c] = hqq_value(scale, zero, q[c]);
      }
    }
  }

private:
  // round(w * s + z) clamped to the levels, in float32 (torch.round: half to even).
  float level(float w, float s, float z) const {
    const float t = std::nearbyint(w * s + z);
    return std::min(std::max(t, 0.0f), static_cast<float>(qmax_));
  }

  // HQQ's shrinkage operator: sign(e) * max(0, |e| - (1/beta) |e|^(p-1)), in float32 with the
  // scalars 1/beta and p-1 rounded to float as torch does.
  float shrink(float e, float inv_beta, float pm1) const {
    const float a = std::fabs(e);
    float t = lp_norm_ == 1.0 ? a - inv_beta : a - inv_beta * std::pow(a, pm1);
    t = std::max(t, 0.0f);
    const float sign = e > 0.0f ? 1.0f : (e < 0.0f ? -1.0f : 0.0f);
    return t * sign;
  }

  // optimize_weights_proximal_legacy: refines z (s is kept) over all chunks of the call. Sums are
  // accumulated in double (the reference sums in float32 in torch's order) and rounded to float
  // where the reference has a float32 result.
  void solve(nwc::ConstTensor<float> x, const std::vector<float> &s, std::vector<float> &z) const {
    const int64_t n = x.rows, m = x.cols;
    const auto pm1 = static_cast<float>(lp_norm_ - 1.0);
    double beta = beta_;
    float best = std::numeric_limits<float>::infinity();
    std::vector<float> znew(z.size());
    for (int it = 0; it < iters_; ++it) {
      const auto inv_beta = static_cast<float>(1.0 / beta);
      double err_sum = 0.0;
      for (int64_t r = 0; r < n; ++r) {
        const auto i = static_cast<size_t>(r);
        const float si = s[i], zi = z[i];
        const float *w = x.row(r);
        double acc = 0.0;
        for (int64_t c = 0; c < m; ++c) {
          const float wq = level(w[c], si, zi);
          const float wr = (wq - zi) / si;
          const float e = w[c] - wr;
          err_sum += std::fabs(static_cast<double>(e));
          const float we = shrink(e, inv_beta, pm1);
          acc += static_cast<double>(wq - (w[c] - we) * si);
        }
        znew[i] = static_cast<float>(acc / static_cast<double>(m));
      }
      z.swap(znew); // the step's zero is kept even when its error check below stops the loop
      beta *= kappa_;
      const auto err = static_cast<float>(err_sum / static_cast<double>(n * m));
      if (err < best)
        best = err;
      else
        break;
    }
  }

  static void check_shape(const nwc::BlockInfo &b, const char *what,
                          const nwc::ConstTensor<float> &latents, int64_t rows, int64_t cols) {
    nwc::require_shape(b, what, rows, cols, latents.rows, latents.cols, "latents");
  }

  int bits_;
  bool optimize_;
  bool round_zero_;
  double lp_norm_;
  double beta_;
  double kappa_;
  int iters_;
  int32_t qmax_;
};

} // namespace

NWC_MODULE(HqqQuantizer)
