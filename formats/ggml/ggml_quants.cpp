// ggml_quants.cpp — ggml's block quantizers and dequantizers, reimplemented for nwc.quant.ggml.
//
// Written from ggml's algorithms (ggml/src/ggml-quants.c: quantize_row_*_ref, quantize_*_impl,
// make_qx_quants, make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants,
// quantize_row_iq4_nl_impl, dequantize_row_*): the same searches with the same float arithmetic,
// evaluated in the same order and types (float products and sums, int codes converted to float
// where C converts them), so the bytes and floats are identical. Comments name the ggml function
// each piece follows; the tests compare every type with libggml-base.so.
#include "ggml_quants.hpp"

#include "ggml_blocks.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

namespace nwc::ggml {

namespace {

constexpr float kGroupMaxEps = 1e-15f; // GROUP_MAX_EPS
constexpr int QK = 256;                // QK_K

// The non-linear levels of iq4_nl and iq4_xs (ggml-common.h kvalues_iq4nl).
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

inline float fl(int v) {
  return static_cast<float>(v);
}

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ggml's nearest_int: round to nearest, ties to even, by adding 1.5·2^23 and reading the low
// mantissa bits (valid for |f| <= 2^22; outside that range it returns what ggml returns).
inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// C's float -> int8/uint8 conversions as the x86-64 reference build executes them: truncation to
// int32 (cvttss2si / cvttps2dq: NaN and out-of-range values give INT32_MIN), then the low byte.
inline int32_t trunc_i32(float v) {
  if (!(v > -2147483904.0f && v < 2147483648.0f)) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(v);
}
inline int8_t to_i8(float v) {
  return static_cast<int8_t>(trunc_i32(v));
}
inline uint8_t to_u8(float v) {
  return static_cast<uint8_t>(trunc_i32(v));
}

inline void store_half(uint8_t *p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}
inline float load_half(const uint8_t *p) {
  return fp16_to_fp32(load_u16(p));
}

// ---- ggml's scale searches ---------------------------------------------------------------------

// make_qx_quants with rmse_type = 1: symmetric codes L in [0, 2·nmax) around nmax, weights qw (or
// x² without them); returns the scale.
float make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  auto clampq = [nmax](int l) { return std::max(-nmax, std::min(nmax - 1, l)); };
  float iscale = fl(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clampq(nearest_int(iscale * x[i]));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * fl(l);
    suml2 += w * fl(l) * fl(l);
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(fl(nmax) + 0.1f * fl(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampq(nearest_int(iscale * x[i]));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * fl(l);
      suml2 += w * fl(l) * fl(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + clampq(nearest_int(iscale * x[i])));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_q3_quants with do_rmse = true (q3_K without importance).
float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  auto clampq = [nmax](int l) { return std::max(-nmax, std::min(nmax - 1, l)); };
  const float iscale = fl(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clampq(nearest_int(iscale * x[i]));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * fl(l);
    suml2 += w * fl(l) * fl(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * fl(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * fl(L[i]) * fl(L[i]);
        const int new_l = clampq(nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * fl(new_l);
          sl2 += w * fl(new_l) * fl(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// make_qkx2_quants (weights required) and make_qkx3_quants (weights or x²): codes L in [0, nmax]
// with a scale and a non-positive minimum (*the_min = -min), searched over nstep + 1 grids.
// `qkx3` selects make_qkx3_quants' degenerate test (max <= min instead of max == min).
float make_qkx_quants(bool qkx3, int n, int nmax, const float *x, const float *weights, uint8_t *L,
                      float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                      bool use_mad) {
  auto weight = [&](int i) { return weights ? weights[i] : x[i] * x[i]; };
  float min = x[0];
  float max = x[0];
  float sum_w = weight(0);
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weight(i);
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (qkx3 ? max <= min : max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = fl(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * fl(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weight(i) * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * fl(is) + fl(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weight(i);
      sum_l += w * fl(l);
      sum_l2 += w * fl(l) * fl(l);
      sum_xl += w * fl(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * fl(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weight(i) * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qp_quants: non-negative codes L in [0, nmax] for non-negative x (sub-block scales or
// minimums), weighted by quant_weights; returns the scale.
float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = fl(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * fl(L[i]);
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * fl(is) + fl(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * fl(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * fl(l);
    suml2 += w * fl(l) * fl(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * fl(L[i]);
      float sl2 = suml2 - w * fl(L[i]) * fl(L[i]);
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * fl(new_l);
          sl2 += w * fl(new_l) * fl(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// best_index_int8: index of the level nearest to x in a sorted table (ties to the upper level).
inline int best_index_int8(int n, const int8_t *val, float x) {
  if (x <= fl(val[0])) return 0;
  if (x >= fl(val[n - 1])) return n - 1;
  int ml = 0, mu = n - 1;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < fl(val[mav]))
      mu = mav;
    else
      ml = mav;
  }
  return x - fl(val[mu - 1]) < fl(val[mu]) - x ? mu - 1 : mu;
}

// ---- packing helpers on ggml's byte layouts -----------------------------------------------------

// Two nibbles per byte: codes j and j + 16 of a 32-block.
inline void put_nibbles32(const uint8_t *L, uint8_t *qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
}
// q5 layout: low nibbles in qs, fifth bits in the little-endian uint32 qh.
inline void put_q5(const uint8_t *L, uint8_t *qh, uint8_t *qs) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t xi0 = L[j], xi1 = L[j + 16];
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    h |= ((xi0 & 0x10u) >> 4) << (j + 0);
    h |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(h >> (8 * k));
}
// The 2-bit layout of q2_K/q3_K: byte 32h + l holds elements 128h + l + 32k at bits 2k.
inline void put_crumbs(const uint8_t *L, uint8_t *qs) {
  for (int j = 0; j < QK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                           (L[j + l + 96] << 6));
}
// 6-bit scale and minimum j of q4_K/q5_K (get_scale_min_k4).
inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}
inline void put_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t *scales) {
  if (j < 4) {
    scales[j] = ls;
    scales[j + 4] = lm;
  } else {
    scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
    scales[j - 4] = static_cast<uint8_t>(scales[j - 4] | ((ls >> 4) << 6));
    scales[j - 0] = static_cast<uint8_t>(scales[j - 0] | ((lm >> 4) << 6));
  }
}
// The 6-bit scale of sub-block j of q3_K, as stored (0..63).
inline int q3k_scale(const uint8_t *scales, int j) {
  const int lo = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  return lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

// ---- legacy 32-weight types ---------------------------------------------------------------------

void q4_0_ref(const float *x, uint8_t *b) { // quantize_row_q4_0_ref
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  for (int j = 0; j < 16; ++j) {
    const auto xi0 = static_cast<uint8_t>(std::min<int>(15, to_i8(x[j] * id + 8.5f)));
    const auto xi1 = static_cast<uint8_t>(std::min<int>(15, to_i8(x[j + 16] * id + 8.5f)));
    b[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
  }
}

void q4_1_ref(const float *x, uint8_t *b) { // quantize_row_q4_1_ref
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / 15;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  store_half(b + 2, min);
  for (int j = 0; j < 16; ++j) {
    const auto xi0 = static_cast<uint8_t>(std::min<int>(15, to_i8((x[j] - min) * id + 0.5f)));
    const auto xi1 = static_cast<uint8_t>(std::min<int>(15, to_i8((x[j + 16] - min) * id + 0.5f)));
    b[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
  }
}

void q5_0_ref(const float *x, uint8_t *b) { // quantize_row_q5_0_ref
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  uint8_t L[32];
  for (int j = 0; j < 32; ++j)
    L[j] = static_cast<uint8_t>(std::min<int>(31, to_i8(x[j] * id + 16.5f)));
  put_q5(L, b + 2, b + 6);
}

void q5_1_ref(const float *x, uint8_t *b) { // quantize_row_q5_1_ref
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  store_half(b + 2, min);
  uint8_t L[32];
  for (int j = 0; j < 32; ++j) L[j] = to_u8((x[j] - min) * id + 0.5f);
  put_q5(L, b + 4, b + 8);
}

void q8_0_ref(const float *x, uint8_t *b) { // quantize_row_q8_0_ref (ggml_quantize_chunk: always)
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = amax > std::fabs(x[j]) ? amax : std::fabs(x[j]);
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_half(b, d);
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(to_i8(std::round(x[j] * id)));
}

// The importance weights of a legacy block: qw · sqrt(sigma2 + x²) (quantize_row_q4_0_impl & co.).
inline void legacy_weights(const float *x, const float *qw, float sigma2, float *weight) {
  for (int j = 0; j < 32; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

void q4_0_imatrix(const float *x, const float *qw, float sigma2, uint8_t *b) {
  float weight[32];
  int8_t L[32];
  legacy_weights(x, qw, sigma2, weight);
  store_half(b, make_qx_quants(32, 8, x, L, weight));
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
}

void q4_1_imatrix(const float *x, const float *qw, float sigma2, uint8_t *b) {
  float weight[32], min;
  uint8_t L[32], Laux[32];
  legacy_weights(x, qw, sigma2, weight);
  const float d = make_qkx_quants(true, 32, 15, x, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
  store_half(b, d);
  store_half(b + 2, -min);
  put_nibbles32(L, b + 4);
}

void q5_0_imatrix(const float *x, const float *qw, float sigma2, uint8_t *b) {
  float weight[32];
  int8_t L[32];
  legacy_weights(x, qw, sigma2, weight);
  store_half(b, make_qx_quants(32, 16, x, L, weight));
  uint8_t U[32];
  for (int j = 0; j < 32; ++j) U[j] = static_cast<uint8_t>(L[j]);
  put_q5(U, b + 2, b + 6);
}

void q5_1_imatrix(const float *x, const float *qw, float sigma2, uint8_t *b) {
  float weight[32], min;
  uint8_t L[32], Laux[32];
  legacy_weights(x, qw, sigma2, weight);
  const float d = make_qkx_quants(true, 32, 31, x, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
  store_half(b, d);
  store_half(b + 2, -min);
  put_q5(L, b + 4, b + 8);
}

// ---- k-quants (256-weight super-blocks)
// -----------------------------------------------------------

// block_q2_K: scales[16] qs[64] d dmin
void q2_K(const float *x, const float *qw, uint8_t *b) {
  uint8_t *scales_out = b, *qs = b + 16, *dh = b + 80, *dminh = b + 82;
  uint8_t L[QK], Laux[16];
  float mins[16], scales[16], weights[16];
  if (!qw) { // quantize_row_q2_K_ref
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx_quants(false, 16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                  -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j)
        scales_out[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      store_half(dh, max_scale / q4scale);
    } else {
      for (int j = 0; j < 16; ++j) scales_out[j] = 0;
      store_half(dh, 0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j)
        scales_out[j] = static_cast<uint8_t>(scales_out[j] | (nearest_int(iscale * mins[j]) << 4));
      store_half(dminh, max_min / q4scale);
    } else {
      store_half(dminh, 0.f);
    }
  } else { // quantize_row_q2_K_impl
    float sw[16] = {};
    uint8_t Ls[16], Lm[16];
    float sumx2 = 0;
    for (int j = 0; j < QK; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / QK;
    for (int j = 0; j < 16; ++j) {
      const float *w = qw + 16 * j;
      for (int l = 0; l < 16; ++l)
        weights[l] = w[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < 16; ++l) sw[j] += weights[l];
      scales[j] = make_qkx_quants(true, 16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                  -0.9f, 0.05f, 36, false);
    }
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    store_half(dh, dm);
    store_half(dminh, mm);
    for (int j = 0; j < 16; ++j) scales_out[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
  }
  const float d_all = load_half(dh), dmin_all = load_half(dminh);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * fl(scales_out[j] & 0xF);
    if (d == 0.0f) continue;
    const float dm = dmin_all * fl(scales_out[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int((x[16 * j + ii] + dm) / d);
      L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, l)));
    }
  }
  put_crumbs(L, qs);
}

// block_q3_K: hmask[32] qs[64] scales[12] d
void q3_K(const float *x, const float *qw, uint8_t *b) {
  uint8_t *hmask = b, *qs = b + 32, *sc = b + 96, *dh = b + 108;
  int8_t L[QK];
  float scales[16];
  std::memset(sc, 0, 12);
  auto put_scale = [sc](int j, int l) { // l: the stored 6-bit value
    if (j < 8)
      sc[j] = static_cast<uint8_t>(l & 0xF);
    else
      sc[j - 8] = static_cast<uint8_t>(sc[j - 8] | ((l & 0xF) << 4));
    l >>= 4;
    sc[j % 4 + 8] = static_cast<uint8_t>(sc[j % 4 + 8] | (l << (2 * (j / 4))));
  };
  if (!qw) { // quantize_row_q3_K_ref
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale != 0.0f) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        auto l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
        l = static_cast<int8_t>(std::max<int>(-32, std::min<int>(31, l)) + 32);
        put_scale(j, l);
      }
      store_half(dh, 1 / iscale);
    } else {
      store_half(dh, 0.f);
    }
  } else { // quantize_row_q3_K_impl
    float weight[16], sw[16];
    int8_t Ls[16];
    float sumx2 = 0;
    for (int j = 0; j < QK; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / QK;
    for (int j = 0; j < 16; ++j) {
      const float *w = qw + 16 * j;
      for (int l = 0; l < 16; ++l)
        weight[l] = w[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
    for (int j = 0; j < 16; ++j) put_scale(j, Ls[j]);
    store_half(dh, d_block);
  }
  const float d_all = load_half(dh);
  for (int j = 0; j < 16; ++j) {
    const auto s = static_cast<int8_t>(q3k_scale(sc, j) - 32);
    const float d = d_all * fl(s);
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<int8_t>(std::max(-4, std::min(3, l)) + 4);
    }
  }
  std::memset(hmask, 0, 32);
  uint8_t U[QK];
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < QK; ++j) {
    U[j] = static_cast<uint8_t>(L[j]);
    if (L[j] > 3) {
      hmask[m] = static_cast<uint8_t>(hmask[m] | hm);
      U[j] = static_cast<uint8_t>(L[j] - 4);
    }
    if (++m == 32) {
      m = 0;
      hm = static_cast<uint8_t>(hm << 1);
    }
  }
  put_crumbs(U, qs);
}

// q4_K and q5_K share their scale search: block d dmin scales[12], then the codes.
void q45_K(bool five, const float *x, const float *qw, uint8_t *b) {
  const int nmax = five ? 31 : 15;
  uint8_t *dh = b, *dminh = b + 2, *sc = b + 4;
  uint8_t L[QK], Laux[32];
  float mins[8], scales[8], weights[32];
  std::memset(sc, 0, 12);
  if (!qw) { // quantize_row_q4_K_ref / quantize_row_q5_K_ref
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = five ? make_qkx_quants(false, 32, 31, x + 32 * j, weights, L + 32 * j, &mins[j],
                                         Laux, -0.5f, 0.1f, 15, false)
                       : make_qkx_quants(false, 32, 15, x + 32 * j, weights, L + 32 * j, &mins[j],
                                         Laux, -1.f, 0.1f, 20, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      auto ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
      auto lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
      ls = std::min<uint8_t>(63, ls);
      lm = std::min<uint8_t>(63, lm);
      put_scale_min_k4(j, ls, lm, sc);
    }
    store_half(dh, max_scale / 63.f);
    store_half(dminh, max_min / 63.f);
  } else { // quantize_row_q4_K_impl / quantize_row_q5_K_impl
    uint8_t Ls[8], Lm[8];
    float sw[8];
    float sum_x2 = 0;
    for (int l = 0; l < QK; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / QK;
    for (int j = 0; j < 8; ++j) {
      const float *w = qw + 32 * j;
      for (int l = 0; l < 32; ++l)
        weights[l] = w[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = make_qkx_quants(true, 32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                  -0.9f, 0.05f, 36, false);
    }
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j) {
      uint8_t ls = Ls[j], lm = Lm[j];
      if (five) { // q5_K clamps, q4_K does not
        ls = std::min<uint8_t>(63, ls);
        lm = std::min<uint8_t>(63, lm);
      }
      put_scale_min_k4(j, ls, lm, sc);
    }
    store_half(dh, d_block);
    store_half(dminh, m_block);
  }
  const float d_all = load_half(dh), dmin_all = load_half(dminh);
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    get_scale_min_k4(j, sc, &s, &m);
    const float d = d_all * fl(s);
    if (d == 0.0f) continue;
    const float dm = dmin_all * fl(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
  if (!five) {
    uint8_t *q = b + 16;
    for (int j = 0; j < QK; j += 64) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      q += 32;
    }
    return;
  }
  uint8_t *qh = b + 16, *ql = b + 48;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < QK; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] = static_cast<uint8_t>(qh[j] | m1);
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] = static_cast<uint8_t>(qh[j] | m2);
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
    ql += 32;
  }
}

// block_q6_K: ql[128] qh[64] scales[16] d (quantize_row_q6_K_ref / quantize_row_q6_K_impl: the
// importance weights go to make_qx_quants as they are)
void q6_K(const float *x, const float *qw, uint8_t *b) {
  int8_t L[QK];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float scale =
        make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : nullptr);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scale;
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(b, 0, 210);
    store_half(b + 208, 0.f);
    return;
  }
  auto *sc = reinterpret_cast<int8_t *>(b + 192);
  const float iscale = -128.f / max_scale;
  store_half(b + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib)
    sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  const float d_all = load_half(b + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * fl(sc[j]);
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<int8_t>(std::max(-32, std::min(31, l)) + 32);
    }
  }
  uint8_t *ql = b, *qh = b + 128;
  for (int j = 0; j < QK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

// quantize_row_iq4_nl_impl with ntry = 7, as ggml_quantize_chunk calls it for iq4_nl (one 32-block,
// super_block_size 32) and iq4_xs (256, eight 32-blocks with 6-bit scales). Writes d, and for
// iq4_xs scales_h and scales_l, and the codes.
void iq4(bool xs, const float *x, const float *qw, uint8_t *b) {
  const int sbs = xs ? 256 : 32, ntry = 7;
  uint8_t *dh = b;
  uint8_t *q4 = xs ? b + 8 : b + 2;
  uint8_t L[256];
  float scales[8], weight[32];
  float sigma2 = 0;
  for (int j = 0; j < sbs; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / fl(sbs);
  std::memset(q4, 0, static_cast<size_t>(sbs / 2));
  store_half(dh, 0.f);
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < sbs / 32; ++ib) {
    const float *xb = x + ib * 32;
    uint8_t *Lb = L + ib * 32;
    if (qw)
      for (int j = 0; j < 32; ++j) weight[j] = qw[ib * 32 + j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    else
      for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax < kGroupMaxEps) {
      scales[ib] = 0;
      continue;
    }
    float d = -max / fl(kIq4Values[0]);
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float al = id * xb[j];
      const int l = best_index_int8(16, kIq4Values, al);
      Lb[j] = static_cast<uint8_t>(l);
      const float q = fl(kIq4Values[l]);
      const float w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
      id = fl(itry + kIq4Values[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < 32; ++j) {
        const float al = id * xb[j];
        const int l = best_index_int8(16, kIq4Values, al);
        const float q = fl(kIq4Values[l]);
        const float w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scales[ib] = d;
    const float abs_d = std::fabs(d);
    if (abs_d > amax_scale) {
      amax_scale = abs_d;
      max_scale = d;
    }
  }
  if (xs) {
    uint16_t scales_h = 0;
    uint8_t *scales_l = b + 4;
    const float d = -max_scale / 32;
    store_half(dh, d);
    const float id = d != 0.0f ? 1 / d : 0.f;
    for (int ib = 0; ib < 8; ++ib) {
      int l = nearest_int(id * scales[ib]);
      l = std::max(-32, std::min(31, l));
      const float dl = d * fl(l);
      const float idl = dl != 0.0f ? 1 / dl : 0.f;
      uint8_t *Lb = L + ib * 32;
      const float *xb = x + ib * 32;
      for (int j = 0; j < 32; ++j)
        Lb[j] = static_cast<uint8_t>(best_index_int8(16, kIq4Values, idl * xb[j]));
      l += 32;
      const auto l_l = static_cast<uint8_t>(l & 0xf);
      const auto l_h = static_cast<uint8_t>(l >> 4);
      if (ib % 2 == 0)
        scales_l[ib / 2] = l_l;
      else
        scales_l[ib / 2] = static_cast<uint8_t>(scales_l[ib / 2] | (l_l << 4));
      scales_h = static_cast<uint16_t>(scales_h | (l_h << 2 * (ib % 8)));
    }
    b[2] = static_cast<uint8_t>(scales_h & 0xff);
    b[3] = static_cast<uint8_t>(scales_h >> 8);
  } else {
    store_half(dh, scales[0]);
    const float id = scales[0] != 0.0f ? 1 / scales[0] : 0;
    for (int j = 0; j < 32; ++j)
      L[j] = static_cast<uint8_t>(best_index_int8(16, kIq4Values, id * x[j]));
  }
  for (int i = 0; i < sbs / 32; ++i) put_nibbles32(L + 32 * i, q4 + 16 * i);
}

} // namespace

// ---- fp16
// -----------------------------------------------------------------------------------------

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = bits_of(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN (ggml: 0x7e00)
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u); // >= 65520: infinity
  if (ax >= 0x38800000u) {                                             // a normal half
    uint32_t h = (ax >> 13) - (112u << 10);
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  // A subnormal half (or zero): count units of 2^-24, rounding to nearest even.
  const uint32_t e = ax >> 23;
  const uint32_t m = (ax & 0x7fffffu) | (e ? 0x800000u : 0u);
  const uint32_t shift = 126u - std::max<uint32_t>(e, 1u); // >= 14
  if (shift >= 25) return sign;                            // below half the smallest subnormal
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = static_cast<float>(m) * 0x1p-24f; // exact
    return sign ? -v : v;
  }
  if (e == 31) return from_bits(sign | 0x7f800000u | (m << 13));
  return from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

// ---- entry points
// ---------------------------------------------------------------------------------

bool needs_row_sigma2(Type t, bool with_importance) {
  return with_importance &&
         (t == Type::Q4_0 || t == Type::Q4_1 || t == Type::Q5_0 || t == Type::Q5_1);
}

float row_sigma2(const float *row, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += row[j] * row[j];
  return sum_x2 / static_cast<float>(n);
}

void quantize_block(Type t, const float *x, const float *qw, float sigma2, uint8_t *b) {
  switch (t) {
  case Type::Q4_0:
    qw ? q4_0_imatrix(x, qw, sigma2, b) : q4_0_ref(x, b);
    break;
  case Type::Q4_1:
    qw ? q4_1_imatrix(x, qw, sigma2, b) : q4_1_ref(x, b);
    break;
  case Type::Q5_0:
    qw ? q5_0_imatrix(x, qw, sigma2, b) : q5_0_ref(x, b);
    break;
  case Type::Q5_1:
    qw ? q5_1_imatrix(x, qw, sigma2, b) : q5_1_ref(x, b);
    break;
  case Type::Q8_0: // ggml ignores the importance matrix for q8_0
    q8_0_ref(x, b);
    break;
  case Type::Q2_K:
    q2_K(x, qw, b);
    break;
  case Type::Q3_K:
    q3_K(x, qw, b);
    break;
  case Type::Q4_K:
    q45_K(false, x, qw, b);
    break;
  case Type::Q5_K:
    q45_K(true, x, qw, b);
    break;
  case Type::Q6_K:
    q6_K(x, qw, b);
    break;
  case Type::IQ4_NL:
    iq4(false, x, qw, b);
    break;
  case Type::IQ4_XS:
    iq4(true, x, qw, b);
    break;
  case Type::F16: {
    const uint16_t h = fp32_to_fp16(x[0]);
    b[0] = static_cast<uint8_t>(h & 0xff);
    b[1] = static_cast<uint8_t>(h >> 8);
    break;
  }
  }
}

void dequantize_block(Type t, const int32_t *s, const uint8_t *side, float *y) {
  switch (t) {
  case Type::Q4_0: { // dequantize_row_q4_0: (q - 8) * d
    const float d = load_half(side);
    for (int j = 0; j < 32; ++j) y[j] = fl(s[j] - 8) * d;
    break;
  }
  case Type::Q4_1:
  case Type::Q5_1: { // q * d + m
    const float d = load_half(side), m = load_half(side + 2);
    for (int j = 0; j < 32; ++j) y[j] = fl(s[j]) * d + m;
    break;
  }
  case Type::Q5_0: {
    const float d = load_half(side);
    for (int j = 0; j < 32; ++j) y[j] = fl(s[j] - 16) * d;
    break;
  }
  case Type::Q8_0: {
    const float d = load_half(side);
    for (int j = 0; j < 32; ++j) y[j] = fl(s[j]) * d;
    break;
  }
  case Type::Q2_K: { // side: scales[16] d dmin; dl * q - ml per 16-weight sub-block
    const float d = load_half(side + 16), min = load_half(side + 18);
    for (int k = 0; k < 16; ++k) {
      const uint8_t sc = side[k];
      const float dl = d * fl(sc & 0xF), ml = min * fl(sc >> 4);
      for (int l = 0; l < 16; ++l) y[16 * k + l] = dl * fl(s[16 * k + l]) - ml;
    }
    break;
  }
  case Type::Q3_K: { // side: scales[12] d; dl * (q - 4)
    const float d_all = load_half(side + 12);
    for (int k = 0; k < 16; ++k) {
      const float dl = d_all * fl(q3k_scale(side, k) - 32);
      for (int l = 0; l < 16; ++l) y[16 * k + l] = dl * fl(s[16 * k + l] - 4);
    }
    break;
  }
  case Type::Q4_K:
  case Type::Q5_K: { // side: d dmin scales[12]; d·sc · q - dmin·m per 32-weight sub-block
    const float d = load_half(side), min = load_half(side + 2);
    for (int k = 0; k < 8; ++k) {
      uint8_t sc, m;
      get_scale_min_k4(k, side + 4, &sc, &m);
      const float d1 = d * fl(sc), m1 = min * fl(m);
      for (int l = 0; l < 32; ++l) y[32 * k + l] = d1 * fl(s[32 * k + l]) - m1;
    }
    break;
  }
  case Type::Q6_K: { // side: scales[16] (int8) d; d · sc · (q - 32)
    const float d = load_half(side + 16);
    for (int k = 0; k < 16; ++k) {
      const float dk = d * fl(static_cast<int8_t>(side[k]));
      for (int l = 0; l < 16; ++l) y[16 * k + l] = dk * fl(s[16 * k + l] - 32);
    }
    break;
  }
  case Type::IQ4_NL: {
    const float d = load_half(side);
    for (int j = 0; j < 32; ++j) y[j] = d * fl(kIq4Values[s[j] & 15]);
    break;
  }
  case Type::IQ4_XS: { // side: d scales_h scales_l[4]
    const float d = load_half(side);
    const uint16_t scales_h = load_u16(side + 2);
    for (int ib = 0; ib < 8; ++ib) {
      const int ls = ((side[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
      const float dl = d * fl(ls - 32);
      for (int j = 0; j < 32; ++j) y[32 * ib + j] = dl * fl(kIq4Values[s[32 * ib + j] & 15]);
    }
    break;
  }
  case Type::F16:
    y[0] = fp16_to_fp32(static_cast<uint16_t>(s[0]));
    break;
  }
}

} // namespace nwc::ggml
