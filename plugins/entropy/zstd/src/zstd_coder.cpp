// nwc.entropy.zstd — (symbol - min) narrowed to 1, 2 or 4 little-endian bytes, then one zstd
// frame. Stream: u8 bytes-per-symbol (1, 2 or 4), i32 LE min, one zstd frame whose declared content
// size is n * bytes-per-symbol.
#include "nwc/cpp/plugin.hpp"

#include <zstd.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr size_t kHeaderBytes = 5;

struct CCtxDeleter {
  void operator()(ZSTD_CCtx *c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx *d) const { ZSTD_freeDCtx(d); }
};

// n * width in bytes, or fails if that does not fit in size_t.
size_t raw_bytes(int64_t n, size_t width) {
  if (static_cast<uint64_t>(n) > std::numeric_limits<size_t>::max() / width)
    nwc::fail(NWC_E_INVALID_ARG, "symbol count " + std::to_string(n) + " is too large");
  return static_cast<size_t>(n) * width;
}

class ZstdCoder final : public nwc::EntropyCoder {
public:
  static constexpr const char *id = "nwc.entropy.zstd";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "zstd";
  static constexpr const char *description =
      "General-purpose zstd compression of the symbols, no probability model. Subtracts the "
      "minimum symbol, narrows the differences to 1, 2 or 4 little-endian bytes (the fewest that "
      "hold max - min), and compresses them as one zstd frame. A strong baseline for skewed "
      "symbol distributions that needs no side model.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::int_option("level", 9, 1, 19,
                              "zstd compression level: higher is smaller and slower to encode. "
                              "Decoding speed and decodability do not depend on it."));

  explicit ZstdCoder(const nwc::Options &opts) : level_(static_cast<int>(opts.get_int("level"))) {}

  void encode(nwc::ConstTensor<int32_t> symbols, const nwc_cdf_model *, nwc::Sink &out) override {
    const int64_t n = symbols.size();
    int32_t lo = 0, hi = 0;
    if (n > 0) {
      const auto [mn, mx] = std::minmax_element(symbols.data, symbols.data + n);
      lo = *mn;
      hi = *mx;
    }
    const uint64_t span =
        static_cast<uint64_t>(static_cast<int64_t>(hi) - static_cast<int64_t>(lo));
    const size_t width = span <= 0xffu ? 1 : span <= 0xffffu ? 2 : 4;

    std::vector<uint8_t> narrow(raw_bytes(n, width));
    for (int64_t i = 0; i < n; ++i) {
      const auto d =
          static_cast<uint32_t>(static_cast<int64_t>(symbols.data[i]) - static_cast<int64_t>(lo));
      uint8_t *p = narrow.data() + static_cast<size_t>(i) * width;
      for (size_t b = 0; b < width; ++b) p[b] = static_cast<uint8_t>(d >> (8 * b));
    }

    if (!cctx_) cctx_.reset(ZSTD_createCCtx());
    if (!cctx_) nwc::fail(NWC_E_NOMEM, "zstd: cannot create a compression context");
    std::vector<uint8_t> frame(ZSTD_compressBound(narrow.size()));
    // ZSTD_compressCCtx writes the content size into the frame header, which decode() requires.
    const size_t got = ZSTD_compressCCtx(cctx_.get(), frame.data(), frame.size(), narrow.data(),
                                         narrow.size(), level_);
    if (ZSTD_isError(got))
      nwc::fail(NWC_E_INTERNAL, std::string("zstd compression failed: ") + ZSTD_getErrorName(got));

    std::array<uint8_t, kHeaderBytes> header{};
    header[0] = static_cast<uint8_t>(width);
    const auto ulo = static_cast<uint32_t>(lo);
    for (int i = 0; i < 4; ++i) header[1 + i] = static_cast<uint8_t>(ulo >> (8 * i));
    out.write(header.data(), header.size());
    out.write(frame.data(), got);
  }

  void decode(nwc::Bytes stream, const nwc_cdf_model *, nwc::Tensor<int32_t> symbols) override {
    const int64_t n = symbols.size();
    if (stream.size < kHeaderBytes)
      nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: " + std::to_string(stream.size) +
                                          " bytes, shorter than its 5-byte header");
    const size_t width = stream.data[0];
    if (width != 1 && width != 2 && width != 4)
      nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: bytes per symbol is " + std::to_string(width) +
                                          ", expected 1, 2 or 4");
    uint32_t ulo = 0;
    for (int i = 0; i < 4; ++i) ulo |= static_cast<uint32_t>(stream.data[1 + i]) << (8 * i);
    const int64_t lo = static_cast<int32_t>(ulo);

    const uint8_t *src = stream.data + kHeaderBytes;
    const size_t src_size = stream.size - kHeaderBytes;
    const size_t expected = raw_bytes(n, width);
    // Check the declared size and the frame extent before decompressing anything.
    const unsigned long long declared = ZSTD_getFrameContentSize(src, src_size);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
      nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: not a valid zstd frame header");
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN)
      nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: frame does not declare its content size");
    if (declared != expected)
      nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: frame holds " + std::to_string(declared) +
                                          " bytes, expected " + std::to_string(expected) + " for " +
                                          std::to_string(n) + " symbols");
    const size_t frame_size = ZSTD_findFrameCompressedSize(src, src_size);
    if (ZSTD_isError(frame_size))
      nwc::fail(NWC_E_CORRUPT_STREAM, std::string("zstd stream: ") + ZSTD_getErrorName(frame_size));
    if (frame_size != src_size)
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "zstd stream: " + std::to_string(src_size - frame_size) + " bytes after the frame");

    if (!dctx_) dctx_.reset(ZSTD_createDCtx());
    if (!dctx_) nwc::fail(NWC_E_NOMEM, "zstd: cannot create a decompression context");
    std::vector<uint8_t> &narrow = narrow_; // reused from call to call: no fresh pages per block
    narrow.resize(expected);
    const size_t got =
        ZSTD_decompressDCtx(dctx_.get(), narrow.data(), narrow.size(), src, src_size);
    if (ZSTD_isError(got))
      nwc::fail(NWC_E_CORRUPT_STREAM, std::string("zstd stream: ") + ZSTD_getErrorName(got));
    if (got != expected)
      nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: decompressed " + std::to_string(got) +
                                          " bytes, expected " + std::to_string(expected));

    constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
    const int64_t top = static_cast<int64_t>((uint64_t{1} << (8 * width)) - 1);
    if (lo + top <= kMax) { // every symbol fits: widen without a check per symbol
      const uint8_t *__restrict p = narrow.data();
      int32_t *__restrict out = symbols.data;
      const auto base = static_cast<uint32_t>(lo); // lo + d <= INT32_MAX: no wrap in int32
      if (width == 1)
        for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(base + p[i]);
      else if (width == 2)
        for (int64_t i = 0; i < n; ++i)
          out[i] =
              static_cast<int32_t>(base + (p[2 * i] | static_cast<uint32_t>(p[2 * i + 1]) << 8));
      else
        for (int64_t i = 0; i < n; ++i) {
          const uint8_t *q = p + 4 * i;
          out[i] = static_cast<int32_t>(base + (q[0] | static_cast<uint32_t>(q[1]) << 8 |
                                                static_cast<uint32_t>(q[2]) << 16 |
                                                static_cast<uint32_t>(q[3]) << 24));
        }
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t *p = narrow.data() + static_cast<size_t>(i) * width;
      uint32_t d = 0;
      for (size_t b = 0; b < width; ++b) d |= static_cast<uint32_t>(p[b]) << (8 * b);
      const int64_t v = lo + static_cast<int64_t>(d);
      if (v > kMax) // lo >= INT32_MIN and d >= 0
        nwc::fail(NWC_E_CORRUPT_STREAM, "zstd stream: symbol " + std::to_string(i) +
                                            " decodes to " + std::to_string(v) + ", outside int32");
      symbols.data[i] = static_cast<int32_t>(v);
    }
  }

private:
  int level_;
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx_;
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx_;
  std::vector<uint8_t> narrow_;
};

} // namespace

NWC_MODULE(ZstdCoder)
