// ggml_blocks.hpp — ggml's block bytes <-> nwc's (symbols, side) split, byte for byte.
//
// Header-only and dependency-free, for the plugin and for a future GGUF exporter: a tensor coded
// by nwc.quant.ggml is, per ggml block, `block` symbols plus `side_bytes` side bytes (layouts in
// the plugin's README); pack_block() rebuilds the exact bytes ggml stores for that block (the bytes
// of a GGUF tensor of that type are the blocks of each row in order), unpack_block() splits them
// again. Both are bijections between valid (symbols, side) pairs and block byte strings.
//
// Side bytes are the block's non-quant fields in ggml's struct order, little-endian as in ggml's
// files: q4_0/q5_0/q8_0/iq4_nl d; q4_1/q5_1 d, m; q2_K scales[16], d, dmin; q3_K scales[12], d;
// q4_K/q5_K d, dmin, scales[12]; q6_K scales[16], d; iq4_xs d, scales_h, scales_l[4]; f16 none.
#pragma once

#include "ggml_types.hpp"

#include <cstdint>
#include <cstring>

namespace nwc::ggml {

// True when every symbol of a block is within traits(t).symbol_min..symbol_max.
inline bool symbols_in_range(Type t, const int32_t *symbols) {
  const TypeTraits &tt = traits(t);
  uint32_t bad = 0;
  const auto span = static_cast<uint32_t>(tt.symbol_max - tt.symbol_min);
  for (int i = 0; i < tt.block; ++i)
    bad |= static_cast<uint32_t>(symbols[i] - tt.symbol_min) > span ? 1u : 0u;
  return bad == 0;
}

// True when an IEEE half (as stored) is finite.
inline bool half_is_finite(uint16_t h) {
  return (h & 0x7c00u) != 0x7c00u;
}

inline uint16_t load_u16(const uint8_t *p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

// Offsets of the fp16 fields (d, dmin, m) within a type's side bytes; count in *n.
inline const int *half_fields(Type t, int *n) {
  static constexpr int k0[] = {0}, k02[] = {0, 2}, k16[] = {16}, k12[] = {12}, k1618[] = {16, 18};
  switch (t) {
  case Type::Q4_1:
  case Type::Q5_1:
  case Type::Q4_K:
  case Type::Q5_K:
    *n = 2;
    return k02;
  case Type::Q2_K:
    *n = 2;
    return k1618;
  case Type::Q3_K:
    *n = 1;
    return k12;
  case Type::Q6_K:
    *n = 1;
    return k16;
  case Type::F16:
    *n = 0;
    return k0;
  default:
    *n = 1;
    return k0;
  }
}

// True when the side bytes of one block hold finite fp16 scales (ggml_validate_row_data rejects
// the others; every other field of every type accepts any bit pattern).
inline bool side_is_valid(Type t, const uint8_t *side) {
  int n = 0;
  const int *at = half_fields(t, &n);
  for (int i = 0; i < n; ++i)
    if (!half_is_finite(load_u16(side + at[i]))) return false;
  return true;
}

namespace detail {

// 32 4-bit codes: byte j holds codes j (low nibble) and j + 16 (high nibble).
inline void pack_nibbles32(const int32_t *s, uint8_t *qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((s[j] & 15) | ((s[j + 16] & 15) << 4));
}
inline void unpack_nibbles32(const uint8_t *qs, int32_t *s) {
  for (int j = 0; j < 16; ++j) {
    s[j] = qs[j] & 15;
    s[j + 16] = qs[j] >> 4;
  }
}
// The fifth bits of 32 codes as ggml's little-endian uint32 qh: bit j belongs to code j.
inline void pack_high32(const int32_t *s, uint8_t *qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>((s[j] >> 4) & 1) << j;
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(h >> (8 * k));
}
inline void unpack_high32(const uint8_t *qh, int32_t *s) {
  const uint32_t h = static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
                     static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
  for (int j = 0; j < 32; ++j) s[j] |= static_cast<int32_t>(((h >> j) & 1u) << 4);
}
// 256 2-bit values (low bits of q2_K/q3_K codes): element 128h + 32k + l is in byte 32h + l at bit
// 2k.
inline void pack_crumbs256(const int32_t *s, uint8_t *qs) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const int32_t *e = s + 128 * h + l;
      qs[32 * h + l] =
          static_cast<uint8_t>((e[0] & 3) | (e[32] & 3) << 2 | (e[64] & 3) << 4 | (e[96] & 3) << 6);
    }
}
inline void unpack_crumbs256(const uint8_t *qs, int32_t *s) {
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l)
      for (int k = 0; k < 4; ++k) s[128 * h + 32 * k + l] = (qs[32 * h + l] >> (2 * k)) & 3;
}
// 256 4-bit codes of q4_K/q5_K: element 64c + l (l < 32) is the low nibble of byte 32c + l, element
// 64c + 32 + l its high nibble.
inline void pack_nibbles256(const int32_t *s, uint8_t *qs) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      qs[32 * c + l] = static_cast<uint8_t>((s[64 * c + l] & 15) | (s[64 * c + 32 + l] & 15) << 4);
}
inline void unpack_nibbles256(const uint8_t *qs, int32_t *s) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      s[64 * c + l] = qs[32 * c + l] & 15;
      s[64 * c + 32 + l] = qs[32 * c + l] >> 4;
    }
}

} // namespace detail

