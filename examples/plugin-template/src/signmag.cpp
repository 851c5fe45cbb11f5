// org.example.quant.signmag — sign-magnitude quantization with one fp32 scale per chunk.
//
// An out-of-tree nwc plugin, built against an installed SDK (find_package(nwc)); see README.md.
//
// Per chunk (one row of the latents the host hands over) with M = 2^(bits-1) - 1 magnitude levels:
//   scale  = max |x| over the chunk, stored as 4 bytes of side information (fp32, little-endian)
//   level  = round(|x| / scale * M)                       in 0..M
//   symbol = (sign << (bits-1)) | level                   sign = 1 for x < 0 and level > 0
//   value  = (float)(±(double)level / M * (double)scale)  (+ for sign 0, - for sign 1)
// So symbols lie in 0..2^bits-1 and need exactly `bits` bits when packed. Encoder and decoder
// compute the value with the same expression, so the encoder's `dequantized` output equals what
// the decoder reconstructs, bit for bit. A chunk of zeros has scale 0 and decodes to zeros.
//
// Everything dequantize reads is untrusted (it comes from a file): the side information must be
// exactly 4 bytes per chunk holding finite, non-negative scales, and every symbol must be one the
// encoder can write; anything else is NWC_E_CORRUPT_STREAM with the tensor, chunk and element.
#include "nwc/cpp/plugin.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace {

constexpr size_t kScaleBytes = 4; // one fp32 per chunk

void put_scale(nwc::Sink &side, float scale) {
  uint32_t u;
  std::memcpy(&u, &scale, sizeof u);
  const uint8_t b[kScaleBytes] = {static_cast<uint8_t>(u), static_cast<uint8_t>(u >> 8),
                                  static_cast<uint8_t>(u >> 16), static_cast<uint8_t>(u >> 24)};
  side.write(b, sizeof b);
}

float get_scale(const uint8_t *p) {
  const uint32_t u = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                     static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  float scale;
  std::memcpy(&scale, &u, sizeof scale);
  return scale;
}

class SignMagnitude final : public nwc::Quantizer {
public:
  static constexpr const char *id = "org.example.quant.signmag";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "signmag";
  static constexpr const char *description =
      "Sign-magnitude quantization (example out-of-tree plugin): per chunk, scale = max|x| is "
      "stored as fp32 side information (4 bytes per chunk); each value becomes a sign bit and a "
      "(bits-1)-bit magnitude level, value = sign * level / (2^(bits-1) - 1) * scale.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::int_option("bits", 4, 2, 8,
                              "Bits per symbol: one sign bit and bits-1 magnitude bits "
                              "(2^(bits-1) - 1 nonzero magnitude levels).",
                              NWC_OPTF_AFFECTS_BITSTREAM, "bits"));

  explicit SignMagnitude(const nwc::Options &opts)
      : bits_(static_cast<int>(opts.get_int("bits"))), levels_((1 << (bits_ - 1)) - 1),
        sign_bit_(1 << (bits_ - 1)) {}

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> x, nwc::Tensor<int32_t> symbols,
                nwc::Tensor<float> dequantized, nwc::Sink &side) override {
    check_shape(b, "symbols", symbols.rows, symbols.cols, x.rows, x.cols);
    check_shape(b, "dequantized", dequantized.rows, dequantized.cols, x.rows, x.cols);
    for (int64_t r = 0; r < x.rows; ++r) {
      const float *in = x.row(r);
      float scale = 0.0f;
      for (int64_t c = 0; c < x.cols; ++c) {
        if (!std::isfinite(in[c]))
          nwc::fail(NWC_E_INVALID_ARG, where(b, r, c) + ": non-finite value");
        scale = std::fmax(scale, std::fabs(in[c]));
      }
      put_scale(side, scale);
      int32_t *q = symbols.row(r);
      float *dq = dequantized.row(r);
      for (int64_t c = 0; c < x.cols; ++c) {
        int32_t level = 0;
        if (scale > 0.0f) {
          const double t = static_cast<double>(std::fabs(in[c])) / scale * levels_;
          level = static_cast<int32_t>(std::fmin(std::nearbyint(t), static_cast<double>(levels_)));
        }
        q[c] = (in[c] < 0.0f && level > 0) ? (sign_bit_ | level) : level;
        dq[c] = value(q[c], scale);
      }
    }
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> x) override {
    check_shape(b, "symbols", symbols.rows, symbols.cols, x.rows, x.cols);
    const size_t want = static_cast<size_t>(symbols.rows) * kScaleBytes;
    if (side.size != want || (want > 0 && side.data == nullptr))
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "tensor '" + std::string(b.tensor_name) + "': signmag side information is " +
                    std::to_string(side.size) + " bytes, expected " + std::to_string(want) +
                    " (4 per chunk for " + std::to_string(symbols.rows) + " chunks)");
    const int32_t max_symbol = (sign_bit_ << 1) - 1;
    for (int64_t r = 0; r < symbols.rows; ++r) {
      const float scale = get_scale(side.data + static_cast<size_t>(r) * kScaleBytes);
      if (!std::isfinite(scale) || scale < 0.0f)
        nwc::fail(NWC_E_CORRUPT_STREAM, where(b, r) + ": scale " + std::to_string(scale) +
                                            " is not a finite, non-negative number");
      const int32_t *q = symbols.row(r);
      float *out = x.row(r);
      for (int64_t c = 0; c < symbols.cols; ++c) {
        if (q[c] < 0 || q[c] > max_symbol)
          nwc::fail(NWC_E_CORRUPT_STREAM, where(b, r, c) + ": symbol " + std::to_string(q[c]) +
                                              " is outside 0.." + std::to_string(max_symbol) +
                                              " for bits = " + std::to_string(bits_));
        if (q[c] == sign_bit_)
          nwc::fail(NWC_E_CORRUPT_STREAM,
                    where(b, r, c) + ": symbol " + std::to_string(q[c]) +
                        " is a negative zero, which the encoder never writes");
        out[c] = value(q[c], scale);
      }
    }
  }

private:
  // The one reconstruction expression, shared by encoder and decoder.
  float value(int32_t symbol, float scale) const {
    const int32_t level = symbol & (sign_bit_ - 1);
    const double v = static_cast<double>(level) / levels_ * static_cast<double>(scale);
    return static_cast<float>((symbol & sign_bit_) ? -v : v);
  }

  static std::string where(const nwc::BlockInfo &b, int64_t chunk, int64_t element = -1) {
    std::string s = "tensor '" + std::string(b.tensor_name) + "' chunk " + std::to_string(chunk);
    if (element >= 0) s += " element " + std::to_string(element);
    return s;
  }

  static void check_shape(const nwc::BlockInfo &b, const char *what, int64_t rows, int64_t cols,
                          int64_t want_rows, int64_t want_cols) {
    if (rows != want_rows || cols != want_cols)
      nwc::fail(NWC_E_INVALID_ARG,
                "tensor '" + std::string(b.tensor_name) + "': " + what + " are [" +
                    std::to_string(rows) + ", " + std::to_string(cols) + "], values are [" +
                    std::to_string(want_rows) + ", " + std::to_string(want_cols) + "]");
  }

  int bits_;
  int32_t levels_;   // M = 2^(bits-1) - 1
  int32_t sign_bit_; // 2^(bits-1)
};

} // namespace

NWC_MODULE(SignMagnitude)
