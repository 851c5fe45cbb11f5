/* nwc/host.h — what the host offers a plugin: logging, progress, memory and byte sinks.
 *
 * Plugins never print and never free host memory with their own allocator: warnings go through
 * log(), long work reports through progress(), and output bytes go through an nwc_sink. */
#pragma once
#include "nwc/abi.h"
#include "nwc/status.h"

NWC_EXTERN_C_BEGIN

#define NWC_LOG_DEBUG 0
#define NWC_LOG_INFO 1
#define NWC_LOG_WARNING 2
#define NWC_LOG_ERROR 3

typedef struct nwc_host {
  uint32_t struct_size;
  uint32_t abi_version; /* NWC_ABI_VERSION of the host */
  void *host_data;      /* opaque to the plugin */
  /* Log one line (no trailing newline needed). msg is borrowed. [any-thread] since ABI 1.0 */
  void (*log)(const struct nwc_host *host, int32_t level, const char *msg);
  /* Report progress of long work; what is a short label. [any-thread] since ABI 1.0 */
  void (*progress)(const struct nwc_host *host, uint64_t done, uint64_t total, const char *what);
  /* Host allocator for memory the host will own or free; returns NULL on failure.
   * [any-thread] since ABI 1.0 */
  void *(*alloc)(const struct nwc_host *host, size_t size);
  void (*free)(const struct nwc_host *host, void *ptr); /* accepts NULL. [any-thread] */
} nwc_host;

/* A host-owned byte sink. write() appends len bytes (data is borrowed); it returns NWC_OK or
 * NWC_E_IO/NWC_E_NOMEM, after which the plugin must stop and return that status.
 * [instance-serial] since ABI 1.0 */
typedef struct nwc_sink {
  void *ctx;
  nwc_status (*write)(struct nwc_sink *sink, const void *data, size_t len);
} nwc_sink;

/* Borrowed bytes (a stream read back from a container). */
typedef struct nwc_bytes {
  const uint8_t *data;
  size_t size;
} nwc_bytes;

NWC_EXTERN_C_END