// Builds ggml's block bytes (traits(t).block_bytes) from a block's symbols (traits(t).block, each
// within the type's range: check with symbols_in_range first) and side bytes.
inline void pack_block(Type t, const int32_t *s, const uint8_t *side, uint8_t *b) {
  using namespace detail;
  switch (t) {
  case Type::Q4_0:
  case Type::IQ4_NL:
    std::memcpy(b, side, 2);
    pack_nibbles32(s, b + 2);
    break;
  case Type::Q4_1:
    std::memcpy(b, side, 4);
    pack_nibbles32(s, b + 4);
    break;
  case Type::Q5_0:
    std::memcpy(b, side, 2);
    pack_high32(s, b + 2);
    pack_nibbles32(s, b + 6);
    break;
  case Type::Q5_1:
    std::memcpy(b, side, 4);
    pack_high32(s, b + 4);
    pack_nibbles32(s, b + 8);
    break;
  case Type::Q8_0:
    std::memcpy(b, side, 2);
    for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(s[j] & 0xff);
    break;
  case Type::Q2_K: // scales[16] qs[64] d dmin
    std::memcpy(b, side, 16);
    pack_crumbs256(s, b + 16);
    std::memcpy(b + 80, side + 16, 4);
    break;
  case Type::Q3_K: { // hmask[32] qs[64] scales[12] d
    uint8_t *hmask = b;
    std::memset(hmask, 0, 32);
    for (int i = 0; i < 256; ++i)
      hmask[i % 32] = static_cast<uint8_t>(hmask[i % 32] | ((s[i] >> 2) & 1) << (i / 32));
    pack_crumbs256(s, b + 32);
    std::memcpy(b + 96, side, 14);
    break;
  }
  case Type::Q4_K: // d dmin scales[12] qs[128]
    std::memcpy(b, side, 16);
    pack_nibbles256(s, b + 16);
    break;
  case Type::Q5_K: { // d dmin scales[12] qh[32] qs[128]
    std::memcpy(b, side, 16);
    uint8_t *qh = b + 16;
    std::memset(qh, 0, 32);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        qh[l] = static_cast<uint8_t>(qh[l] | ((s[64 * c + l] >> 4) & 1) << (2 * c) |
                                     ((s[64 * c + 32 + l] >> 4) & 1) << (2 * c + 1));
    pack_nibbles256(s, b + 48);
    break;
  }
  case Type::Q6_K: { // ql[128] qh[64] scales[16] d
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const int32_t *e = s + 128 * h + l;
        ql[64 * h + l] = static_cast<uint8_t>((e[0] & 15) | (e[64] & 15) << 4);
        ql[64 * h + 32 + l] = static_cast<uint8_t>((e[32] & 15) | (e[96] & 15) << 4);
        qh[32 * h + l] = static_cast<uint8_t>(((e[0] >> 4) & 3) | ((e[32] >> 4) & 3) << 2 |
                                              ((e[64] >> 4) & 3) << 4 | ((e[96] >> 4) & 3) << 6);
      }
    std::memcpy(b + 192, side, 18);
    break;
  }
  case Type::IQ4_XS: // d scales_h scales_l[4] qs[128]
    std::memcpy(b, side, 8);
    for (int i = 0; i < 8; ++i) pack_nibbles32(s + 32 * i, b + 8 + 16 * i);
    break;
  case Type::F16:
    b[0] = static_cast<uint8_t>(s[0] & 0xff);
    b[1] = static_cast<uint8_t>((s[0] >> 8) & 0xff);
    break;
  }
}

