// ggml_quants.hpp — ggml's quantization and dequantization of one block, reimplemented.
//
// quantize_block() produces the bytes ggml_quantize_chunk() writes for one block (the
// quantize_row_*_ref paths without an importance matrix, the quantize_*_impl paths with one), and
// dequantize_block() the floats of ggml's to_float, bit for bit: the same float operations in the
// same order, the same rounding helpers, no FMA contraction (the plugin is compiled with
// -ffp-contract=off). The tests check both against libggml-base.so.
#pragma once

#include "ggml_types.hpp"

#include <cstdint>

namespace nwc::ggml {

// IEEE binary16 conversions, round to nearest even (as ggml's GGML_FP32_TO_FP16 / FP16_TO_FP32).
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);

// True when quantize_block() of this type with an importance matrix needs the row's sigma2: ggml's
// q4_0, q4_1, q5_0 and q5_1 weight each value by its importance times sqrt(sigma2 + x²) with
// sigma2 = Σ x² / n_per_row over the whole row.
bool needs_row_sigma2(Type t, bool with_importance);

// sigma2 of a whole row as ggml computes it: a float sum of x² in order, divided by (float)n.
float row_sigma2(const float *row, int64_t n);

// Quantizes the traits(t).block values x into ggml's block bytes (traits(t).block_bytes). qw: the
// block's importance weights (llama.cpp's imatrix entries of these columns), or null. row_sigma2:
// see needs_row_sigma2 (ignored otherwise). Inputs must be finite.
void quantize_block(Type t, const float *x, const float *qw, float row_sigma2, uint8_t *block);

// The traits(t).block floats of ggml's to_float for the block given as symbols and side bytes (see
// ggml_blocks.hpp; symbols must be in range).
void dequantize_block(Type t, const int32_t *symbols, const uint8_t *side, float *y);

} // namespace nwc::ggml
