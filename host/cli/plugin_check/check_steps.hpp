// The child side of `nwc plugins check`: how a check reports its steps, the synthetic data it
// feeds the plugin, and the checks of each plugin kind (check_<kind>.cpp).
//
// The child writes one line per event to stdout, flushed at once, so that the parent knows the
// step a crash happened in: "step NAME", "pass NAME[<TAB>note]", "fail NAME<TAB>why",
// "info KEY<TAB>VALUE" (runner.cpp reads them).
#pragma once

#include "nwc/host/registry.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace nwc::cli::check {

void report(const std::string &event, const std::string &step, const std::string &msg = "");

struct StepFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs one step: announces it, reports pass (with the note f returns) or fail (with the
// exception's message). Returns false on failure.
template <class F> bool step(const std::string &name, F &&f) {
  report("step", name);
  try {
    std::string note = f();
    report("pass", name, note);
    return true;
  } catch (const std::exception &e) {
    report("fail", name, e.what());
    return false;
  }
}

inline void require(bool cond, const std::string &why) {
  if (!cond) throw StepFailed(why);
}

// The checks of each kind on a fresh instance with its options; false when a step failed.
bool check_chunker(const host::Instance &inst);
bool check_transform(const host::Instance &inst);
bool check_quantizer(const host::Instance &inst);
bool check_entropy(const host::Instance &inst);
bool check_compensator(const host::Instance &inst);
bool check_rotation(const host::Instance &inst);

} // namespace nwc::cli::check
