// nwc.entropy.raw — fixed-width bit packing of (symbol - min), the baseline every model-based
// coder is compared against. Stream: u8 width (0..32), i32 LE min, then ceil(n * width / 8) bytes
// of (s - min) packed LSB-first.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <string>

namespace {

constexpr size_t kHeaderBytes = 5;
constexpr uint32_t kMaxWidth = 32;

// Bits needed to represent span (0 for 0).
uint32_t bits_for(uint64_t span) {
  uint32_t w = 0;
  while (span) {
    ++w;
    span >>= 1;
  }
  return w;
}

// Payload bytes for n symbols of width bits, or fails if that does not fit in size_t.
size_t payload_bytes(int64_t n, uint32_t width) {
  const uint64_t un = static_cast<uint64_t>(n);
  if (width && un > (std::numeric_limits<uint64_t>::max() - 7) / width)
    nwc::fail(NWC_E_INVALID_ARG, "symbol count " + std::to_string(n) + " is too large");
  return static_cast<size_t>((un * width + 7) / 8);
}

class RawCoder final : public nwc::EntropyCoder {
public:
  static constexpr const char *id = "nwc.entropy.raw";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "raw";
  static constexpr const char *description =
      "Fixed-width bit packing, no probability model. Stores the minimum symbol and the number of "
      "bits needed for (max - min), then every (symbol - min) in exactly that many bits, packed "
      "LSB-first. Rate is ceil(n * width / 8) + 5 bytes: the baseline for the model-based coders.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_NO_OPTIONS;

  explicit RawCoder(const nwc::Options &) {}

  void encode(nwc::ConstTensor<int32_t> symbols, const nwc_cdf_model *, nwc::Sink &out) override {
    const int64_t n = symbols.size();
    int32_t lo = 0, hi = 0;
    if (n > 0) {
      const auto [mn, mx] = std::minmax_element(symbols.data, symbols.data + n);
      lo = *mn;
      hi = *mx;
    }
    const uint32_t width =
        bits_for(static_cast<uint64_t>(static_cast<int64_t>(hi) - static_cast<int64_t>(lo)));
    payload_bytes(n, width); // size check only

    std::array<uint8_t, kHeaderBytes> header{};
    header[0] = static_cast<uint8_t>(width);
    const uint32_t ulo = static_cast<uint32_t>(lo);
    for (int i = 0; i < 4; ++i) header[1 + i] = static_cast<uint8_t>(ulo >> (8 * i));
    out.write(header.data(), header.size());
    if (width == 0) return;

    // acc holds < 8 pending bits before each symbol is added, so width <= 32 fits in 64 bits.
    std::array<uint8_t, 1 << 14> buf;
    size_t fill = 0;
    uint64_t acc = 0;
    uint32_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t delta =
          static_cast<uint64_t>(static_cast<int64_t>(symbols.data[i]) - static_cast<int64_t>(lo));
      acc |= delta << count;
      count += width;
      while (count >= 8) {
        buf[fill++] = static_cast<uint8_t>(acc);
        acc >>= 8;
        count -= 8;
      }
      if (fill + 8 > buf.size()) {
        out.write(buf.data(), fill);
        fill = 0;
      }
    }
    if (count > 0) buf[fill++] = static_cast<uint8_t>(acc);
    if (fill) out.write(buf.data(), fill);
  }

  void decode(nwc::Bytes stream, const nwc_cdf_model *, nwc::Tensor<int32_t> symbols) override {
    const int64_t n = symbols.size();
    if (stream.size < kHeaderBytes)
      nwc::fail(NWC_E_CORRUPT_STREAM, "raw stream: " + std::to_string(stream.size) +
                                          " bytes, shorter than its 5-byte header");
    const uint32_t width = stream.data[0];
    if (width > kMaxWidth)
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "raw stream: symbol width " + std::to_string(width) + " exceeds 32 bits");
    uint32_t ulo = 0;
    for (int i = 0; i < 4; ++i) ulo |= static_cast<uint32_t>(stream.data[1 + i]) << (8 * i);
    const int64_t lo = static_cast<int32_t>(ulo);

    const size_t expected = payload_bytes(n, width);
    const size_t got = stream.size - kHeaderBytes;
    if (got != expected)
      nwc::fail(NWC_E_CORRUPT_STREAM, "raw stream: payload has " + std::to_string(got) +
                                          " bytes, expected " + std::to_string(expected) + " for " +
                                          std::to_string(n) + " symbols of " +
                                          std::to_string(width) + " bits");
    const uint8_t *p = stream.data + kHeaderBytes;
    const uint64_t mask = (1ull << width) - 1; // width <= 32
    constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
    if (width > 0 && 8 % width == 0 && lo + static_cast<int64_t>(mask) <= kMax) {
      // 1, 2, 4 or 8 bits with every value in int32: whole bytes of 8 / width symbols, no check
      // per symbol.
      const uint32_t shift = width == 1 ? 3 : width == 2 ? 2 : width == 4 ? 1 : 0; // log2(8/w)
      const uint32_t lanes = (1u << shift) - 1, m = static_cast<uint32_t>(mask);
      const auto base = static_cast<uint32_t>(lo);
      int32_t *__restrict out = symbols.data;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t bits = (static_cast<uint32_t>(i) & lanes) * width;
        out[i] = static_cast<int32_t>(base + ((p[i >> shift] >> bits) & m));
      }
      // The encoder pads the last byte with zero bits; anything else is not a stream it wrote.
      const uint32_t used = (static_cast<uint32_t>(n) & lanes) * width;
      if (used != 0 && (p[expected - 1] >> used) != 0)
        nwc::fail(NWC_E_CORRUPT_STREAM, "raw stream: nonzero padding bits after the last symbol");
      return;
    }
    uint64_t acc = 0;
    uint32_t count = 0;
    size_t pos = 0;
    for (int64_t i = 0; i < n; ++i) {
      while (count < width) { // pos < expected: the size check above covers n * width bits
        acc |= static_cast<uint64_t>(p[pos++]) << count;
        count += 8;
      }
      const int64_t v = lo + static_cast<int64_t>(acc & mask);
      if (v > kMax) // lo >= INT32_MIN and the delta is >= 0
        nwc::fail(NWC_E_CORRUPT_STREAM, "raw stream: symbol " + std::to_string(i) + " decodes to " +
                                            std::to_string(v) + ", outside int32");
      symbols.data[i] = static_cast<int32_t>(v);
      acc >>= width;
      count -= width;
    }
    // The encoder pads the last byte with zero bits; anything else is not a stream it wrote.
    if (acc != 0)
      nwc::fail(NWC_E_CORRUPT_STREAM, "raw stream: nonzero padding bits after the last symbol");
  }
};

} // namespace

NWC_MODULE(RawCoder)
