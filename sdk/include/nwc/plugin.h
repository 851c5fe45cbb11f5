/* nwc/plugin.h — plugin descriptors, the common lifecycle vtable and the module entry point.
 *
 * A plugin library exports exactly one symbol, nwc_module_entry(). The host calls it with its own
 * ABI version; the module returns NULL if it cannot serve that host. A module may carry several
 * plugins. Per-kind operations are versioned interfaces reached through get_interface() with an id
 * such as "nwc.entropy/1" (see nwc/kinds/ *.h); a breaking change gets a new id.
 *
 * Thread tags on each function: [any-thread], [instance-serial] (the host never calls one instance
 * concurrently; the default), [init-only]. NWC_PLUGIN_INSTANCE_THREADSAFE lifts instance-serial. */
#pragma once
#include "nwc/abi.h"
#include "nwc/host.h"
#include "nwc/kinds/common.h"
#include "nwc/options.h"
#include "nwc/status.h"

NWC_EXTERN_C_BEGIN

/* Stage kinds; explicit, append-only. */
#define NWC_KIND_CHUNKER 1u
#define NWC_KIND_TRANSFORM 2u
#define NWC_KIND_ENTROPY_CODER 3u
#define NWC_KIND_COMPENSATOR 4u
#define NWC_KIND_QUANTIZER 5u
#define NWC_KIND_ROTATION 6u /* since ABI 1.4 */

/* Descriptor flags. */
#define NWC_PLUGIN_INSTANCE_THREADSAFE 0x1u /* one instance may be called from several threads */
#define NWC_PLUGIN_DETERMINISTIC 0x2u       /* same input and options give the same bytes */
#define NWC_PLUGIN_NEEDS_CUDA 0x4u
#define NWC_PLUGIN_EXPERIMENTAL 0x8u

typedef struct nwc_plugin_descriptor {
  uint32_t struct_size;    /* sizeof at the plugin's build time */
  uint32_t abi_version;    /* NWC_ABI_VERSION the plugin was built against */
  uint32_t kind;           /* NWC_KIND_* */
  uint32_t flags;          /* NWC_PLUGIN_* */
  const char *id;          /* reverse-DNS, never changes: "nwc.entropy.zstd" */
  const char *version;     /* semver of the implementation: "1.0.0" */
  uint32_t stream_version; /* bitstream version it writes; it reads every version <= this */
  uint32_t option_count;
  const char *name;               /* short human name */
  const char *description;        /* one paragraph */
  const nwc_option_spec *options; /* option_count entries */
} nwc_plugin_descriptor;

typedef struct nwc_plugin_vtable {
  uint32_t struct_size;
  uint32_t reserved;
  /* Create an instance. opts holds values already validated by the host against the schema
   * (missing keys take their defaults). On failure *out stays NULL and the reason is logged
   * through host->log at NWC_LOG_ERROR. host outlives the instance. [any-thread] since ABI 1.0 */
  nwc_status (*create)(const nwc_host *host, const nwc_options *opts, nwc_instance **out);
  /* Destroy an instance; accepts NULL. [instance-serial] since ABI 1.0 */
  void (*destroy)(nwc_instance *inst);
  /* The fully resolved options (defaults filled in). The array and its strings stay valid until
   * the next call on inst. [instance-serial] since ABI 1.0 */
  nwc_status (*get_options)(nwc_instance *inst, nwc_options *resolved_out);
  /* The per-kind interface with this id ("nwc.entropy/1"), or NULL if not served. The pointer is
   * static for the lifetime of the library. [any-thread] since ABI 1.0 */
  const void *(*get_interface)(const nwc_instance *inst, const char *interface_id);
  /* Message of the last failed call on inst; never NULL ("" if none). Valid until the next call
   * on inst. [instance-serial] since ABI 1.0 */
  const char *(*last_error)(const nwc_instance *inst);
} nwc_plugin_vtable;

typedef struct nwc_module {
  uint32_t struct_size;
  uint32_t abi_version; /* NWC_ABI_VERSION the module was built against */
  /* Called once after loading, before any other call; may be called again (refcounted).
   * [init-only] since ABI 1.0 */
  nwc_status (*init)(const nwc_host *host);
  /* Balances init(). [init-only] since ABI 1.0 */
  void (*deinit)(void);
  uint32_t (*plugin_count)(void);                             /* [any-thread] */
  const nwc_plugin_descriptor *(*descriptor)(uint32_t index); /* [any-thread]; static */
  const nwc_plugin_vtable *(*vtable)(uint32_t index);         /* [any-thread]; static */
} nwc_module;

/* Signature of the only exported symbol of a plugin library. */
typedef const nwc_module *(*nwc_module_entry_fn)(uint32_t host_abi_version);
#define NWC_MODULE_ENTRY_SYMBOL "nwc_module_entry"

NWC_EXTERN_C_END
