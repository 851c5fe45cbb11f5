/* nwc/kinds/entropy.h — interface "nwc.entropy/1": symbols <-> bytes, losslessly.
 *
 * Each call codes one independent stream. The symbol count is known to the decoder (the host
 * derives it from the block geometry), so a coder need not store it, but it must reject a stream
 * that does not decode to exactly that many symbols. */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_ENTROPY_INTERFACE "nwc.entropy/1"

typedef struct nwc_entropy_interface {
  uint32_t struct_size;
  uint32_t reserved;
  /* symbols: contiguous I32 view (any shape; coded in row-major order). model: the transform's
   * probability model or NULL; a coder that needs one returns NWC_E_INVALID_ARG without it.
   * [instance-serial] */
  nwc_status (*encode)(nwc_instance *inst, const nwc_tensor_view *symbols,
                       const nwc_cdf_model *model, nwc_sink *out);
  /* stream (untrusted) -> symbols, a host-allocated contiguous I32 view with the expected count.
   * Never reads outside stream, never loops without consuming input. [instance-serial] */
  nwc_status (*decode)(nwc_instance *inst, nwc_bytes stream, const nwc_cdf_model *model,
                       nwc_tensor_view *symbols);
} nwc_entropy_interface;

NWC_EXTERN_C_END
