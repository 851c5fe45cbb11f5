/* nwc/kinds/quantizer.h — interface "nwc.quantizer/1": latents <-> integer symbols.
 *
 * The quantizer turns real latents into int32 symbols plus per-block side information (scales,
 * zero points, ...). It also returns the dequantized values so that the encoder sees exactly what
 * the decoder will reconstruct (error feedback needs it). */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_QUANTIZER_INTERFACE "nwc.quantizer/1"

/* A storage format of another runtime that a quantizer's codes can be written in (ABI 1.5).
 * Names are NUL-terminated. */
typedef struct nwc_native_layout {
  uint32_t struct_size;
  uint32_t reserved;
  char format[16];           /* "ggml" */
  char type[16];             /* the format's name of the type, e.g. "q4_K" (ggml_type_name) */
  uint64_t values_per_block; /* weights in one native block (32, 256, 1, ...) */
  uint64_t bytes_per_block;  /* bytes of one native block */
} nwc_native_layout;

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
  /* Since ABI 1.5; NULL when not supported (check struct_size first). The block's codes as the
   * blocks of a storage format that other software reads, for quantizers whose symbols and side
   * information are such a format split apart (llama.cpp's ggml types): symbols I32 [n, m] and side
   * (as quantize wrote them; untrusted) -> the block's rows x width values as whole native blocks,
   * row after row (each row's blocks in column order), appended to out. layout (host-allocated,
   * struct_size set by the host) receives the format, the type and the size of one native block.
   * NWC_E_UNSUPPORTED_SHAPE when this block cannot be written so (e.g. chunks that are not
   * consecutive columns of one row). The host checks that the native blocks decode to exactly the
   * values the container decodes to before it uses them. [instance-serial] */
  nwc_status (*export_native)(nwc_instance *inst, const nwc_block_info *block,
                              const nwc_tensor_view *symbols, nwc_bytes side,
                              nwc_native_layout *layout, nwc_sink *out) NWC_APPENDED_DEFAULT;
} nwc_quantizer_interface;

NWC_EXTERN_C_END
