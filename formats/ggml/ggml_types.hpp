// ggml_types.hpp — the ggml/GGUF tensor types nwc.quant.ggml implements and their block geometry.
//
// Header-only and dependency-free (C++20 standard library only), so that a GGUF exporter can use it
// together with ggml_blocks.hpp without the plugin. The enum values are ggml's `enum ggml_type`
// (ggml.h), which GGUF files store as the tensor type; they never change in ggml.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace nwc::ggml {

enum class Type : uint32_t {
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ4_NL = 20,
  IQ4_XS = 23,
};

// One type's geometry. A ggml block holds `block` consecutive weights of one row in `block_bytes`
// bytes. nwc splits those bytes into `block` symbols (the per-weight integer codes, `symbol_bits`
// bits each, values symbol_min..symbol_max) and `side_bytes` bytes of side information (everything
// else: scales, minimums, packed sub-block scales), so that
//   block · symbol_bits / 8 + side_bytes == block_bytes.
struct TypeTraits {
  Type type;
  const char *name; // ggml_type_name(): "q4_K", "iq4_xs", "f16"
  int block;        // ggml_blck_size()
  int block_bytes;  // ggml_type_size()
  int symbol_bits;
  int side_bytes;
  int32_t symbol_min;
  int32_t symbol_max;
  bool k_quant; // 256-weight super-blocks (QK_K)
};

inline constexpr TypeTraits kTypes[] = {
    {Type::Q4_0, "q4_0", 32, 18, 4, 2, 0, 15, false},
    {Type::Q4_1, "q4_1", 32, 20, 4, 4, 0, 15, false},
    {Type::Q5_0, "q5_0", 32, 22, 5, 2, 0, 31, false},
    {Type::Q5_1, "q5_1", 32, 24, 5, 4, 0, 31, false},
    {Type::Q8_0, "q8_0", 32, 34, 8, 2, -128, 127, false},
    {Type::Q2_K, "q2_K", 256, 84, 2, 20, 0, 3, true},
    {Type::Q3_K, "q3_K", 256, 110, 3, 14, 0, 7, true},
    {Type::Q4_K, "q4_K", 256, 144, 4, 16, 0, 15, true},
    {Type::Q5_K, "q5_K", 256, 176, 5, 16, 0, 31, true},
    {Type::Q6_K, "q6_K", 256, 210, 6, 18, 0, 63, true},
    {Type::IQ4_NL, "iq4_nl", 32, 18, 4, 2, 0, 15, false},
    {Type::IQ4_XS, "iq4_xs", 256, 136, 4, 8, 0, 15, true},
    {Type::F16, "f16", 1, 2, 16, 0, 0, 65535, false},
};

inline constexpr const TypeTraits &traits(Type t) {
  for (const TypeTraits &tt : kTypes)
    if (tt.type == t) return tt;
  return kTypes[0]; // unreachable for valid enumerators
}

inline constexpr std::optional<Type> type_from_name(std::string_view name) {
  for (const TypeTraits &tt : kTypes)
    if (name == tt.name) return tt.type;
  return std::nullopt;
}

// Every entry of kTypes satisfies the split of a block into symbols and side bytes.
inline constexpr bool types_consistent() {
  for (const TypeTraits &tt : kTypes)
    if (tt.block * tt.symbol_bits % 8 != 0 ||
        tt.block * tt.symbol_bits / 8 + tt.side_bytes != tt.block_bytes)
      return false;
  return true;
}
static_assert(types_consistent(), "a type's symbols and side bytes must add up to its block");

} // namespace nwc::ggml
