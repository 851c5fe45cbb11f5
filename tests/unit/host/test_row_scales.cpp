// Row scales as the host stores them (tensor_side.hpp): the log8 format of ABI 1.6 against its
// closed form 2^(L/64), its bytes, its precision, its range and its refusals of corrupt streams.
#include "tensor_side.hpp"

#include "nwc/cpp/error.hpp"

#include <cmath>
#include <cstdint>
#include <doctest/doctest.h>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace nwc::host::detail;

namespace {

nwc_status decode_status(const std::vector<uint8_t> &bytes, int64_t rows) {
  try {
    decode_row_scales(bytes, rows, "tensor t");
  } catch (const nwc::Error &e) {
    CHECK(std::string(e.what()).find("tensor t") != std::string::npos);
    return e.code();
  }
  return NWC_OK;
}

// Stored bytes for scales: [64][i32 base][u8 shift][q...].
std::vector<uint8_t> log8_bytes(int32_t base, uint8_t shift, const std::vector<uint8_t> &q) {
  std::vector<uint8_t> b{static_cast<uint8_t>(NWC_ROW_SCALES_LOG8)};
  for (int i = 0; i < 4; ++i)
    b.push_back(static_cast<uint8_t>(static_cast<uint32_t>(base) >> (8 * i)));
  b.push_back(shift);
  b.insert(b.end(), q.begin(), q.end());
  return b;
}

} // namespace

TEST_CASE("log8 row scales: exact powers of two and their bytes") {
  std::vector<float> scales{1.0f, 2.0f, 0.5f, 0.25f};
  const auto bytes = encode_row_scales(NWC_ROW_SCALES_LOG8, scales, "tensor t");
  // base = L(0.25) = -128; q = L - base in 1/64 octaves.
  CHECK(bytes == log8_bytes(-128, 0, {128, 192, 64, 0}));
  CHECK(scales == std::vector<float>{1.0f, 2.0f, 0.5f, 0.25f});
  CHECK(decode_row_scales(bytes, 4, "tensor t") == scales);
}

TEST_CASE("log8 row scales: every grid point is 2^(L/64) to within half a float ulp") {
  std::vector<uint8_t> q(256);
  for (int i = 0; i < 256; ++i) q[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
  for (int32_t base : {-126 * 64, -1000, -64, 0, 37, 127 * 64 + 63 - 255}) {
    CAPTURE(base);
    const auto got = decode_row_scales(log8_bytes(base, 0, q), 256, "tensor t");
    for (int i = 0; i < 256; ++i) {
      const double want = std::exp2(static_cast<double>(base + i) / 64.0);
      CHECK(std::fabs(got[static_cast<size_t>(i)] - want) <=
            0.5000001 * std::ldexp(1.0, std::ilogb(want) - 23));
    }
  }
}

TEST_CASE("log8 row scales: within half a grid step of the scale, decoded as the encoder said") {
  std::mt19937 rng(7);
  // Spans of 3.9, 10 and 60 octaves: the grid coarsens (shift) only when 255 steps do not reach.
  struct Span {
    double octaves;
    int shift;
  };
  for (const Span sp : {Span{3.9, 0}, Span{10.0, 2}, Span{60.0, 4}}) {
    CAPTURE(sp.octaves);
    std::uniform_real_distribution<double> u(-sp.octaves / 2, sp.octaves / 2);
    std::vector<float> scales(500);
    for (auto &s : scales) s = static_cast<float>(0.02 * std::exp2(u(rng)));
    const std::vector<float> original = scales;
    const auto bytes = encode_row_scales(NWC_ROW_SCALES_LOG8, scales, "tensor t");
    CHECK(bytes.size() == 6 + scales.size());
    CHECK(bytes[5] == sp.shift);
    CHECK(decode_row_scales(bytes, 500, "tensor t") == scales);
    // Rounding to 1/64 octave, then (shift > 0) to the coarser grid: at most 1/128 + 2^shift/128
    // octave (the first term only when shift = 0).
    const double max_octaves = sp.shift == 0 ? 1.0 / 128 : (1.0 + (1 << sp.shift)) / 128;
    double worst = 0.0;
    for (size_t i = 0; i < scales.size(); ++i)
      worst = std::max(worst, std::fabs(std::log2(static_cast<double>(scales[i]) / original[i])));
    CHECK(worst <= max_octaves + 1e-9);
    CHECK(worst > 0.5 * max_octaves / (sp.shift == 0 ? 1 : 2)); // the bound is not loose
  }
}

TEST_CASE("log8 row scales: float's extremes clamp to the normal range, bad scales are refused") {
  std::vector<float> scales{std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                            1e-40f};
  const auto bytes = encode_row_scales(NWC_ROW_SCALES_LOG8, scales, "tensor t");
  CHECK(bytes[5] == 6);
  CHECK(scales[1] == std::numeric_limits<float>::min());
  CHECK(scales[2] == std::numeric_limits<float>::min());
  CHECK(std::isfinite(scales[0]));
  CHECK(scales[0] >= std::ldexp(1.0f, 127));
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::nanf("")}) {
    CAPTURE(bad);
    std::vector<float> s{1.0f, bad};
    try {
      encode_row_scales(NWC_ROW_SCALES_LOG8, s, "tensor t");
      FAIL("accepted");
    } catch (const nwc::Error &e) {
      CHECK(e.code() == NWC_E_INVALID_ARG);
      CHECK(std::string(e.what()).find("cannot be stored as log8") != std::string::npos);
    }
  }
}

TEST_CASE("log8 row scales: corrupt streams are refused with the tensor's name") {
  CHECK(decode_status(log8_bytes(0, 0, {1, 2, 3}), 3) == NWC_OK);
  CHECK(decode_status(log8_bytes(0, 0, {1, 2}), 3) == NWC_E_CORRUPT_STREAM);       // short
  CHECK(decode_status(log8_bytes(0, 0, {1, 2, 3, 4}), 3) == NWC_E_CORRUPT_STREAM); // long
  CHECK(decode_status(log8_bytes(0, 7, {1, 2, 3}), 3) == NWC_E_CORRUPT_STREAM);    // shift
  CHECK(decode_status(log8_bytes(-126 * 64 - 1, 0, {0}), 1) == NWC_E_CORRUPT_STREAM);
  CHECK(decode_status(log8_bytes(128 * 64, 0, {0}), 1) == NWC_E_CORRUPT_STREAM);
  CHECK(decode_status(log8_bytes(127 * 64 + 63, 0, {0}), 1) == NWC_OK);
  CHECK(decode_status(log8_bytes(127 * 64 + 63, 0, {1}), 1) == NWC_E_CORRUPT_STREAM); // > range
  CHECK(decode_status(log8_bytes(INT32_MIN, 6, {255}), 1) == NWC_E_CORRUPT_STREAM);
  CHECK(decode_status({65, 0, 0}, 1) == NWC_E_CORRUPT_STREAM); // unknown code
}
