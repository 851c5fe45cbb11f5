/* nwc/kinds/chunker.h — interface "nwc.chunker/1": a column block <-> a matrix of chunks.
 *
 * A chunker decides how a block's weights are laid out as equal-length chunks (groups of a row,
 * vectors down a column, ...) and may normalize them, writing what it needs to undo that as
 * per-block side information. */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_CHUNKER_INTERFACE "nwc.chunker/1"

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
} nwc_chunker_interface;

NWC_EXTERN_C_END
