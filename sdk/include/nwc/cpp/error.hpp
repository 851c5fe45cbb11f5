// nwc/cpp/error.hpp — the one exception type of nwc's C++ code: a status code and a one-line
// message naming what failed. Plugins throw it (the ABI trampolines turn it into a status), and the
// host and format readers use it too.
#pragma once

#include "nwc/status.h"

#include <stdexcept>
#include <string>

namespace nwc {

class Error : public std::runtime_error {
public:
  Error(nwc_status code, const std::string &message) : std::runtime_error(message), code_(code) {}
  nwc_status code() const noexcept { return code_; }

private:
  nwc_status code_;
};

[[noreturn]] inline void fail(nwc_status code, const std::string &message) {
  throw Error(code, message);
}

} // namespace nwc
