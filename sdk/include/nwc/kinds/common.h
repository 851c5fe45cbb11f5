/* nwc/kinds/common.h — types shared by the per-kind interfaces.
 *
 * Every selected weight tensor is treated as a 2-D matrix [rows, cols] (rows = output features,
 * cols = input features, as nn.Linear.weight) and coded in column blocks [col_begin, col_end).
 * Each block is decoded independently of the others. */
#pragma once
#include "nwc/host.h"
#include "nwc/tensor.h"

NWC_EXTERN_C_BEGIN

typedef struct nwc_instance nwc_instance; /* opaque, plugin-owned */

typedef struct nwc_block_info {
  uint32_t struct_size;
  uint32_t reserved;
  const char *tensor_name; /* borrowed, for messages */
  int64_t rows;            /* of the whole tensor */
  int64_t cols;
  int64_t col_begin; /* the block: columns [col_begin, col_end) */
  int64_t col_end;
  /* Since ABI 1.2 (present when struct_size covers them; NULL when absent). */
  /* [rows]: the tensor's row scales as stored, chosen by the chunker's row_scales() (or replaced by
   * a compensator that fine-tunes them). The chunker divides by them in split, multiplies in merge.
   */
  const float *row_scales;
  /* [chunk count of the block]: the quality level of each chunk, from the per-column levels the
   * host stores for the tensor. NULL in plan() and when the tensor has no levels. */
  const uint8_t *chunk_levels;
  /* Since ABI 1.3 (present when struct_size covers it; NULL when absent). */
  /* [n, m] for a quantizer's latents F32 [n, m] (the same element order), borrowed for the call: a
   * finite, non-negative importance weight per latent element, e.g. the diagonal of the layer's
   * input Hessian (llama.cpp's imatrix: mean squared activation of each input column) split into
   * chunks exactly like the weights (so only meaningful when the latents are the chunks, i.e.
   * without a transform). Only quantize() and quantize_fitted() read it; NULL when the host has
   * none, and always NULL for the other stages, in plan() and when decoding. The decoder never sees
   * it: a quantizer that uses it must not need it to decode. */
  const float *importance NWC_APPENDED_DEFAULT;
} nwc_block_info;

/* A discrete probability model for entropy coders (e.g. a transform's learned prior), as quantized
 * CDF tables. Symbol i of a stream uses channel i % channel_count; in channel c the symbol value v
 * has index v - offsets[c] and probability (cdf[idx+1] - cdf[idx]) / 2^precision; values outside
 * [offsets[c], offsets[c] + lengths[c] - 3] are escaped by the coder: the last interval of
 * each table (index lengths[c] - 2) is the escape symbol, as in CompressAI. */
typedef struct nwc_cdf_model {
  uint32_t struct_size;
  uint32_t precision; /* bits of probability resolution, <= 16 */
  uint32_t channel_count;
  uint32_t max_length;     /* row stride of cdfs */
  const uint32_t *cdfs;    /* channel_count x max_length; cdf[0] = 0, cdf[len-1] = 2^precision */
  const uint32_t *lengths; /* channel_count */
  const int32_t *offsets;  /* channel_count */
  /* Since ABI 1.7 (present when struct_size covers them): tables per quality level. When
   * level_count > 1, cdfs, lengths and offsets hold level_count x channel_count tables,
   * level-major, and symbol i of a stream uses table level * channel_count + i % channel_count,
   * where level is row_levels[i / row_length], or default_level for every symbol where row_levels
   * is NULL. The transform sets level_count (0 or 1: one set of tables) and default_level (the
   * level it codes chunks at when the host gives none) and leaves the rest zero; for each stream
   * the host passes a copy with row_length (symbols per chunk, the latent length) and row_levels
   * (the block's chunk_levels, one per row of symbols) filled in. With level_count > 1 a coder
   * rejects a level at or above level_count; with 0 or 1 it reads none of the four fields. */
  uint32_t level_count NWC_APPENDED_ZERO;
  uint32_t default_level NWC_APPENDED_ZERO;
  int64_t row_length NWC_APPENDED_ZERO;
  const uint8_t *row_levels NWC_APPENDED_DEFAULT;
} nwc_cdf_model;

NWC_EXTERN_C_END
