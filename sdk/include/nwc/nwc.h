/* nwc/nwc.h — umbrella header of the stable nwc plugin ABI (version 1). See docs/abi.md. */
#pragma once
#include "nwc/abi.h"
#include "nwc/host.h"
#include "nwc/kinds/chunker.h"
#include "nwc/kinds/common.h"
#include "nwc/kinds/compensator.h"
#include "nwc/kinds/entropy.h"
#include "nwc/kinds/quantizer.h"
#include "nwc/kinds/rotation.h"
#include "nwc/kinds/transform.h"
#include "nwc/options.h"
#include "nwc/plugin.h"
#include "nwc/status.h"
#include "nwc/tensor.h"

NWC_EXTERN_C_BEGIN
/* The only symbol a plugin library exports. Returns NULL if it cannot serve host_abi_version. */
NWC_EXPORT const nwc_module *nwc_module_entry(uint32_t host_abi_version);
NWC_EXTERN_C_END
