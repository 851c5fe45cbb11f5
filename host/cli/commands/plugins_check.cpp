// nwc plugins check ID... | --all [--set KEY=VALUE]... [--timeout S]; and the hidden child
// command each checked plugin runs in (plugin_check.cpp).
#include "commands/commands.hpp"
#include "plugin_check.hpp"

namespace nwc::cli {

int cmd_plugins_check(const Command &, const Args &args) {
  return plugins_check(args);
}

int cmd_plugin_check_child(const Command &, const Args &args) {
  return plugin_check_child(args);
}

} // namespace nwc::cli
