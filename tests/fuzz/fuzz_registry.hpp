// The registry of the built plugins, scanned once per fuzzing process (targets that link
// nwc::host).
#pragma once

#include "fuzz_common.hpp"
#include "nwc/host/registry.hpp"

namespace nwc::fuzz {

inline const nwc::host::Registry &registry() {
  static const nwc::host::Registry r = [] {
    nwc::host::set_log_level(NWC_LOG_ERROR + 1);
    nwc::host::Registry reg;
    reg.scan({plugin_dir()});
    return reg;
  }();
  return r;
}

} // namespace nwc::fuzz
