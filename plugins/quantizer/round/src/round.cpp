// nwc.quant.round — rounds latents to integer symbols on a fixed grid of spacing `step`, for an
// entropy coder driven by a transform's learned prior (the rANS coder's external-CDF mode).
//
// symbol = nearbyint(latent / step) (ties to even in the default rounding mode), evaluated in
// double; value = (float)((double)symbol * step). Encoder and decoder use the same expression, so
// their reconstructions are bit-identical. No side information: the grid is fixed by the option.
#include "nwc/cpp/plugin.hpp"

#include <cmath>
#include <cstdio>
#include <string>

namespace {

constexpr double kMaxSymbol = 1073741824.0; // 2^30

// Shortest-ish decimal for messages (std::to_string prints tiny steps as 0.000000).
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

class RoundQuantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.round";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "round";
  static constexpr const char *description =
      "Rounds every latent to the nearest multiple of `step` (ties to even): symbol = "
      "round(latent / step), value = symbol * step. Meant for transforms with a learned prior "
      "(NWC), whose latents are already centered on their medians, so plain rounding is rounding "
      "around the medians; the symbols go to an entropy coder using the transform's CDFs. "
      "|latent / step| must not exceed 2^30. Writes no side information; quantize_fitted has no "
      "parameters to fit and equals quantize.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static constexpr bool supports_fitted = true;
  NWC_OPTIONS(nwc::float_option("step", 1.0, 0.0, 1e6,
                                "Grid spacing in latent units, > 0: symbol = round(latent / step), "
                                "value = symbol * step.",
                                NWC_OPTF_AFFECTS_BITSTREAM));

  explicit RoundQuantizer(const nwc::Options &opts) : step_(opts.get_float("step")) {
    if (!(step_ > 0.0))
      nwc::fail(NWC_E_INVALID_OPTION, "option 'step' = " + num(step_) + " must be greater than 0");
  }

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                nwc::Tensor<int32_t> symbols, nwc::Tensor<float> dequantized,
                nwc::Sink &) override {
    check_shape(b, "symbols", latents, symbols.rows, symbols.cols);
    check_shape(b, "dequantized", latents, dequantized.rows, dequantized.cols);
    for (int64_t r = 0; r < latents.rows; ++r) {
      const float *x = latents.row(r);
      int32_t *q = symbols.row(r);
      float *dq = dequantized.row(r);
      for (int64_t c = 0; c < latents.cols; ++c) {
        if (!std::isfinite(x[c]))
          nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                           "': non-finite latent at chunk " + std::to_string(r) +
                                           ", element " + std::to_string(c));
        const double t = static_cast<double>(x[c]) / step_;
        if (std::fabs(t) > kMaxSymbol)
          nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': latent " +
                                           num(x[c]) + " at chunk " + std::to_string(r) +
                                           ", element " + std::to_string(c) +
                                           " is more than 2^30 steps of " + num(step_) + " from 0");
        q[c] = static_cast<int32_t>(std::nearbyint(t));
        dq[c] = value(q[c]);
      }
    }
  }

  // There is nothing to fit: the grid is fixed by `step`, so reference is only checked for shape.
  void quantize_fitted(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                       nwc::ConstTensor<float> reference, nwc::Tensor<int32_t> symbols,
                       nwc::Tensor<float> dequantized, nwc::Sink &side) override {
    check_shape(b, "reference", latents, reference.rows, reference.cols);
    quantize(b, latents, symbols, dequantized, side);
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> latents) override {
    if (side.size != 0)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                          "': round quantizer has no side info, got " +
                                          std::to_string(side.size) + " bytes");
    nwc::require_shape(b, "latents", latents.rows, latents.cols, symbols.rows, symbols.cols,
                       "symbols");
    // Symbols are checked first, without a branch per value: |q| <= 2^30 <=> q + 2^30 in
    // [0, 2^31], unsigned; then every value is computed in one loop over the block.
    const int64_t n = symbols.size();
    const int32_t *__restrict q = symbols.data;
    float *__restrict out = latents.data;
    constexpr uint32_t kBias = 1u << 30;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>(q[i]) + kBias > 2 * kBias;
    if (bad)
      for (int64_t i = 0; i < n; ++i)
        if (std::fabs(static_cast<double>(q[i])) > kMaxSymbol)
          nwc::fail(NWC_E_CORRUPT_STREAM,
                    "tensor '" + std::string(b.tensor_name) + "': symbol " + std::to_string(q[i]) +
                        " at chunk " + std::to_string(i / symbols.cols) + ", element " +
                        std::to_string(i % symbols.cols) + " is outside [-2^30, 2^30]");
    const double step = step_;
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<double>(q[i]) * step);
  }

private:
  float value(int32_t q) const { return static_cast<float>(static_cast<double>(q) * step_); }

  static void check_shape(const nwc::BlockInfo &b, const char *what,
                          const nwc::ConstTensor<float> &latents, int64_t rows, int64_t cols) {
    nwc::require_shape(b, what, rows, cols, latents.rows, latents.cols, "latents");
  }

  double step_;
};

} // namespace

NWC_MODULE(RoundQuantizer)
