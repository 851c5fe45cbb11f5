// Fuzz target: the decoder of nwc.entropy.rans with external CDF tables (the mode the NWC neural
// transform uses), tables and stream both taken from the input, so the tables' validation is
// fuzzed as well as the decoder, with tables per quality level (ABI 1.7) and the row levels that
// pick them.
//
// Input: u32 symbol count; u8 precision; u16 channels (1..64); u16 max_length (1..4096); u8 levels
// (0..4; 0 and 1: one set of tables); u8 default_level; u8 row_length (0: no row levels, every
// symbol at the default level); then levels * channels * max_length u32 CDF entries, levels *
// channels u16 lengths, levels * channels i32 offsets; then, with a row length, one level byte per
// row of symbols; then the stream. All little-endian.
#include "fuzz_entropy.hpp"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nwc::fuzz::Input in{data, size};
  int64_t n = 0;
  if (!nwc::fuzz::take_count(in, n)) return 0;
  if (in.size < 8) return 0;
  const auto precision = static_cast<uint32_t>(in.take(1));
  const auto channels = static_cast<uint32_t>(in.take(2));
  const auto max_length = static_cast<uint32_t>(in.take(2));
  const auto levels = static_cast<uint32_t>(in.take(1));
  const auto default_level = static_cast<uint32_t>(in.take(1));
  const auto row_length = static_cast<int64_t>(in.take(1));
  if (channels == 0 || channels > 64 || max_length == 0 || max_length > 4096 || levels > 4)
    return 0;
  const size_t tables = size_t{channels} * (levels > 1 ? levels : 1);
  const size_t table_bytes = tables * max_length * 4 + tables * 6;
  if (in.size < table_bytes) return 0;
  std::vector<uint32_t> cdf(tables * max_length);
  std::vector<uint32_t> lengths(tables);
  std::vector<int32_t> offsets(tables);
  for (auto &v : cdf) v = static_cast<uint32_t>(in.take(4));
  for (auto &v : lengths) v = static_cast<uint32_t>(in.take(2));
  for (auto &v : offsets) v = static_cast<int32_t>(static_cast<uint32_t>(in.take(4)));
  std::vector<uint8_t> row_levels;
  if (row_length > 0) {
    const auto rows = static_cast<size_t>((n + row_length - 1) / row_length);
    if (in.size < rows) return 0;
    for (size_t r = 0; r < rows; ++r) row_levels.push_back(static_cast<uint8_t>(in.take(1)));
  }
  const nwc_cdf_model model{sizeof(nwc_cdf_model),
                            precision,
                            channels,
                            max_length,
                            cdf.data(),
                            lengths.data(),
                            offsets.data(),
                            levels,
                            default_level,
                            row_length,
                            row_length > 0 ? row_levels.data() : nullptr};
  (void)nwc::fuzz::decode_entropy(nwc::fuzz::entropy_instance("nwc.entropy.rans"), in.data, in.size,
                                  n, &model);
  return 0;
}
