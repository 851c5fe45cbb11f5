// dtype.cpp — element sizes, names and float conversions (fp16 / bf16 done bit by bit so that the
// result does not depend on the compiler's or CPU's half-precision support).
#include "nwc/formats/dtype.hpp"

#include "nwc/cpp/error.hpp"

#include <bit>
#include <cmath>
#include <cstring>

namespace nwc {

static_assert(std::endian::native == std::endian::little,
              "stored tensors are little-endian; a big-endian port needs byte swaps here");

size_t dtype_size(DType t) {
  switch (t) {
  case DType::F32:
    return 4;
  case DType::F16:
    return 2;
  case DType::BF16:
    return 2;
  case DType::I8:
    return 1;
  case DType::U8:
    return 1;
  case DType::I32:
    return 4;
  case DType::I64:
    return 8;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
  case DType::F32:
    return "F32";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::I8:
    return "I8";
  case DType::U8:
    return "U8";
  case DType::I32:
    return "I32";
  case DType::I64:
    return "I64";
  }
  return "?";
}

bool dtype_from_name(std::string_view name, DType &out) {
  static constexpr DType all[] = {DType::F32, DType::F16, DType::BF16, DType::I8,
                                  DType::U8,  DType::I32, DType::I64};
  for (DType t : all) {
    if (dtype_name(t) == name) {
      out = t;
      return true;
    }
  }
  return false;
}

bool dtype_from_code(uint32_t code, DType &out) {
  switch (code) {
  case NWC_DTYPE_F32:
  case NWC_DTYPE_F16:
  case NWC_DTYPE_BF16:
  case NWC_DTYPE_I8:
  case NWC_DTYPE_U8:
  case NWC_DTYPE_I32:
  case NWC_DTYPE_I64:
    out = static_cast<DType>(code);
    return true;
  default:
    return false;
  }
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  uint32_t bits;
  if (exp == 31)
    bits = sign | 0x7f800000u | (mant << 13); // inf, or NaN keeping its payload
  else
    bits = sign | ((exp + 112u) << 23) | (mant << 13); // rebias 15 -> 127
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN stays a (quiet) NaN
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u); // >= 65520 rounds to inf
  if (ax >= 0x38800000u) {
    // Normal half: drop 13 mantissa bits, round to nearest even. A carry out of the mantissa
    // correctly bumps the exponent.
    uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13));
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (ax <= 0x33000000u) return sign; // <= 2^-25: rounds (ties to even) to zero
  // Subnormal half: value = m * 2^(e-150); in units of 2^-24 that is m >> (126 - e).
  const uint32_t e = ax >> 23;
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e; // 14..24
  uint32_t h = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h; // may become the smallest normal: still right
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_f32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u); // quiet
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u); // ties to even; overflow gives inf
  return static_cast<uint16_t>(rounded >> 16);
}

namespace {
template <typename T> void ints_to_float(const void *src, size_t n, float *dst) {
  const auto *p = static_cast<const uint8_t *>(src);
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}
} // namespace

void to_float(DType t, const void *src, size_t n, float *dst) {
  if (n == 0) return;
  const auto *p = static_cast<const uint8_t *>(src);
  switch (t) {
  case DType::F32:
    std::memcpy(dst, src, n * 4);
    return;
  case DType::F16:
  case DType::BF16:
    for (size_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      dst[i] = t == DType::F16 ? f16_to_f32(v) : bf16_to_f32(v);
    }
    return;
  case DType::I8:
    ints_to_float<int8_t>(src, n, dst);
    return;
  case DType::U8:
    ints_to_float<uint8_t>(src, n, dst);
    return;
  case DType::I32:
    ints_to_float<int32_t>(src, n, dst);
    return;
  case DType::I64:
    ints_to_float<int64_t>(src, n, dst);
    return;
  }
  fail(NWC_E_UNSUPPORTED_DTYPE,
       "to_float: unknown dtype code " + std::to_string(static_cast<uint32_t>(t)));
}

void from_float(DType t, const float *src, size_t n, void *dst) {
  auto *p = static_cast<uint8_t *>(dst);
  switch (t) {
  case DType::F32:
    if (n) std::memcpy(dst, src, n * 4);
    return;
  case DType::F16:
  case DType::BF16:
    for (size_t i = 0; i < n; ++i) {
      const uint16_t v = t == DType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
      std::memcpy(p + 2 * i, &v, 2);
    }
    return;
  default:
    fail(NWC_E_UNSUPPORTED_DTYPE, "from_float: cannot convert float to " +
                                      std::string(dtype_name(t)) + " (expected F32, F16 or BF16)");
  }
}

} // namespace nwc
