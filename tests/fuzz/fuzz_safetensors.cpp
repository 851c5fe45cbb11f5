// Fuzz target: the safetensors reader (header JSON, dtypes, shapes, offsets) and loading every
// tensor it accepts (up to the work cap).
#include "fuzz_common.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static nwc::fuzz::ScratchFile scratch(".safetensors");
  const auto &path = scratch.write(data, size);
  try {
    nwc::Model m = nwc::read_safetensors(path);
    for (const auto &t : m.tensors)
      if (t.info.numel() <= nwc::fuzz::kMaxLoadElements) (void)t.load();
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  return 0;
}
