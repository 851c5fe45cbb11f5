/* nwc/kinds/compensator.h — interface "nwc.compensator/1": the encoder's error feedback.
 *
 * A compensator chooses the column blocks of a tensor and the order in which they are coded, and
 * may change the values of columns not yet coded to compensate the error of those already coded
 * (GPTQ, LDLQ). It sees the rest of the pipeline as one block codec. It writes no bitstream:
 * decoding never needs it. */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_COMPENSATOR_INTERFACE "nwc.compensator/1"

#define NWC_COMPENSATOR_NEEDS_HESSIAN 0x1u

/* Flags of nwc_block_codec.encode_ex. */
/* NWC_BLOCK_DRY_RUN: compute the reconstruction only; nothing is written or counted. */
#define NWC_BLOCK_DRY_RUN 0x1u

/* Provided by the host for one tensor. */
typedef struct nwc_block_codec {
  uint32_t struct_size;
  uint32_t reserved;
  void *ctx;
  int64_t rows;
  int64_t cols;
  /* Code columns [col_begin, col_end) with the given values (F32 [rows, width]) and write what the
   * decoder will reconstruct to reconstruction (F32 [rows, width], caller-allocated). Over one
   * compensate() call the blocks must cover every column exactly once. [instance-serial] */
  nwc_status (*encode)(struct nwc_block_codec *codec, int64_t col_begin, int64_t col_end,
                       const nwc_tensor_view *values, nwc_tensor_view *reconstruction);
  /* Since ABI 1.1 (present when struct_size covers it). Like encode, plus:
   * fit_values (F32 [rows, width] or NULL = values): the values the stages fit their side
   * parameters on; values are then coded with those parameters (needs a quantizer with
   * quantize_fitted). flags: NWC_BLOCK_DRY_RUN computes the reconstruction without writing the
   * block, so a compensator can try columns before committing them. [instance-serial] */
  nwc_status (*encode_ex)(struct nwc_block_codec *codec, int64_t col_begin, int64_t col_end,
                          const nwc_tensor_view *values, const nwc_tensor_view *fit_values,
                          uint32_t flags, nwc_tensor_view *reconstruction);
} nwc_block_codec;

typedef struct nwc_compensator_interface {
  uint32_t struct_size;
  uint32_t reserved;
  /* NWC_COMPENSATOR_NEEDS_* flags. [any-thread] */
  uint32_t (*requirements)(const nwc_instance *inst);
  /* Code one tensor. weight: F32 [rows, cols] (borrowed, read-only). hessian: F32 [cols, cols]
   * input second moment of this linear, or NULL when no calibration ran. [instance-serial] */
  nwc_status (*compensate)(nwc_instance *inst, const char *tensor_name,
                           const nwc_tensor_view *weight, const nwc_tensor_view *hessian,
                           nwc_block_codec *codec);
} nwc_compensator_interface;

NWC_EXTERN_C_END
