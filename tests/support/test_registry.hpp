// The bundled plugins of this build, scanned once per test process (tests that need other
// plugin directories, such as deliberately broken ones, scan their own Registry).
#pragma once

#include "nwc/host/registry.hpp"
#include "test_support.hpp"

namespace nwc::test {

inline const nwc::host::Registry &bundled_registry() {
  static const nwc::host::Registry r = [] {
    nwc::host::set_log_level(NWC_LOG_ERROR);
    nwc::host::Registry reg;
    reg.scan({plugin_dir()});
    return reg;
  }();
  return r;
}

} // namespace nwc::test
