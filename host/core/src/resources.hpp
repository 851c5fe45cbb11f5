// resources.hpp (private) — files behind bitstream-affecting path options (a codec): recorded in
// the manifest by the compression driver (manifest.extra.resources, optionally embedded as a
// stream), found and verified by hash again by the decoder.
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/host/options.hpp"
#include "nwc/host/registry.hpp"

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc::host::detail {

// Records the files named by p's bitstream-affecting path options in `resources` as
// {config, slot, plugin, option, file, path, bytes, xxh64[, stream]}; with `embed`, their bytes go
// into the container as a "resource" stream.
void record_resources(const Plugin &p, const OptionValues &resolved, size_t config,
                      const std::string &slot, bool embed, ContainerWriter &writer,
                      nlohmann::json &resources);

// Where a recorded resource is on this machine (see ContainerDecoder), verified by hash. An
// embedded copy is written to a temporary file whose path is appended to `extracted`.
std::string resolve_resource(const ContainerReader &reader, const nlohmann::json &r,
                             std::vector<std::filesystem::path> &extracted);

} // namespace nwc::host::detail
