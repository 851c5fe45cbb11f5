// nwc/host/plugin_docs.hpp — Markdown reference pages generated from plugins' own descriptors and
// option schemas (`nwc plugins show --markdown`), so that option docs cannot drift from the code.
//
// The output depends only on the descriptor (no library path, time or host name): the same plugin
// build gives the same bytes, which is what lets the committed docs/plugins/ be checked by a test.
#pragma once

#include "nwc/host/registry.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc::host {

// One plugin's page: identity table (id, kind and interface, version, ABI, stream version, flags,
// library file name), description, and a table of every option (key, type, default, range or
// choices, unit, whether it affects the bitstream, doc).
std::string plugin_markdown(const Plugin &plugin);

// The index page: one row per plugin (id linking to "<id>.md", kind, version, first sentence of
// the description), in the order given.
std::string plugins_index_markdown(const std::vector<const Plugin *> &plugins);

// The file name of a plugin's page: "<id>.md".
std::string plugin_markdown_file(const Plugin &plugin);

// An option's schema as `nwc plugins list --json` prints it: key, type, doc, required,
// affects_bitstream, and default, range, choices and unit where they apply.
nlohmann::json option_schema_json(const nwc_option_spec &spec);

// A plugin as `nwc plugins list --json` prints it: id, version, kind, name, stream_version,
// abi_version ("1.5"), library, description and options (option_schema_json each).
nlohmann::json plugin_json(const Plugin &plugin);

} // namespace nwc::host
