// tensor_side.hpp (private) — tensor-level side information (ABI 1.2): the streams a tensor stores
// once for all its blocks, and how they reach each block.
//
// Stored as tensor streams (block -1): "row_scales" (and the host's "row_gain") =
// [u8 NWC_DTYPE_F32|F16|BF16][rows values, LE], [u8 NWC_ROW_SCALES_LOG8][i32 base][u8 shift][rows
// bytes] or its Rice-coded form [u8 65][i32 base][u8 shift][u8 center][u8 k][bits]
// (docs/container.md §5.11); "levels" = [u8 bits per level: 2, 4 or 8][levels of
// the columns, packed LSB first].
#pragma once

#include "stages.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace nwc::host::detail {

struct TensorSide {
  std::vector<float> row_scales; // empty = none
  std::vector<uint8_t> levels;   // per column; empty = none
  std::vector<float> importance; // per column, for the quantizer only (never stored); empty = none
};

// Row scales as stored with dtype `code`; `scales` is rounded in place to what the decoder will
// see. Fails (naming `where`) on a zero or non-finite stored scale.
std::vector<uint8_t> encode_row_scales(uint32_t code, std::vector<float> &scales,
                                       const std::string &where);
std::vector<float> decode_row_scales(const std::vector<uint8_t> &bytes, int64_t rows,
                                     const std::string &where);
// The storage code (NWC_DTYPE_* or NWC_ROW_SCALES_LOG8) that encoded stream `bytes` was written
// with: encode_row_scales(row_scales_storage(bytes), ...) stores new scales the same way.
uint32_t row_scales_storage(const std::vector<uint8_t> &bytes);

std::vector<uint8_t> pack_levels(const std::vector<uint8_t> &levels);
std::vector<uint8_t> unpack_levels(const std::vector<uint8_t> &bytes, int64_t cols,
                                   const std::string &where);

// What a stage is told about block [c0, c1) of a [rows, cols] tensor (name must outlive it).
nwc_block_info block_info(const std::string &name, int64_t rows, int64_t cols, int64_t c0,
                          int64_t c1, const TensorSide &side);

// The quality level of each chunk of a block, from the tensor's per-column levels (empty: none).
std::vector<uint8_t> chunk_levels(const Stages &st, const nwc_block_info &info, const Geometry &g,
                                  const std::vector<uint8_t> &levels);

} // namespace nwc::host::detail
