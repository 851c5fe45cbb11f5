/* nwc/status.h — status codes returned by every fallible ABI call.
 *
 * Values are explicit and append-only; a removed value is tombstoned here, never reused.
 * 0 is success, negative is an error. SDK codes use -1..-999; plugin-private codes are <= -1000
 * and are always paired with a message in the instance's last_error(). */
#pragma once
#include "nwc/abi.h"

NWC_EXTERN_C_BEGIN

typedef int32_t nwc_status;

#define NWC_OK 0
#define NWC_E_INVALID_ARG (-1)        /* a pointer, shape or count argument is unusable */
#define NWC_E_INVALID_OPTION (-2)     /* an option is unknown, of the wrong type or out of range */
#define NWC_E_UNSUPPORTED_DTYPE (-3)  /* the tensor's dtype is not handled by this stage */
#define NWC_E_NOMEM (-4)              /* an allocation failed */
#define NWC_E_CORRUPT_STREAM (-5)     /* input bytes are inconsistent; nothing was trusted */
#define NWC_E_VERSION (-6)            /* a stream or interface version this build cannot read */
#define NWC_E_BUFFER_TOO_SMALL (-7)   /* an output buffer is smaller than required */
#define NWC_E_DEVICE (-8)             /* the requested device is unavailable */
#define NWC_E_INTERNAL (-9)           /* a bug or an unexpected exception inside the plugin */
#define NWC_E_UNSUPPORTED_SHAPE (-10) /* the tensor's shape cannot be handled by this stage */
#define NWC_E_IO (-11)                /* a host sink or source failed */
#define NWC_E_PLUGIN_PRIVATE_BASE (-1000)

/* Static name of a status code ("NWC_E_CORRUPT_STREAM"); never NULL. [any-thread] since ABI 1.0 */
static inline const char *nwc_status_name(nwc_status code) {
  switch (code) {
  case NWC_OK:
    return "NWC_OK";
  case NWC_E_INVALID_ARG:
    return "NWC_E_INVALID_ARG";
  case NWC_E_INVALID_OPTION:
    return "NWC_E_INVALID_OPTION";
  case NWC_E_UNSUPPORTED_DTYPE:
    return "NWC_E_UNSUPPORTED_DTYPE";
  case NWC_E_NOMEM:
    return "NWC_E_NOMEM";
  case NWC_E_CORRUPT_STREAM:
    return "NWC_E_CORRUPT_STREAM";
  case NWC_E_VERSION:
    return "NWC_E_VERSION";
  case NWC_E_BUFFER_TOO_SMALL:
    return "NWC_E_BUFFER_TOO_SMALL";
  case NWC_E_DEVICE:
    return "NWC_E_DEVICE";
  case NWC_E_INTERNAL:
    return "NWC_E_INTERNAL";
  case NWC_E_UNSUPPORTED_SHAPE:
    return "NWC_E_UNSUPPORTED_SHAPE";
  case NWC_E_IO:
    return "NWC_E_IO";
  default:
    return code <= NWC_E_PLUGIN_PRIVATE_BASE ? "NWC_E_PLUGIN_PRIVATE" : "NWC_E_UNKNOWN";
  }
}

NWC_EXTERN_C_END
