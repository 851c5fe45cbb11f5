// `nwc plugins check`: vets plugins in a child process, so that one that crashes is reported as a
// failed check instead of taking the host down.
#pragma once

#include <string>
#include <vector>

namespace nwc::cli {

// `nwc plugins check ID... | --all [--set KEY=VALUE]... [--timeout S] [--json]` (args after
// "check"). Spawns this executable once per plugin with the hidden subcommand below and reads its
// report. Returns the exit code: 0 when every step of every plugin passed, 1 otherwise, 2 on a
// usage error.
int plugins_check(const std::vector<std::string> &args);

// The hidden subcommand kPluginCheckChild: loads the plugin, creates an instance and drives the
// interface of its kind on a small deterministic synthetic tensor, writing one line per event to
// stdout ("step NAME", "pass NAME", "fail NAME<TAB>why", "info KEY<TAB>VALUE"). With --list it
// prints the installed plugin ids instead.
int plugin_check_child(const std::vector<std::string> &args);
inline constexpr const char *kPluginCheckChild = "__plugin-check-child";

} // namespace nwc::cli
