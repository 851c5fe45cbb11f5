// nwc/formats/dtype.hpp — element types of stored tensors and conversions to float.
#pragma once

#include "nwc/tensor.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nwc {

// Values equal the ABI's NWC_DTYPE_* constants.
enum class DType : uint32_t {
  F32 = NWC_DTYPE_F32,
  F16 = NWC_DTYPE_F16,
  BF16 = NWC_DTYPE_BF16,
  I8 = NWC_DTYPE_I8,
  U8 = NWC_DTYPE_U8,
  I32 = NWC_DTYPE_I32,
  I64 = NWC_DTYPE_I64,
};

size_t dtype_size(DType t);           // bytes per element
std::string_view dtype_name(DType t); // "F32", "F16", "BF16", "I8", "U8", "I32", "I64"
bool dtype_from_name(std::string_view name, DType &out); // safetensors spelling; false if unknown
bool dtype_from_code(uint32_t code, DType &out);         // NWC_DTYPE_* value; false if unknown

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f); // round to nearest even, saturating to inf like IEEE
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f); // round to nearest even

// Converts n little-endian elements of type t at src to float.
void to_float(DType t, const void *src, size_t n, float *dst);
// Converts n floats to type t (F32, F16 or BF16) at dst.
void from_float(DType t, const float *src, size_t n, void *dst);

} // namespace nwc
