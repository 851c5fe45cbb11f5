// Fuzz target: the GGUF reader (header, metadata key-values, tensor infos, alignment, offsets) and
// loading every tensor it accepts (F32, F16, BF16, Q8_0; up to the work cap).
#include "fuzz_common.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static nwc::fuzz::ScratchFile scratch(".gguf");
  const auto &path = scratch.write(data, size);
  try {
    nwc::Model m = nwc::read_gguf(path);
    for (const auto &t : m.tensors)
      if (t.info.numel() <= nwc::fuzz::kMaxLoadElements) (void)t.load();
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  return 0;
}
