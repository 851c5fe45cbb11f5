// Fuzz target: the llama2.c checkpoint reader (7-int32 header, the file size it implies) and
// loading every tensor it accepts (up to the work cap).
#include "fuzz_common.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/llama2c.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static nwc::fuzz::ScratchFile scratch(".bin");
  const auto &path = scratch.write(data, size);
  try {
    nwc::Model m = nwc::read_llama2c(path);
    for (const auto &t : m.tensors)
      if (t.info.numel() <= nwc::fuzz::kMaxLoadElements) (void)t.load();
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  return 0;
}
