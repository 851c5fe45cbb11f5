// Element types: sizes, names and the fp16 / bf16 conversions against known bit patterns.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/dtype.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <doctest/doctest.h>
#include <limits>
#include <vector>

using namespace nwc;

static uint32_t bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

TEST_CASE("dtype sizes, names and codes") {
  CHECK(dtype_size(DType::F32) == 4);
  CHECK(dtype_size(DType::F16) == 2);
  CHECK(dtype_size(DType::BF16) == 2);
  CHECK(dtype_size(DType::I8) == 1);
  CHECK(dtype_size(DType::U8) == 1);
  CHECK(dtype_size(DType::I32) == 4);
  CHECK(dtype_size(DType::I64) == 8);
  for (DType t :
       {DType::F32, DType::F16, DType::BF16, DType::I8, DType::U8, DType::I32, DType::I64}) {
    DType back = DType::F32;
    REQUIRE(dtype_from_name(dtype_name(t), back));
    CHECK(back == t);
    DType from_code = DType::F32;
    REQUIRE(dtype_from_code(static_cast<uint32_t>(t), from_code));
    CHECK(from_code == t);
  }
  CHECK(dtype_name(DType::BF16) == "BF16");
  DType d = DType::I8;
  CHECK_FALSE(dtype_from_name("F64", d));
  CHECK_FALSE(dtype_from_name("f32", d));
  CHECK_FALSE(dtype_from_code(NWC_DTYPE_U4X2, d));
  CHECK_FALSE(dtype_from_code(0, d));
  CHECK(d == DType::I8); // untouched on failure
}

TEST_CASE("fp16 encodes known values") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.5f) == 0xc100);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(0.0f) == 0x0000);
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);    // smallest subnormal
  CHECK(f32_to_f16(std::ldexp(1.0f, -14)) == 0x0400);    // smallest normal
  CHECK(f32_to_f16(std::ldexp(1023.0f, -24)) == 0x03ff); // largest subnormal
  CHECK(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f32_to_f16(-std::numeric_limits<float>::infinity()) == 0xfc00);
  CHECK(f32_to_f16(1e10f) == 0x7c00);    // overflow saturates to inf
  CHECK(f32_to_f16(65519.0f) == 0x7bff); // below the halfway point to 65536
  CHECK(f32_to_f16(65520.0f) == 0x7c00); // halfway, ties to even -> inf
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
}

TEST_CASE("fp16 rounds to nearest even") {
  // 1 + 2^-11 is halfway between 1 (even mantissa) and 1 + 2^-10: rounds down.
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up.
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  // Just above halfway rounds up.
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  // Subnormal ties: 2^-25 (halfway to the smallest subnormal) -> 0; 3*2^-25 -> 2*2^-24.
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25) * 1.0001f) == 0x0001);
  CHECK(f32_to_f16(3 * std::ldexp(1.0f, -25)) == 0x0002);
  CHECK(f32_to_f16(-std::ldexp(1.0f, -26)) == 0x8000);
  // Rounding up from the largest subnormal gives the smallest normal.
  CHECK(f32_to_f16(std::ldexp(1023.5f, -24)) == 0x0400);
}

TEST_CASE("fp16 decodes known values and round-trips every half") {
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0xc100) == -2.5f);
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x8001) == -std::ldexp(1.0f, -24));
  CHECK(std::isinf(f16_to_f32(0x7c00)));
  CHECK(f16_to_f32(0xfc00) < 0);
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  CHECK(bits(f16_to_f32(0x8000)) == 0x80000000u);
  int mismatches = 0;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const auto hv = static_cast<uint16_t>(h);
    const float f = f16_to_f32(hv);
    if (std::isnan(f)) {
      if (!std::isnan(f16_to_f32(f32_to_f16(f)))) ++mismatches;
      continue;
    }
    if (f32_to_f16(f) != hv) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bf16 conversions") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(-2.5f) == 0xc020);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(bf16_to_f32(0xc020) == -2.5f);
  CHECK(f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lives only in the low bits must not become inf.
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
  // Ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1; 1 + 3*2^-8 -> 1 + 2^-6.
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80); // rounds up to inf
  CHECK(f32_to_bf16(std::ldexp(1.0f, -133)) == 0x0001);            // subnormal bf16
  for (uint32_t b = 0; b < 0x10000; b += 7) {
    const float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (!std::isnan(f)) CHECK(f32_to_bf16(f) == b);
  }
}

TEST_CASE("to_float and from_float") {
  const int8_t i8[] = {-128, -1, 0, 127};
  const uint8_t u8[] = {0, 1, 200, 255};
  const int32_t i32[] = {-100000, 0, 7, 2147483647};
  const int64_t i64[] = {-5, 0, 1ll << 40, 3};
  float out[4];
  to_float(DType::I8, i8, 4, out);
  CHECK(out[0] == -128.0f);
  CHECK(out[3] == 127.0f);
  to_float(DType::U8, u8, 4, out);
  CHECK(out[2] == 200.0f);
  CHECK(out[3] == 255.0f);
  to_float(DType::I32, i32, 4, out);
  CHECK(out[0] == -100000.0f);
  CHECK(out[2] == 7.0f);
  to_float(DType::I64, i64, 4, out);
  CHECK(out[0] == -5.0f);
  CHECK(out[2] == 1099511627776.0f);

  const std::vector<float> src = {1.0f, -2.5f, 0.1f, 65504.0f, 3.0e-6f};
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<uint8_t> buf(src.size() * dtype_size(t));
    from_float(t, src.data(), src.size(), buf.data());
    std::vector<float> back(src.size());
    to_float(t, buf.data(), src.size(), back.data());
    for (size_t i = 0; i < src.size(); ++i) {
      float expect = src[i];
      if (t == DType::F16) expect = f16_to_f32(f32_to_f16(src[i]));
      if (t == DType::BF16) expect = bf16_to_f32(f32_to_bf16(src[i]));
      CHECK(back[i] == expect);
    }
  }
  uint16_t h;
  const float pt1 = 0.1f;
  from_float(DType::F16, &pt1, 1, &h);
  CHECK(h == 0x2e66); // 0.1 in half precision
  int8_t dst[1];
  CHECK_THROWS_AS(from_float(DType::I8, src.data(), 1, dst), Error);
}
