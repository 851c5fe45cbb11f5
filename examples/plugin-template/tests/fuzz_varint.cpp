// A fuzz target for org.example.entropy.varint's decoder: the template of a fuzz target for any
// plugin that reads untrusted bytes. Every stream in a container comes from a file, so decode must
// either succeed or return an error status for any input: never crash, hang, read out of bounds or
// allocate without bound. What it decodes must survive a round trip: encode(decode(stream))
// decodes to the same symbols.
//
// Input: a u32 little-endian symbol count (capped at 2^16), then the stream.
//   clang (TEMPLATE_FUZZ=ON): libFuzzer drives LLVMFuzzerTestOneInput under ASan + UBSan;
//   any compiler: fuzz_varint_replay runs it on every file of tests/corpus/varint (ctest).
#include "nwc/testing/stage_harness.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace t = nwc::test;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4) return 0;
  uint32_t count = 0;
  std::memcpy(&count, data, 4);
  if (count > (1u << 16)) return 0; // bounded work per input
  static t::Instance coder("org.example.entropy.varint");
  if (!coder.ok()) std::abort();
  std::vector<int32_t> symbols(count);
  if (t::entropy_decode(coder, data + 4, size - 4, symbols) != NWC_OK) return 0; // refused: fine
  std::vector<uint8_t> again;
  std::vector<int32_t> back(count);
  if (t::entropy_encode(coder, symbols, again) != NWC_OK ||
      t::entropy_decode(coder, again, back) != NWC_OK || back != symbols) {
    std::fprintf(stderr, "fuzz_varint: decoded symbols do not survive encode and decode\n");
    std::abort();
  }
  return 0;
}
