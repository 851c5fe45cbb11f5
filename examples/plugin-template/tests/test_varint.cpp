// org.example.entropy.varint's own test, out of tree: the checks every entropy coder must pass
// (deterministic, lossless, every truncated stream refused) from the SDK's installed harness, the
// sizes the format promises, and hostile streams refused. Exits non-zero with one line per
// failure. Run by `ctest`.
#include "nwc/testing/stage_harness.hpp"

#include <climits>
#include <cstdio>
#include <random>

namespace t = nwc::test;

int main() {
  int failures = 0;
  auto expect = [&](bool ok, const std::string &what) {
    if (!ok) {
      std::fprintf(stderr, "test_varint: %s\n", what.c_str());
      ++failures;
    }
  };
  t::Instance e("org.example.entropy.varint");
  expect(e.ok(), "create: " + e.host.last());
  if (!e.ok()) return 1;

  std::mt19937 rng(11);
  std::vector<int32_t> small(1000), wide(300);
  for (int32_t &s : small) s = static_cast<int32_t>(rng() % 128) - 64; // [-64, 63]: one byte each
  for (int32_t &s : wide) s = static_cast<int32_t>(rng());
  wide[0] = INT32_MIN;
  wide[1] = INT32_MAX;
  for (const auto *symbols : {&small, &wide}) {
    const std::string why = t::check_entropy_coder(e, *symbols);
    expect(why.empty(), why);
  }
  std::vector<uint8_t> stream;
  expect(t::entropy_encode(e, small, stream) == NWC_OK && stream.size() == small.size(),
         "1000 symbols in [-64, 63] should take 1000 bytes, took " + std::to_string(stream.size()));
  expect(t::entropy_encode(e, {INT32_MIN}, stream) == NWC_OK && stream.size() == 5,
         "INT32_MIN should take 5 bytes");

  // Hostile streams: a sixth continuation byte, a value above 2^32 - 1, a trailing byte.
  std::vector<int32_t> one(1);
  expect(t::entropy_decode(e, std::vector<uint8_t>{0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, one) ==
             NWC_E_CORRUPT_STREAM,
         "a 6-byte varint was accepted");
  expect(t::entropy_decode(e, std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff, 0x1f}, one) ==
             NWC_E_CORRUPT_STREAM,
         "a value above 2^32 - 1 was accepted");
  expect(t::entropy_decode(e, std::vector<uint8_t>{0x02, 0x00}, one) == NWC_E_CORRUPT_STREAM,
         "a byte after the last symbol was accepted");
  if (failures == 0) std::puts("test_varint: all checks passed");
  return failures == 0 ? 0 : 1;
}
