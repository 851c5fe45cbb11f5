/* nwc/kinds/chunker.h — interface "nwc.chunker/1": a column block <-> a matrix of chunks.
 *
 * A chunker decides how a block's weights are laid out as equal-length chunks (groups of a row,
 * vectors down a column, ...) and may normalize them, writing what it needs to undo that as
 * per-block side information. */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_CHUNKER_INTERFACE "nwc.chunker/1"

/* Since ABI 1.6: a storage_dtype for row_scales() — one byte per row on a logarithmic grid of
 * 1/64 octave (coarser only when a tensor's scales span more than 4 octaves), positive scales in
 * float's normal range only. Relative error <= 0.55 % for 4-octave spans; docs/container.md has
 * the exact format. A 1.2-1.5 host refuses a tensor whose chunker answers it, naming the code. */
#define NWC_ROW_SCALES_LOG8 64u

typedef struct nwc_chunk_geometry {
  int64_t count;  /* number of chunks */
  int64_t length; /* elements per chunk */
} nwc_chunk_geometry;

typedef struct nwc_chunker_interface {
  uint32_t struct_size;
  uint32_t reserved;
  /* The chunk geometry of a block, or NWC_E_UNSUPPORTED_SHAPE with a message if the chunker cannot
   * handle it. Must depend only on the block shape and the options. [instance-serial] */
  nwc_status (*plan)(nwc_instance *inst, const nwc_block_info *block, nwc_chunk_geometry *out);
  /* values: F32 [rows, col_end - col_begin]; chunks: F32 [count, length] allocated by the host.
   * Side information for merge() goes to side. [instance-serial] */
  nwc_status (*split)(nwc_instance *inst, const nwc_block_info *block,
                      const nwc_tensor_view *values, nwc_tensor_view *chunks, nwc_sink *side);
  /* Inverse of split: chunks F32 [count, length] and the side bytes -> values F32
   * [rows, col_end - col_begin]. side is untrusted. [instance-serial] */
  nwc_status (*merge)(nwc_instance *inst, const nwc_block_info *block,
                      const nwc_tensor_view *chunks, nwc_bytes side, nwc_tensor_view *values);
  /* Since ABI 1.2; NULL when not provided. Row scales of a whole tensor: weight F32 [rows, cols]
   * -> scales F32 [rows] (host-allocated); *storage_dtype = NWC_DTYPE_F32, _F16 or _BF16, or (since
   * ABI 1.6) NWC_ROW_SCALES_LOG8, the precision the host stores them at, or 0 when this instance
   * does not scale rows. The host rounds them to that precision, stores them once per tensor
   * (counted in its bits) and passes them, as rounded, in nwc_block_info.row_scales. block covers
   * all columns. [instance-serial] */
  nwc_status (*row_scales)(nwc_instance *inst, const nwc_block_info *block,
                           const nwc_tensor_view *weight, nwc_tensor_view *scales,
                           uint32_t *storage_dtype);
  /* Since ABI 1.2; NULL when not provided. For each chunk of a block, the absolute input column it
   * comes from (in [col_begin, col_end)), or -1 for a chunk that spans several columns: columns
   * I64 [count] (host-allocated). The host uses it to give chunks their column's quality level.
   * [instance-serial] */
  nwc_status (*chunk_columns)(nwc_instance *inst, const nwc_block_info *block,
                              nwc_tensor_view *columns);
} nwc_chunker_interface;

NWC_EXTERN_C_END
