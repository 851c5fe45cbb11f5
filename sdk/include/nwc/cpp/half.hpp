// nwc/cpp/half.hpp — IEEE binary16 (fp16) conversions for plugins that store fp16 side information
// (group scales, zero points): exact decoding to double, and encoding with a chosen rounding, the
// same bits on every machine (no hardware conversion instructions, whose availability varies).
// Header-only, like the other C++ helpers; compiled into each plugin.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace nwc {

inline constexpr double kHalfMax = 65504.0; // the largest finite fp16 value

// up/down: toward +inf / -inf.
enum class HalfRound { nearest_even, up, down };

// The exact value of fp16 bits h (infinities and NaN included).
inline double half_to_double(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  double mag;
  if (exp == 0)
    mag = std::ldexp(static_cast<double>(man), -24);
  else if (exp == 31)
    mag = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    mag = std::ldexp(static_cast<double>(man + 1024), exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

// The bits of the fp16 value that finite x rounds to; 0x7c00 | sign (infinity) when it overflows.
// nearest_even is torch's float -> half conversion.
inline uint16_t double_to_half(double x, HalfRound mode = HalfRound::nearest_even) {
  const bool neg = std::signbit(x);
  const double a = std::fabs(x);
  // The quantum (ulp) of a in fp16: 2^-24 for subnormals, else 2^(e - 10) for a in [2^e, 2^(e+1)).
  int e = -15;
  if (a >= std::ldexp(1.0, -14)) {
    std::frexp(a, &e); // a = f * 2^e, f in [0.5, 1)
    e -= 1;
  }
  const int qexp = e < -14 ? -24 : e - 10;
  const double n = std::ldexp(a, -qexp); // exact: scaling by a power of two
  double m;
  const bool toward_larger_mag =
      (mode == HalfRound::up && !neg) || (mode == HalfRound::down && neg);
  if (mode == HalfRound::nearest_even) {
    m = std::floor(n);
    const double frac = n - m;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(m, 2.0) != 0.0)) m += 1.0;
  } else {
    m = toward_larger_mag ? std::ceil(n) : std::floor(n);
  }
  uint32_t bits;
  if (qexp == -24) {
    bits = static_cast<uint32_t>(m); // m == 1024 is the smallest normal, encoded the same way
  } else {
    // m in [1024, 2048]; 2048 carries into the exponent through the addition.
    const double mm = std::fmin(m, 2048.0);
    bits = (static_cast<uint32_t>(e + 15) << 10) + (static_cast<uint32_t>(mm) - 1024u);
    if (e + 15 >= 31) bits = 0x7c00u;
  }
  if (bits > 0x7c00u) bits = 0x7c00u;
  return static_cast<uint16_t>(bits | (neg ? 0x8000u : 0u));
}

} // namespace nwc
