// `nwc plugins check` vets plugins in a child process, so that one that crashes is reported as a
// failed check instead of taking the host down. The parent (commands/plugins_check.cpp) starts
// this executable again with the hidden command kPluginCheckChild once per plugin (runner.cpp)
// and reads its report; the child (child.cpp) loads the plugin, creates an instance and drives
// the interface of its kind on a small deterministic synthetic tensor (check_<kind>.cpp).
#pragma once

#include <string>
#include <vector>

namespace nwc::cli {

inline constexpr const char *kPluginCheckChild = "__plugin-check-child";

// The hidden command: `nwc __plugin-check-child ID [--plugin-path DIR]... [--set KEY=VALUE]...
// [--quiet]` checks one plugin, writing one line per event to stdout (check_steps.hpp); with
// --list instead of an id it reports the installed plugin ids. Returns 0 when every step passed.
int plugin_check_child(const std::vector<std::string> &args);

struct CheckStep {
  std::string name, result, message; // result: pass | fail
};

struct CheckResult {
  std::string id, kind, version, library;
  std::vector<CheckStep> steps;
  bool passed = false;
  std::string failure;          // one line when not passed
  std::vector<std::string> ids; // --list
};

// Runs the child for plugin `id` (empty with --list in child_args) and collects its report. A
// child that crashes, exits with an error or runs past timeout_s (0 = no limit; it is killed)
// is a failed check whose `failure` names what happened and in which step.
CheckResult run_plugin_check(const std::string &id, const std::vector<std::string> &child_args,
                             double timeout_s);

} // namespace nwc::cli
