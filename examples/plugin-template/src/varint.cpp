// org.example.entropy.varint — an entropy coder: each symbol zigzag-mapped to an unsigned value and
// written as a little-endian base-128 varint (LEB128), 1 byte for symbols in [-64, 63].
//
// The worked example of docs/writing-a-plugin.md §11, built out of tree like signmag.cpp.
//   zigzag(s) = (uint32)s << 1 ^ (s < 0 ? 0xffffffff : 0)    0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
//   varint    = 7 bits per byte, low bits first, high bit set on every byte but the last
// The stream is the varints of the symbols in row-major order, nothing else: the decoder is told
// the symbol count. It ignores the transform's probability model (a coder without a model of its
// own may).
//
// decode reads untrusted bytes: a varint longer than 5 bytes or above 2^32 - 1, a stream that ends
// inside a varint or before the last symbol, and bytes after it are NWC_E_CORRUPT_STREAM naming
// the symbol and byte; it never reads past the stream and allocates nothing.
#include "nwc/cpp/plugin.hpp"

#include <cstdint>
#include <string>

namespace {

class Varint final : public nwc::EntropyCoder {
public:
  static constexpr const char *id = "org.example.entropy.varint";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "varint";
  static constexpr const char *description =
      "Zigzag + LEB128 varints: 1 byte per symbol in [-64, 63], up to 5 bytes per int32. An "
      "example entropy coder built out of tree against the installed nwc SDK.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_NO_OPTIONS;

  explicit Varint(const nwc::Options &) {}

  void encode(nwc::ConstTensor<int32_t> symbols, const nwc_cdf_model *, nwc::Sink &out) override {
    uint8_t buf[5];
    for (int64_t r = 0; r < symbols.rows; ++r) {
      const int32_t *row = symbols.row(r);
      for (int64_t c = 0; c < symbols.cols; ++c) {
        const int32_t s = row[c];
        uint32_t z = (static_cast<uint32_t>(s) << 1) ^ (s < 0 ? 0xffffffffu : 0u);
        size_t n = 0;
        while (z >= 0x80u) {
          buf[n++] = static_cast<uint8_t>(z | 0x80u);
          z >>= 7;
        }
        buf[n++] = static_cast<uint8_t>(z);
        out.write(buf, n);
      }
    }
  }

  void decode(nwc::Bytes stream, const nwc_cdf_model *, nwc::Tensor<int32_t> symbols) override {
    size_t at = 0;
    for (int64_t r = 0; r < symbols.rows; ++r) {
      int32_t *row = symbols.row(r);
      for (int64_t c = 0; c < symbols.cols; ++c) {
        const std::string where = "varint stream: symbol " + std::to_string(r * symbols.cols + c);
        uint64_t z = 0;
        for (int shift = 0;; shift += 7) {
          if (at == stream.size)
            nwc::fail(NWC_E_CORRUPT_STREAM,
                      where + ": the stream ends after " + std::to_string(stream.size) + " bytes");
          if (shift == 35)
            nwc::fail(NWC_E_CORRUPT_STREAM,
                      where + ": a varint longer than 5 bytes at byte " + std::to_string(at));
          const uint8_t b = stream.data[at++];
          z |= static_cast<uint64_t>(b & 0x7fu) << shift;
          if (!(b & 0x80u)) break;
        }
        if (z > 0xffffffffu)
          nwc::fail(NWC_E_CORRUPT_STREAM,
                    where + ": value " + std::to_string(z) + " does not fit 32 bits");
        const auto u = static_cast<uint32_t>(z);
        row[c] = static_cast<int32_t>((u >> 1) ^ (0u - (u & 1u)));
      }
    }
    if (at != stream.size)
      nwc::fail(NWC_E_CORRUPT_STREAM, "varint stream: " + std::to_string(stream.size - at) +
                                          " bytes after the last symbol");
  }
};

} // namespace

NWC_MODULE(Varint)
