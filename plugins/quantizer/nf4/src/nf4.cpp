// nwc.quant.nf4 — QLoRA's 4-bit NormalFloat (NF4) quantization with one absmax per chunk, and
// optionally QLoRA's double quantization of those absmax values.
//
// Symbol q in 0..15 reconstructs as value = NF4[q] * absmax, evaluated as
// (float)((double)NF4[q] * (double)absmax): both factors are floats, so the double product is exact
// and the single rounding to float gives the same bits on every machine and compiler. The encoder
// computes its symbols and its `dequantized` output from the absmax value the decoder will decode
// (with double quantization: the 8-bit-quantized one), so encoder and decoder agree bit for bit.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

// The 16 NF4 levels, normalized to [-1, 1], with an exact zero (index 7): the published table of
// QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", appendix E) as
// shipped in bitsandbytes (bitsandbytes-foundation/bitsandbytes, bitsandbytes/functional.py,
// get_4bit_type("nf4"); also the NF4 lookup table of its CUDA kernels). These decimal strings are
// the exact float32 values of that table.
constexpr std::array<float, 16> kNf4 = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};
constexpr int32_t kZeroSymbol = 7;
constexpr int64_t kDqGroup = 256; // chunks per double-quantization group (as QLoRA)
constexpr int kDqMaxCode = 127;   // residual codes -127..127

// Midpoints between adjacent levels, exact in double (sums of two floats of similar magnitude).
std::array<double, 15> midpoints() {
  std::array<double, 15> m{};
  for (size_t i = 0; i < m.size(); ++i)
    m[i] = (static_cast<double>(kNf4[i]) + static_cast<double>(kNf4[i + 1])) / 2.0;
  return m;
}
const std::array<double, 15> kMid = midpoints();

// Index of the level nearest to t; a t exactly halfway between two levels takes the lower index.
inline int32_t nearest_level(double t) {
  int32_t q = 0;
  for (double m : kMid) q += (m < t) ? 1 : 0;
  return q;
}

inline float reconstruct(int32_t q, float absmax) {
  return static_cast<float>(static_cast<double>(kNf4[static_cast<size_t>(q)]) *
                            static_cast<double>(absmax));
}

// Double quantization: absmax = max(0, (offset * 127 + code * scale) / 127) in double, rounded to
// float. offset * 127 and code * scale are exact in double (float times a 7- or 8-bit integer), so
// the sum is rounded once whether or not the compiler contracts it into an FMA.
inline float dq_absmax(float offset, float scale, int code) {
  const double num = static_cast<double>(offset) * kDqMaxCode +
                     static_cast<double>(code) * static_cast<double>(scale);
  return static_cast<float>(std::max(0.0, num / kDqMaxCode));
}

void put_f32(std::vector<uint8_t> &out, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  for (int k = 0; k < 4; ++k) out.push_back(static_cast<uint8_t>(u >> (8 * k)));
}

