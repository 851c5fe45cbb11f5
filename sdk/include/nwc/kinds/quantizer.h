/* nwc/kinds/quantizer.h — interface "nwc.quantizer/1": latents <-> integer symbols.
 *
 * The quantizer turns real latents into int32 symbols plus per-block side information (scales,
 * zero points, ...). It also returns the dequantized values so that the encoder sees exactly what
 * the decoder will reconstruct (error feedback needs it). */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_QUANTIZER_INTERFACE "nwc.quantizer/1"

typedef struct nwc_quantizer_interface {
  uint32_t struct_size;
  uint32_t reserved;
  /* latents F32 [n, m] -> symbols I32 [n, m] and dequantized F32 [n, m] (both host-allocated);
   * side information goes to side. [instance-serial] */
  nwc_status (*quantize)(nwc_instance *inst, const nwc_block_info *block,
                         const nwc_tensor_view *latents, nwc_tensor_view *symbols,
                         nwc_tensor_view *dequantized, nwc_sink *side);
  /* symbols I32 [n, m] and side bytes -> latents F32 [n, m]. symbols and side are untrusted.
   * [instance-serial] */
  nwc_status (*dequantize)(nwc_instance *inst, const nwc_block_info *block,
                           const nwc_tensor_view *symbols, nwc_bytes side,
                           nwc_tensor_view *latents);
  /* Since ABI 1.1; NULL when not supported (check struct_size first). Like quantize, but the
   * side parameters (scales, offsets, ...) are fitted on reference (F32 [n, m], e.g. the columns
   * as they were when a GPTQ group started) and latents are then coded on that grid.
   * [instance-serial] */
  nwc_status (*quantize_fitted)(nwc_instance *inst, const nwc_block_info *block,
                                const nwc_tensor_view *latents, const nwc_tensor_view *reference,
                                nwc_tensor_view *symbols, nwc_tensor_view *dequantized,
                                nwc_sink *side);
} nwc_quantizer_interface;

NWC_EXTERN_C_END
