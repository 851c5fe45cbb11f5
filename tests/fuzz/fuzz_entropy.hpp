// Shared body of the entropy-decoder fuzz targets. The plugin's source is compiled into the target
// (as its unit tests do), so the decoder is instrumented and driven through its real C ABI.
//
// Input layout (all entropy targets): u32 little-endian symbol count n, then the stream bytes.
// Counts above kMaxSymbols are skipped. The seed corpus holds real streams cut out of containers
// (scripts/fuzz.sh seeds, tool nwc_fuzz_seeds) in this layout.
#pragma once

#include "fuzz_common.hpp"
#include "nwc/testing/stage_harness.hpp"

#include <cstdlib>
#include <utility>
#include <vector>

namespace nwc::fuzz {

// Decodes `stream` into n symbols with the plugin's decoder; true when it accepted the stream. A
// refusal must come with a message (the ABI's contract: errors are explained).
inline bool decode_entropy(nwc::test::Instance &inst, const uint8_t *stream, size_t size, int64_t n,
                           const nwc_cdf_model *model, std::vector<int32_t> *decoded = nullptr) {
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  if (!e) std::abort();
  std::vector<int32_t> symbols(static_cast<size_t>(n), 0);
  nwc::test::View out(symbols.data(), 1, n);
  const nwc_status st = e->decode(inst.get(), nwc_bytes{stream, size}, model, out.get());
  if (st != NWC_OK && inst.last_error().empty()) std::abort();
  if (st != NWC_OK) note(inst.last_error().c_str());
  if (decoded) *decoded = std::move(symbols);
  return st == NWC_OK;
}

// One instance per process, created with default options.
inline nwc::test::Instance &entropy_instance(const char *id) {
  static nwc::test::Instance inst(id);
  if (!inst.ok()) std::abort();
  return inst;
}

// Reads the symbol count; false when the input is too short or the count is over the cap.
inline bool take_count(Input &in, int64_t &n) {
  if (in.size < 4) return false;
  const uint64_t v = in.take(4);
  if (v > static_cast<uint64_t>(kMaxSymbols)) return false;
  n = static_cast<int64_t>(v);
  return true;
}

} // namespace nwc::fuzz
