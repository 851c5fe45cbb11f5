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
    CHECK(bytes.size() <= 6 + scales.size()); // plain or Rice-coded, whichever is smaller
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
  CHECK(decode_status({65, 0, 0}, 1) == NWC_E_CORRUPT_STREAM); // Rice form without its header
  CHECK(decode_status({66, 0, 0, 0, 0, 0, 0}, 1) == NWC_E_CORRUPT_STREAM); // unknown code
}

namespace {

// 2^(L/64) for each L: exactly the log8 grid's values.
std::vector<float> grid_scales(const std::vector<int32_t> &levels) {
  std::vector<float> out;
  for (int32_t L : levels) out.push_back(static_cast<float>(std::exp2(L / 64.0)));
  return out;
}

// The Rice-coded stream of L = {0, 2, 1, 1, 1, 3, 1, 0, 1, 1}, worked out by hand: base 0, shift
// 0, center 1 (the median), so zigzag(q - 1) = {1, 2, 0, 0, 0, 4, 0, 1, 0, 0}; k = 0 costs
// 8 + 10 = 18 bits (k = 1: 23), written as unary v, then a zero, bits from each byte's LSB:
// 10 110 0 0 0 | 11110 0 10 | 0 0 -> 0x0D, 0x4F, 0x00.
const std::vector<uint8_t> kRiceExample{65, 0, 0, 0, 0, 0, 1, 0, 0x0D, 0x4F, 0x00};
const std::vector<int32_t> kRiceExampleLevels{0, 2, 1, 1, 1, 3, 1, 0, 1, 1};

} // namespace

TEST_CASE("log8 row scales: clustered scales are Rice-coded, bit for bit as worked out by hand") {
  std::vector<float> scales = grid_scales(kRiceExampleLevels);
  const std::vector<float> original = scales;
  const auto bytes = encode_row_scales(NWC_ROW_SCALES_LOG8, scales, "tensor t");
  CHECK(bytes == kRiceExample); // 11 bytes against the plain form's 16
  CHECK(scales == original);
  CHECK(decode_row_scales(bytes, 10, "tensor t") == original);
  // Re-storing fine-tuned scales asks for the form's ABI code, log8, not the container's 65.
  CHECK(row_scales_storage(bytes) == NWC_ROW_SCALES_LOG8);
  CHECK(row_scales_storage({NWC_DTYPE_F16, 0, 60}) == NWC_DTYPE_F16);
}

TEST_CASE("log8 row scales: the Rice form is kept only when it is smaller") {
  std::mt19937 rng(11);
  // Rows of real layers spread over a fraction of an octave: ~6.5 bits a row instead of 8.
  std::normal_distribution<double> octaves(0.0, 0.2);
  std::vector<float> scales(600);
  for (auto &s : scales) s = static_cast<float>(0.03 * std::exp2(octaves(rng)));
  const auto bytes = encode_row_scales(NWC_ROW_SCALES_LOG8, scales, "tensor t");
  CHECK(bytes[0] == 65);
  CHECK(bytes.size() * 8 < (6 + scales.size()) * 8 - scales.size()); // > 1 bit a row saved
  CHECK(decode_row_scales(bytes, 600, "tensor t") == scales);
  // Spread evenly over the 256 steps, Rice codes cost more than a byte: the plain form is kept.
  std::vector<int32_t> even;
  for (int32_t L = 0; L < 256; ++L) even.push_back(L);
  std::vector<float> flat = grid_scales(even);
  const auto plain = encode_row_scales(NWC_ROW_SCALES_LOG8, flat, "tensor t");
  CHECK(plain[0] == NWC_ROW_SCALES_LOG8);
  CHECK(plain.size() == 6 + 256);
  // One row: the 8-byte Rice header does not pay.
  std::vector<float> one{0.5f};
  CHECK(encode_row_scales(NWC_ROW_SCALES_LOG8, one, "tensor t").size() == 7);
}

TEST_CASE("log8 row scales: corrupt Rice-coded streams are refused with the tensor's name") {
  CHECK(decode_status(kRiceExample, 10) == NWC_OK);
  auto with = [](size_t at, uint8_t value) {
    auto b = kRiceExample;
    b[at] = value;
    return b;
  };
  CHECK(decode_status(with(7, 9), 10) == NWC_E_CORRUPT_STREAM);     // k above 8
  CHECK(decode_status(with(10, 0x80), 10) == NWC_E_CORRUPT_STREAM); // padding bits set
  CHECK(decode_status(with(6, 0), 10) == NWC_E_CORRUPT_STREAM);     // center 0: row 0 at q = -1
  auto shorter = kRiceExample;
  shorter.pop_back();
  CHECK(decode_status(shorter, 10) == NWC_E_CORRUPT_STREAM); // ends before the last row
  auto longer = kRiceExample;
  longer.push_back(0);
  CHECK(decode_status(longer, 10) == NWC_E_CORRUPT_STREAM);       // a byte more than the rows use
  CHECK(decode_status(kRiceExample, 17) == NWC_E_CORRUPT_STREAM); // 6 padding bits, 7 rows more
  // k = 8 allows quotients up to 510 >> 8 = 1: a third one-bit is a row 256+ steps away.
  CHECK(decode_status({65, 0, 0, 0, 0, 0, 0, 8, 0x07}, 1) == NWC_E_CORRUPT_STREAM);
  // A grid index above float's range: base at the top, q = center + 1.
  const auto top = static_cast<uint32_t>(127 * 64 + 63);
  const std::vector<uint8_t> above{
      65, static_cast<uint8_t>(top), static_cast<uint8_t>(top >> 8), 0, 0, 0, 0, 0, 0x03};
  CHECK(decode_status(above, 1) == NWC_E_CORRUPT_STREAM);
  const std::vector<uint8_t> at_top{
      65, static_cast<uint8_t>(top), static_cast<uint8_t>(top >> 8), 0, 0, 0, 0, 0, 0x00};
  CHECK(decode_status(at_top, 1) == NWC_OK);
}
