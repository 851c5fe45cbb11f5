// nwc.entropy.zstd through its C ABI: losslessness at every width, the narrowing choice, and
// rejection of corrupt streams (never a crash; run under ASan/UBSan).
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <zstd.h>

#include <algorithm>
#include <climits>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.entropy.zstd";

std::vector<int32_t> symbols_of_width(std::mt19937_64 &rng, size_t n, uint32_t w, int64_t lo) {
  const uint64_t top = (1ull << w) - 1;
  std::uniform_int_distribution<uint64_t> d(0, top);
  std::vector<int32_t> s(n);
  for (auto &v : s) v = static_cast<int32_t>(lo + static_cast<int64_t>(d(rng)));
  s[0] = static_cast<int32_t>(lo);
  s[n - 1] = static_cast<int32_t>(lo + static_cast<int64_t>(top));
  std::shuffle(s.begin(), s.end(), rng);
  return s;
}

uint8_t bytes_for_width(uint32_t w) {
  return w <= 8 ? 1 : w <= 16 ? 2 : 4;
}

void check_round_trip(Instance &inst, const std::vector<int32_t> &s, uint8_t bytes_per_symbol) {
  std::vector<uint8_t> stream;
  REQUIRE(entropy_encode(inst, s, stream) == NWC_OK);
  REQUIRE(stream.size() > 5);
  CHECK(stream[0] == bytes_per_symbol);
  CHECK(ZSTD_getFrameContentSize(stream.data() + 5, stream.size() - 5) ==
        s.size() * bytes_per_symbol);
  std::vector<int32_t> back(s.size(), 12345);
  REQUIRE(entropy_decode(inst, stream, back) == NWC_OK);
  CHECK(back == s);
}

// A stream with the given header around a frame of the given content.
std::vector<uint8_t> make_stream(uint8_t width, int32_t lo, const std::vector<uint8_t> &content,
                                 bool with_content_size = true) {
  const auto u = static_cast<uint32_t>(lo);
  std::vector<uint8_t> s{width, static_cast<uint8_t>(u), static_cast<uint8_t>(u >> 8),
                         static_cast<uint8_t>(u >> 16), static_cast<uint8_t>(u >> 24)};
  std::vector<uint8_t> frame(ZSTD_compressBound(content.size()));
  ZSTD_CCtx *c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, with_content_size ? 1 : 0);
  size_t n = 0;
  if (with_content_size) {
    n = ZSTD_compress2(c, frame.data(), frame.size(), content.data(), content.size());
  } else {
    // Streaming without a pledged size leaves the content size out of the frame header.
    ZSTD_inBuffer in{content.data(), content.size(), 0};
    ZSTD_outBuffer out{frame.data(), frame.size(), 0};
    size_t left = 0;
    do {
      left = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
    } while (left != 0 && !ZSTD_isError(left));
    n = out.pos;
  }
  ZSTD_freeCCtx(c);
  REQUIRE(!ZSTD_isError(n));
  s.insert(s.end(), frame.begin(), frame.begin() + static_cast<long>(n));
  return s;
}

} // namespace

TEST_CASE("zstd: descriptor and options") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_ENTROPY_CODER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 1);
  CHECK(std::string(d.options[0].key) == "level");
  CHECK((d.options[0].flags & NWC_OPTF_AFFECTS_BITSTREAM) == 0);
  CHECK(d.options[0].default_value.u.i == 9);
  CHECK(inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE) != nullptr);

  Instance zero(kId, {opt_int("level", 0)});
  CHECK(zero.status == NWC_E_INVALID_OPTION);
  Instance twenty(kId, {opt_int("level", 20)});
  CHECK(twenty.status == NWC_E_INVALID_OPTION);
  CHECK(twenty.host.last().find("level") != std::string::npos);
}

TEST_CASE("zstd: lossless at every width 1..32") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::mt19937_64 rng(2);
  for (uint32_t w = 1; w <= 32; ++w) {
    CAPTURE(w);
    const int64_t span = static_cast<int64_t>((1ull << w) - 1);
    for (int64_t lo :
         {-(int64_t{1} << (w - 1)), int64_t{7}, int64_t{INT32_MIN}, int64_t{INT32_MAX} - span}) {
      if (lo + span > INT32_MAX || lo < INT32_MIN) continue;
      CAPTURE(lo);
      for (size_t n : {size_t{2}, size_t{3}, size_t{997}})
        check_round_trip(inst, symbols_of_width(rng, n, w, lo), bytes_for_width(w));
    }
  }
}

