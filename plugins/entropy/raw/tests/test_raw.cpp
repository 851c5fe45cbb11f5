// nwc.entropy.raw through its C ABI: losslessness at every width, the exact stream size, and
// rejection of corrupt streams (never a crash; run under ASan/UBSan).
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.entropy.raw";

size_t expected_size(size_t n, uint32_t w) {
  return 5 + (n * w + 7) / 8;
}

// n random symbols of exactly width w (both min and min + 2^w - 1 occur) starting at lo.
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

void check_round_trip(Instance &inst, const std::vector<int32_t> &s, uint32_t width) {
  std::vector<uint8_t> stream;
  REQUIRE(entropy_encode(inst, s, stream) == NWC_OK);
  CHECK(stream.size() == expected_size(s.size(), width));
  REQUIRE(!stream.empty());
  CHECK(stream[0] == width);
  std::vector<int32_t> back(s.size(), 12345);
  REQUIRE(entropy_decode(inst, stream, back) == NWC_OK);
  CHECK(back == s);
}

std::vector<uint8_t> header(uint8_t width, int32_t lo) {
  const auto u = static_cast<uint32_t>(lo);
  return {width, static_cast<uint8_t>(u), static_cast<uint8_t>(u >> 8),
          static_cast<uint8_t>(u >> 16), static_cast<uint8_t>(u >> 24)};
}

} // namespace

TEST_CASE("raw: descriptor and interface") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  CHECK(inst.descriptor().kind == NWC_KIND_ENTROPY_CODER);
  CHECK((inst.descriptor().flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  CHECK(inst.descriptor().option_count == 0);
  CHECK(inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE) != nullptr);
  CHECK(inst.iface<nwc_entropy_interface>("nwc.entropy/2") == nullptr);
}

TEST_CASE("raw: lossless at every width 1..32 with exact stream size") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::mt19937_64 rng(1);
  for (uint32_t w = 1; w <= 32; ++w) {
    CAPTURE(w);
    const int64_t span = static_cast<int64_t>((1ull << w) - 1);
    // A negative min, a positive min and the lowest/highest min that still fit.
    for (int64_t lo :
         {-(int64_t{1} << (w - 1)), int64_t{7}, int64_t{INT32_MIN}, int64_t{INT32_MAX} - span}) {
      if (lo + span > INT32_MAX || lo < INT32_MIN) continue;
      CAPTURE(lo);
      for (size_t n : {size_t{2}, size_t{3}, size_t{997}}) {
        CAPTURE(n);
        check_round_trip(inst, symbols_of_width(rng, n, w, lo), w);
      }
    }
  }
}

TEST_CASE("raw: edge cases") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  check_round_trip(inst, {}, 0);
  check_round_trip(inst, {42}, 0);
  check_round_trip(inst, {INT32_MIN}, 0);
  check_round_trip(inst, {INT32_MAX}, 0);
  check_round_trip(inst, std::vector<int32_t>(1000, -3), 0);
  check_round_trip(inst, {INT32_MIN, INT32_MAX}, 32);
  check_round_trip(inst, {INT32_MAX, INT32_MIN, 0, -1, 1}, 32);
  check_round_trip(inst, {-1, 0}, 1);
  // The header carries the minimum as little-endian i32.
  std::vector<uint8_t> stream;
  REQUIRE(entropy_encode(inst, {-2, 5}, stream) == NWC_OK);
  CHECK(std::vector<uint8_t>(stream.begin(), stream.begin() + 5) == header(3, -2));
}

TEST_CASE("raw: corrupt streams are rejected") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::vector<int32_t> out(4);
  std::vector<uint8_t> s;

  SUBCASE("empty") {
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("truncated header") {
    s = {4, 0, 0};
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("width 33") {
    s = header(33, 0);
    s.resize(5 + (4 * 33 + 7) / 8);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find("33") != std::string::npos);
  }
  SUBCASE("width 255") {
    s = header(255, 0);
    s.resize(200);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("payload one byte short") {
    s = header(8, 0);
    s.resize(5 + 3);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("extra byte") {
    s = header(8, 0);
    s.resize(5 + 5);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("extra byte after an all-equal stream") {
    s = header(0, 9);
    s.push_back(0);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("decoded value overflows int32") {
    s = header(1, INT32_MAX);
    s.push_back(0x02); // second symbol = INT32_MAX + 1
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find("int32") != std::string::npos);
  }
  SUBCASE("nonzero padding bits") {
    s = header(1, 0);
    s.push_back(0x10); // bit 4 lies past the 4 one-bit symbols
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
  }
  SUBCASE("wrong expected count") {
    REQUIRE(entropy_encode(inst, {1, 2, 3, 4, 5}, s) == NWC_OK);
    CHECK(entropy_decode(inst, s, out) == NWC_E_CORRUPT_STREAM);
    std::vector<int32_t> more(9);
    CHECK(entropy_decode(inst, s, more) == NWC_E_CORRUPT_STREAM);
  }
}

TEST_CASE("raw: every truncation and random byte flips never crash") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::mt19937_64 rng(7);
  for (uint32_t w : {1u, 5u, 13u, 32u}) {
    const auto sym = symbols_of_width(rng, 301, w, -100);
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
      CHECK(out.size() == sym.size());
    }
  }
}

TEST_CASE("raw: a failing sink is reported") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  std::vector<int32_t> s(100, 0);
  s[3] = 1000;
  View in(s.data(), 1, static_cast<int64_t>(s.size()));
  VecSink sink;
  sink.fail_after = 10;
  CHECK(e->encode(inst.get(), in.get(), nullptr, sink.get()) == NWC_E_IO);
}

TEST_CASE("raw: passes the SDK's entropy coder checks (nwc/testing)") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> sym(-7, 8);
  std::vector<int32_t> s(1000);
  for (auto &v : s) v = sym(rng);
  CHECK(check_entropy_coder(inst, s) == "");
}
