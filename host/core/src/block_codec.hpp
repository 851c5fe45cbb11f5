// block_codec.hpp (private) — the host side of nwc_block_codec: what a compensator calls to code a
// block of columns of one tensor through chunker -> transform -> quantizer -> entropy coder and get
// the decoder's reconstruction back; and the coalescing of adjacent blocks into wider streams.
#pragma once

#include "nwc/formats/container.hpp"
#include "stages.hpp"
#include "tensor_side.hpp"

#include <string>
#include <utility>
#include <vector>

namespace nwc::host::detail {

struct EncodedBlock {
  BlockRecord record;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> streams; // role, bytes
  // What the block was coded from and to ([rows, width] each), kept only for coalescing.
  std::vector<float> values, fit, recon;
};

// Host side of nwc_block_codec for one tensor.
struct BlockCodec {
  nwc_block_codec c{};
  const Stages *stages = nullptr;
  std::string name;
  int64_t rows = 0, cols = 0;
  TensorSide tensor_side;
  std::vector<float> *full_reconstruction = nullptr; // [rows, cols], filled by committed blocks
  std::vector<float> *unit_reconstruction = nullptr; // the same with unit row scales
  std::vector<EncodedBlock> blocks;
  bool keep_inputs = false; // keep each block's values and reconstruction (coalesce_blocks)
  std::string error;        // exception message when encode failed
  nwc_status error_code = NWC_OK;

  // The nwc_block_codec entry points (c.encode, c.encode_ex): exceptions become a status, their
  // message kept in error / error_code.
  static nwc_status encode(nwc_block_codec *self, int64_t c0, int64_t c1,
                           const nwc_tensor_view *values, nwc_tensor_view *recon);
  static nwc_status encode_ex(nwc_block_codec *self, int64_t c0, int64_t c1,
                              const nwc_tensor_view *values, const nwc_tensor_view *fit,
                              uint32_t flags, nwc_tensor_view *recon);

  // Codes columns [c0, c1) (values: [rows, c1 - c0]) and writes the reconstruction to recon;
  // unless flags has NWC_BLOCK_DRY_RUN, the block is kept (blocks) and the reconstructions filled.
  void encode_block(int64_t c0, int64_t c1, const nwc_tensor_view *values,
                    const nwc_tensor_view *fit, uint32_t flags, nwc_tensor_view *recon);

private:
  // Fails unless [c0, c1) is inside the tensor and the views are [rows, c1 - c0] float32.
  void check_request(int64_t c0, int64_t c1, const nwc_tensor_view *values,
                     const nwc_tensor_view *fit, uint32_t flags,
                     const nwc_tensor_view *recon) const;
  // Copies a [rows, w] block into columns [c0, c0 + w) of a [rows, cols] tensor.
  void copy_columns(const float *block, int64_t c0, int64_t w, std::vector<float> &tensor) const;
};

// Codes runs of adjacent compensator blocks as one block of at most `max_cols` columns where that
// reproduces their reconstruction bit for bit (true of column-local stages such as the column
// chunker and the neural codec): fewer streams and container records, the same decoded tensor.
// Error feedback still happens at the compensator's granularity; a run that codes differently
// keeps its blocks.
void coalesce_blocks(BlockCodec &bc, int64_t max_cols);

} // namespace nwc::host::detail