float get_f32(const uint8_t *p) {
  const uint32_t u = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                     static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

class Nf4Quantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.nf4";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "nf4";
  static constexpr const char *description =
      "QLoRA's 4-bit NormalFloat (NF4): each chunk (one group of the chunker; QLoRA uses 64) is "
      "scaled by its absolute maximum and every value is coded as the nearest of 16 normal-float "
      "levels in [-1, 1] (symbols 0..15, level 7 = exact zero); value = level * absmax. The absmax "
      "is stored as fp32 (32 bits per chunk), or with double_quant as an 8-bit code per chunk "
      "relative to the block's mean absmax, with one fp32 scale per 256 chunks (QLoRA's double "
      "quantization).";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static constexpr bool supports_fitted = true;
  NWC_OPTIONS(nwc::bool_option("double_quant", false,
                               "Quantize the per-chunk absmax values (QLoRA double quantization): "
                               "subtract the block's mean absmax, code the residual in 8 bits "
                               "against one fp32 absmax per 256 chunks.",
                               NWC_OPTF_AFFECTS_BITSTREAM));

  explicit Nf4Quantizer(const nwc::Options &opts) : dq_(opts.get_bool("double_quant")) {}

  // Side bytes for n chunks (see README): n * 4, or 4 + 4 * ceil(n / 256) + n with double_quant.
  size_t side_size(int64_t n) const {
    const auto un = static_cast<uint64_t>(n);
    if (!dq_) return static_cast<size_t>(un * 4u);
    if (n == 0) return 0;
    const uint64_t groups = (un + kDqGroup - 1) / kDqGroup;
    return static_cast<size_t>(4u + 4u * groups + un);
  }

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                nwc::Tensor<int32_t> symbols, nwc::Tensor<float> dequantized,
                nwc::Sink &side) override {
    quantize_on(b, latents, latents, symbols, dequantized, side);
  }

  // Each chunk's absmax comes from the reference chunk; values beyond it map to the end levels.
  void quantize_fitted(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                       nwc::ConstTensor<float> reference, nwc::Tensor<int32_t> symbols,
                       nwc::Tensor<float> dequantized, nwc::Sink &side) override {
    check_shape(b, "reference", latents, reference.rows, reference.cols);
    quantize_on(b, latents, reference, symbols, dequantized, side);
  }

  void quantize_on(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                   nwc::ConstTensor<float> fit, nwc::Tensor<int32_t> symbols,
                   nwc::Tensor<float> dequantized, nwc::Sink &side) const {
    check_shape(b, "symbols", latents, symbols.rows, symbols.cols);
    check_shape(b, "dequantized", latents, dequantized.rows, dequantized.cols);
    const int64_t n = latents.rows, m = latents.cols;
    std::vector<float> absmax(static_cast<size_t>(n), 0.0f);
    for (const nwc::ConstTensor<float> *t : {&latents, &fit})
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < m; ++c)
          if (!std::isfinite((*t)(r, c)))
            nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                             "': non-finite value at chunk " + std::to_string(r) +
                                             ", element " + std::to_string(c));
    for (int64_t r = 0; r < n; ++r) {
      float a = 0.0f;
      for (int64_t c = 0; c < m; ++c) a = std::max(a, std::fabs(fit(r, c)));
      absmax[static_cast<size_t>(r)] = a;
    }

    std::vector<uint8_t> out;
    out.reserve(side_size(n));
    std::vector<float> used = absmax; // the absmax the decoder will see
    if (!dq_) {
      for (float a : absmax) put_f32(out, a);
    } else if (n > 0) {
      double sum = 0.0;
      for (float a : absmax) sum += a;
      const float offset = static_cast<float>(sum / static_cast<double>(n));
      put_f32(out, offset);
      std::vector<uint8_t> codes(static_cast<size_t>(n));
      for (int64_t g0 = 0; g0 < n; g0 += kDqGroup) {
        const int64_t g1 = std::min(n, g0 + kDqGroup);
        double rmax = 0.0;
        for (int64_t r = g0; r < g1; ++r)
          rmax = std::max(rmax, std::fabs(static_cast<double>(absmax[static_cast<size_t>(r)]) -
                                          static_cast<double>(offset)));
        const auto scale = static_cast<float>(rmax);
        put_f32(out, scale);
        for (int64_t r = g0; r < g1; ++r) {
          const auto i = static_cast<size_t>(r);
          int code = 0;
          if (scale > 0.0f) {
            const double resid = static_cast<double>(absmax[i]) - static_cast<double>(offset);
            double t = std::round(resid / static_cast<double>(scale) * kDqMaxCode);
            t = std::min(std::max(t, -static_cast<double>(kDqMaxCode)),
                         static_cast<double>(kDqMaxCode));
            code = static_cast<int>(t);
          }
          // Absmax values near FLT_MAX could round up to infinity: step down until finite.
          while (!std::isfinite(dq_absmax(offset, scale, code)) && code > -kDqMaxCode) --code;
          used[i] = dq_absmax(offset, scale, code);
          if (!std::isfinite(used[i]))
            nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                             "': absmax of chunk " + std::to_string(r) +
                                             " cannot be double-quantized (overflow)");
          codes[i] = static_cast<uint8_t>(static_cast<int8_t>(code));
        }
      }
      out.insert(out.end(), codes.begin(), codes.end());
    }

    for (int64_t r = 0; r < n; ++r) {
      const float a = used[static_cast<size_t>(r)];
      const float *x = latents.row(r);
      int32_t *q = symbols.row(r);
      float *dq = dequantized.row(r);
      for (int64_t c = 0; c < m; ++c) {
        q[c] = a > 0.0f ? nearest_level(static_cast<double>(x[c]) / static_cast<double>(a))
                        : kZeroSymbol;
        dq[c] = reconstruct(q[c], a);
      }
    }
    side.write(out.data(), out.size());
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> latents) override {
    const std::string tensor(b.tensor_name);
    nwc::require_shape(b, "latents", latents.rows, latents.cols, symbols.rows, symbols.cols,
                       "symbols");
    const int64_t n = symbols.rows;
    const size_t need = side_size(n);
    if (side.size != need)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + tensor + "': side info has " +
                                          std::to_string(side.size) + " bytes, expected " +
                                          std::to_string(need) + " for " + std::to_string(n) +
                                          " chunks" + (dq_ ? " (double_quant)" : ""));
    auto corrupt = [&](int64_t r, const std::string &what) {
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "tensor '" + tensor + "': chunk " + std::to_string(r) + ": " + what);
    };
    float offset = 0.0f;
    const uint8_t *scales = nullptr, *codes = nullptr;
    if (dq_ && n > 0) {
      offset = get_f32(side.data);
      if (!std::isfinite(offset) || !(offset >= 0.0f))
        corrupt(0, "invalid double-quantization offset");
      scales = side.data + 4;
      codes = scales + 4 * ((n + kDqGroup - 1) / kDqGroup);
    }
    const int64_t m = symbols.cols;
    for (int64_t r = 0; r < n; ++r) {
      float a;
      if (!dq_) {
        a = get_f32(side.data + 4 * r);
      } else {
        const float scale = get_f32(scales + 4 * (r / kDqGroup));
        if (!std::isfinite(scale) || !(scale >= 0.0f))
          corrupt(r, "invalid double-quantization scale");
        const int code = static_cast<int8_t>(codes[r]);
        if (code < -kDqMaxCode) corrupt(r, "absmax code -128 is outside [-127, 127]");
        a = dq_absmax(offset, scale, code);
      }
      if (!std::isfinite(a) || !(a >= 0.0f)) corrupt(r, "absmax is not finite and >= 0");
      const int32_t *__restrict q = symbols.row(r);
      float *__restrict out = latents.row(r);
      // Symbols are checked first, without a branch per value; then the chunk's 16 levels are
      // reconstructed once and looked up.
      uint32_t bad = 0;
      for (int64_t c = 0; c < m; ++c) bad |= static_cast<uint32_t>(q[c]) > 15u;
      if (bad)
        for (int64_t c = 0; c < m; ++c)
          if (q[c] < 0 || q[c] > 15)
            corrupt(r, "symbol " + std::to_string(q[c]) + " at element " + std::to_string(c) +
                           " is outside [0, 15]");
      float lut[16];
      for (int32_t k = 0; k < 16; ++k) lut[k] = reconstruct(k, a);
      for (int64_t c = 0; c < m; ++c) out[c] = lut[static_cast<uint32_t>(q[c]) & 15u];
    }
  }

private:
  static void check_shape(const nwc::BlockInfo &b, const char *what,
                          const nwc::ConstTensor<float> &latents, int64_t rows, int64_t cols) {
    nwc::require_shape(b, what, rows, cols, latents.rows, latents.cols, "latents");
  }

  bool dq_;
};

} // namespace

NWC_MODULE(Nf4Quantizer)
