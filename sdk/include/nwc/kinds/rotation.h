/* nwc/kinds/rotation.h — interface "nwc.rotation/1" (since ABI 1.4): an orthogonal transform of a
 * whole weight matrix, W' = U · W · Vᵀ (U: rows x rows, V: cols x cols), applied to a selected
 * tensor before it is chunked and undone after its blocks are decoded and merged. Incoherence
 * processing (QuIP#'s randomized Hadamard transform) is one: it spreads outliers over the matrix
 * so that scalar and vector quantizers see near-Gaussian values.
 *
 * The layer's input Hessian is transformed consistently, H' = V · H · Vᵀ, so compensators (GPTQ,
 * LDLQ) minimize the same output error on the rotated matrix. Everything the decoder needs to
 * rebuild U and V (a seed, say) is the plugin's side information, written once per tensor; the
 * transform itself is never stored. A rotated tensor decodes as a whole: its column blocks hold
 * columns of W', not of W. */
#pragma once
#include "nwc/kinds/common.h"
NWC_EXTERN_C_BEGIN
#define NWC_ROTATION_INTERFACE "nwc.rotation/1"
typedef struct nwc_rotation_interface {
  uint32_t struct_size;
  uint32_t reserved;
  /* Chooses the transform of one tensor ([rows, cols]; tensor_name for messages and for plugins
   * that derive per-tensor seeds from it) and writes its side information to side. hessian: the
   * layer's input Hessian F32 [cols, cols] when the pipeline has calibration, else NULL (plugins
   * that need it, such as a column permutation by decreasing Hessian diagonal, return
   * NWC_E_INVALID_ARG with a message). NWC_E_UNSUPPORTED_SHAPE when the plugin cannot transform
   * this shape. [instance-serial] */
  nwc_status (*plan)(nwc_instance *inst, const char *tensor_name, int64_t rows, int64_t cols,
                     const nwc_tensor_view *hessian, nwc_sink *side);
  /* weight F32 [rows, cols] -> U · weight · Vᵀ, in place. side: what plan wrote. [instance-serial]
   */
  nwc_status (*forward)(nwc_instance *inst, nwc_bytes side, nwc_tensor_view *weight);
  /* hessian F32 [cols, cols] -> V · hessian · Vᵀ, in place. [instance-serial] */
  nwc_status (*forward_hessian)(nwc_instance *inst, nwc_bytes side, nwc_tensor_view *hessian);
  /* weight F32 [rows, cols] (decoded W') -> Uᵀ · weight · V, in place. side is untrusted: checked
   * before use (NWC_E_CORRUPT_STREAM). The result must be the same bits on every machine and
   * thread count. [instance-serial] */
  nwc_status (*inverse)(nwc_instance *inst, nwc_bytes side, nwc_tensor_view *weight);
} nwc_rotation_interface;
NWC_EXTERN_C_END
