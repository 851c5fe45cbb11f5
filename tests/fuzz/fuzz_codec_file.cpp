// Fuzz target: the `.nwcc` codec-file loader (nwc::neural::load_codec: a safetensors file with the
// codec's parameters, CDF tables and JSON metadata), which containers can embed. An accepted codec
// is also run once: analysis and synthesis of one chunk per level, and the entropy estimate.
#include "fuzz_common.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/codec_file.hpp"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static nwc::fuzz::ScratchFile scratch(".nwcc");
  const auto &path = scratch.write(data, size);
  try {
    const nwc::neural::CodecFile c = nwc::neural::load_codec(path);
    const auto chunk = static_cast<size_t>(c.config.chunk);
    const auto latent = static_cast<size_t>(c.config.latent);
    std::vector<float> x(chunk, 0.5f), y(latent), back(chunk);
    for (int64_t q = 0; q < c.config.levels && q < 16; ++q) {
      const auto level = static_cast<uint8_t>(q);
      c.analyze(x.data(), 1, &level, y.data());
      c.synthesize(y.data(), 1, &level, back.data());
    }
    (void)c.estimate_bits(y.data(), 1);
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  return 0;
}
