/* nwc/tensor.h — borrowed tensor views (DLPack-like semantics) and dtype constants.
 *
 * A view never owns its memory. Views passed *into* a plugin are valid only for the duration of the
 * call. Views passed as outputs are allocated by the host with the shape the interface documents;
 * the plugin writes their elements and nothing else. */
#pragma once
#include "nwc/abi.h"

NWC_EXTERN_C_BEGIN

/* Element types; explicit, append-only. */
#define NWC_DTYPE_F32 1u
#define NWC_DTYPE_F16 2u
#define NWC_DTYPE_BF16 3u
#define NWC_DTYPE_F8E4M3 4u
#define NWC_DTYPE_F8E5M2 5u
#define NWC_DTYPE_I8 6u
#define NWC_DTYPE_U8 7u
#define NWC_DTYPE_I32 8u
#define NWC_DTYPE_I64 9u
#define NWC_DTYPE_U4X2 10u /* packed pairs: shape and strides count storage bytes */

#define NWC_DEVICE_CPU 1
#define NWC_DEVICE_CUDA 2

#define NWC_MAX_NDIM 8

typedef struct nwc_tensor_view {
  void *data; /* base pointer; elements start at data + byte_offset */
  uint64_t byte_offset;
  uint32_t dtype;      /* NWC_DTYPE_* */
  int32_t device_type; /* NWC_DEVICE_* */
  int32_t device_id;
  int32_t ndim;           /* 0..NWC_MAX_NDIM */
  const int64_t *shape;   /* ndim entries */
  const int64_t *strides; /* ndim entries, in elements; NULL = contiguous row-major */
} nwc_tensor_view;

NWC_EXTERN_C_END
