// Fuzz target: the decoder of nwc.entropy.rans with external CDF tables (the mode the NWC neural
// transform uses), tables and stream both taken from the input, so the tables' validation is
// fuzzed as well as the decoder.
//
// Input: u32 symbol count; u8 precision; u16 channels (1..64); u16 max_length (1..4096); then
// channels * max_length u32 CDF entries, channels u16 lengths, channels i32 offsets; then the
// stream. All little-endian.
#include "fuzz_entropy.hpp"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nwc::fuzz::Input in{data, size};
  int64_t n = 0;
  if (!nwc::fuzz::take_count(in, n)) return 0;
  if (in.size < 5) return 0;
  const auto precision = static_cast<uint32_t>(in.take(1));
  const auto channels = static_cast<uint32_t>(in.take(2));
  const auto max_length = static_cast<uint32_t>(in.take(2));
  if (channels == 0 || channels > 64 || max_length == 0 || max_length > 4096) return 0;
  const size_t table_bytes = size_t{channels} * max_length * 4 + size_t{channels} * 6;
  if (in.size < table_bytes) return 0;
  std::vector<uint32_t> cdf(size_t{channels} * max_length);
  std::vector<uint32_t> lengths(channels);
  std::vector<int32_t> offsets(channels);
  for (auto &v : cdf) v = static_cast<uint32_t>(in.take(4));
  for (auto &v : lengths) v = static_cast<uint32_t>(in.take(2));
  for (auto &v : offsets) v = static_cast<int32_t>(static_cast<uint32_t>(in.take(4)));
  const nwc_cdf_model model{sizeof(nwc_cdf_model), precision,     channels, max_length, cdf.data(),
                            lengths.data(),        offsets.data()};
  (void)nwc::fuzz::decode_entropy(nwc::fuzz::entropy_instance("nwc.entropy.rans"), in.data, in.size,
                                  n, &model);
  return 0;
}