TEST_CASE("zstd: edge cases and levels") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  check_round_trip(inst, {42}, 1);
  check_round_trip(inst, {INT32_MIN}, 1);
  check_round_trip(inst, {INT32_MAX}, 1);
  check_round_trip(inst, std::vector<int32_t>(5000, -3), 1);
  check_round_trip(inst, {INT32_MIN, INT32_MAX}, 4);
  check_round_trip(inst, {INT32_MAX, INT32_MIN, 0, -1, 1}, 4);
  check_round_trip(inst, {-1, 254}, 1);
  check_round_trip(inst, {-1, 255}, 2);
  {
    std::vector<uint8_t> stream;
    REQUIRE(entropy_encode(inst, {}, stream) == NWC_OK);
    std::vector<int32_t> none;
    CHECK(entropy_decode(inst, stream, none) == NWC_OK);
    std::vector<int32_t> one(1);
    CHECK(entropy_decode(inst, stream, one) == NWC_E_CORRUPT_STREAM);
  }
  // The level changes only the size: every level's stream decodes with the default instance.
  std::mt19937_64 rng(3);
  std::vector<int32_t> s(20000);
  std::geometric_distribution<int32_t> geo(0.3);
  for (auto &v : s) v = geo(rng) - 2;
  for (int level : {1, 19}) {
    Instance enc(kId, {opt_int("level", level)});
    REQUIRE(enc.ok());
    std::vector<uint8_t> stream;
    REQUIRE(entropy_encode(enc, s, stream) == NWC_OK);
    CHECK(stream.size() < s.size() / 2); // skewed symbols compress well below a byte each
    std::vector<int32_t> back(s.size());
    REQUIRE(entropy_decode(inst, stream, back) == NWC_OK);
    CHECK(back == s);
  }
}

TEST_CASE("zstd: corrupt streams are rejected") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::vector<int32_t> out(4);
  const std::vector<uint8_t> four{1, 2, 3, 4};

  SUBCASE("empty") {
    CHECK(entropy_decode(inst, std::vector<uint8_t>{}, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("header only") {
    CHECK(entropy_decode(inst, std::vector<uint8_t>{1, 0, 0, 0, 0}, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("bad width byte") {
    for (int wb : {0, 3, 8, 255}) {
      const auto w = static_cast<uint8_t>(wb);
      auto s = make_stream(w, 0, std::vector<uint8_t>(4 * std::max<size_t>(w, 1)));
      CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
    }
  }
  SUBCASE("frame of the wrong size") {
    CHECK(entropy_decode(inst, make_stream(1, 0, {1, 2, 3}), out) == NWC_E_CORRUPT_STREAM);
    CHECK(entropy_decode(inst, make_stream(1, 0, {1, 2, 3, 4, 5}), out) == NWC_E_CORRUPT_STREAM);
    CHECK(entropy_decode(inst, make_stream(2, 0, four), out) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find("expected 8") != std::string::npos);
  }
  SUBCASE("frame without a content size") {
    CHECK(entropy_decode(inst, make_stream(1, 0, four, false), out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("extra bytes after the frame") {
    auto s = make_stream(1, 0, four);
    REQUIRE(entropy_decode(inst, s, out) == NWC_OK);
    s.push_back(0);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
    auto twice = make_stream(1, 0, four);
    const auto again = make_stream(1, 0, four);
    twice.insert(twice.end(), again.begin() + 5, again.end());
    CHECK(entropy_decode(inst, twice, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("garbage after the header") {
    std::vector<uint8_t> s{1, 0, 0, 0, 0};
    for (int i = 0; i < 64; ++i) s.push_back(static_cast<uint8_t>(i * 37 + 11));
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("decoded value overflows int32") {
    CHECK(entropy_decode(inst, make_stream(1, INT32_MAX, {0, 0, 1, 0}), out) ==
          NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find("int32") != std::string::npos);
  }
}

TEST_CASE("zstd: every truncation and random byte flips never crash") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::mt19937_64 rng(9);
  for (uint32_t w : {3u, 12u, 30u}) {
    auto sym = symbols_of_width(rng, 401, w, -50);
    std::vector<uint8_t> stream;
    REQUIRE(entropy_encode(inst, sym, stream) == NWC_OK);
    std::vector<int32_t> out(sym.size());
    for (size_t k = 0; k < stream.size(); ++k) {
      const std::vector<uint8_t> cut(stream.begin(), stream.begin() + static_cast<long>(k));
      CHECK(entropy_decode(inst, cut, out) == NWC_E_CORRUPT_STREAM);
    }
    std::uniform_int_distribution<size_t> pos(0, stream.size() - 1);
    std::uniform_int_distribution<int> bit(0, 7);
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<uint8_t> bad = stream;
      const int flips = 1 + trial % 4;
      for (int f = 0; f < flips; ++f) bad[pos(rng)] ^= static_cast<uint8_t>(1u << bit(rng));
      const nwc_status st = entropy_decode(inst, bad, out);
      CHECK((st == NWC_OK || st == NWC_E_CORRUPT_STREAM));
    }
  }
}
