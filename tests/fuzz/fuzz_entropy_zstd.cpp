// Fuzz target: the decoder of nwc.entropy.zstd (no probability model).
// Input: u32 little-endian symbol count, then the stream (fuzz_entropy.hpp).
#include "fuzz_entropy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nwc::fuzz::Input in{data, size};
  int64_t n = 0;
  if (!nwc::fuzz::take_count(in, n)) return 0;
  (void)nwc::fuzz::decode_entropy(nwc::fuzz::entropy_instance("nwc.entropy.zstd"), in.data, in.size,
                                  n, nullptr);
  return 0;
}
