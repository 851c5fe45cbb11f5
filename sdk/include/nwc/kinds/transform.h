/* nwc/kinds/transform.h — interface "nwc.transform/1": chunks <-> latents.
 *
 * A transform maps each chunk (a row of the chunk matrix) to a latent vector, and back. It may
 * expose a probability model of its quantized latents for the entropy coder. */
#pragma once
#include "nwc/kinds/common.h"

NWC_EXTERN_C_BEGIN

#define NWC_TRANSFORM_INTERFACE "nwc.transform/1"

typedef struct nwc_transform_interface {
  uint32_t struct_size;
  uint32_t reserved;
  /* Latent length for a chunk length, or NWC_E_UNSUPPORTED_SHAPE. [instance-serial] */
  nwc_status (*latent_length)(nwc_instance *inst, int64_t chunk_length, int64_t *out);
  /* chunks F32 [n, chunk_length] -> latents F32 [n, latent_length]. [instance-serial] */
  nwc_status (*forward)(nwc_instance *inst, const nwc_block_info *block,
                        const nwc_tensor_view *chunks, nwc_tensor_view *latents);
  /* latents F32 [n, latent_length] -> chunks F32 [n, chunk_length]. [instance-serial] */
  nwc_status (*inverse)(nwc_instance *inst, const nwc_block_info *block,
                        const nwc_tensor_view *latents, nwc_tensor_view *chunks);
  /* The probability model of the quantized latents, or NULL if the transform has none. Owned by
   * the instance, valid while it lives. [instance-serial] */
  const nwc_cdf_model *(*probability_model)(nwc_instance *inst);
} nwc_transform_interface;

NWC_EXTERN_C_END
