/* A plugin library built for a future, incompatible ABI major version (2.0). */
#include "nwc/nwc.h"

static nwc_status init(const nwc_host *host) {
  (void)host;
  return NWC_OK;
}
static void deinit(void) {}
static uint32_t count(void) {
  return 0;
}
static const nwc_plugin_descriptor *descriptor(uint32_t i) {
  (void)i;
  return NULL;
}
static const nwc_plugin_vtable *vtable(uint32_t i) {
  (void)i;
  return NULL;
}

static const nwc_module module = {sizeof(nwc_module), 2u << 16, init, deinit, count,
                                  descriptor,         vtable};

NWC_EXPORT const nwc_module *nwc_module_entry(uint32_t host_abi_version) {
  (void)host_abi_version; /* deliberately answers whatever the host asks */
  return &module;
}
