// Fuzz target: the pipeline TOML loader: TOML syntax (toml++), the [pipeline] keys, stage tables
// validated against the schemas of the built plugins (the registry scans them once), [[override]]
// rules, [levels], [blockft], [calibration]; then the chain of a few tensor names, which applies
// the overrides. The text is named pipelines/fuzz.toml of the source tree, so that the presets'
// relative codec paths (../codecs/*.nwcc) resolve as they do for the shipped files.
#include "fuzz_common.hpp"
#include "fuzz_registry.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"

#include <string>

using nwc::fuzz::registry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string text(reinterpret_cast<const char *>(data), size);
  try {
    const nwc::host::Pipeline p = nwc::host::parse_pipeline(
        text, std::filesystem::path(NWC_FUZZ_SOURCE_DIR) / "pipelines" / "fuzz.toml", registry());
    for (const char *name : {"model.layers.0.self_attn.q_proj.weight",
                             "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"})
      (void)p.chain_for(name);
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  return 0;
}