// Splits ggml's block bytes into symbols (traits(t).block) and side bytes (traits(t).side_bytes).
inline void unpack_block(Type t, const uint8_t *b, int32_t *s, uint8_t *side) {
  using namespace detail;
  switch (t) {
  case Type::Q4_0:
  case Type::IQ4_NL:
    std::memcpy(side, b, 2);
    unpack_nibbles32(b + 2, s);
    break;
  case Type::Q4_1:
    std::memcpy(side, b, 4);
    unpack_nibbles32(b + 4, s);
    break;
  case Type::Q5_0:
    std::memcpy(side, b, 2);
    unpack_nibbles32(b + 6, s);
    unpack_high32(b + 2, s);
    break;
  case Type::Q5_1:
    std::memcpy(side, b, 4);
    unpack_nibbles32(b + 8, s);
    unpack_high32(b + 4, s);
    break;
  case Type::Q8_0:
    std::memcpy(side, b, 2);
    for (int j = 0; j < 32; ++j) s[j] = static_cast<int8_t>(b[2 + j]);
    break;
  case Type::Q2_K:
    std::memcpy(side, b, 16);
    unpack_crumbs256(b + 16, s);
    std::memcpy(side + 16, b + 80, 4);
    break;
  case Type::Q3_K:
    unpack_crumbs256(b + 32, s);
    for (int i = 0; i < 256; ++i) s[i] |= ((b[i % 32] >> (i / 32)) & 1) << 2;
    std::memcpy(side, b + 96, 14);
    break;
  case Type::Q4_K:
    std::memcpy(side, b, 16);
    unpack_nibbles256(b + 16, s);
    break;
  case Type::Q5_K:
    std::memcpy(side, b, 16);
    unpack_nibbles256(b + 48, s);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        s[64 * c + l] |= ((b[16 + l] >> (2 * c)) & 1) << 4;
        s[64 * c + 32 + l] |= ((b[16 + l] >> (2 * c + 1)) & 1) << 4;
      }
    break;
  case Type::Q6_K: {
    const uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        int32_t *e = s + 128 * h + l;
        const uint8_t lo = ql[64 * h + l], hi = ql[64 * h + 32 + l], top = qh[32 * h + l];
        e[0] = (lo & 15) | (top & 3) << 4;
        e[32] = (hi & 15) | ((top >> 2) & 3) << 4;
        e[64] = (lo >> 4) | ((top >> 4) & 3) << 4;
        e[96] = (hi >> 4) | ((top >> 6) & 3) << 4;
      }
    std::memcpy(side, b + 192, 18);
    break;
  }
  case Type::IQ4_XS:
    std::memcpy(side, b, 8);
    for (int i = 0; i < 8; ++i) unpack_nibbles32(b + 8 + 16 * i, s + 32 * i);
    break;
  case Type::F16:
    s[0] = load_u16(b);
    break;
  }
}

} // namespace nwc::ggml
