// Fuzz target: the NWC stream — what the neural transform's decoder does with a block: the rANS
// payload decoded against a real codec's CDF tables (codecs/nwc-t-l300.nwcc, a prior per quality
// level, or NWC_FUZZ_CODEC), the latents re-centred on the codec's medians and run through the
// synthesis MLP. With a prior per level each chunk's symbols are decoded with its level's tables,
// as the host hands them over (row_length = latent channels, row_levels = the chunks' levels).
// Without the codec file the target is a no-op (a fresh checkout may lack codecs/).
//
// Input: u32 little-endian symbol count (chunks x latent channels); u8 level: below the codec's
// level count, every chunk's level (the seeds, cut from data-free containers, are level 0), else
// chunk i at level i mod levels; then the rANS stream.
#include "fuzz_entropy.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/codec_file.hpp"

#include <memory>
#include <system_error>
#include <vector>

namespace {

const nwc::neural::CodecFile *codec() {
  static const std::unique_ptr<nwc::neural::CodecFile> c = [] {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(nwc::fuzz::codec_file(), ec))
      return std::unique_ptr<nwc::neural::CodecFile>();
    return std::make_unique<nwc::neural::CodecFile>(
        nwc::neural::load_codec(nwc::fuzz::codec_file()));
  }();
  return c.get();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const nwc::neural::CodecFile *c = codec();
  if (!c) return 0;
  nwc::fuzz::Input in{data, size};
  int64_t n = 0;
  if (!nwc::fuzz::take_count(in, n)) return 0;
  const int64_t latent = c->config.latent;
  if (n % latent != 0) return 0;
  if (in.size < 1) return 0;
  const auto level = static_cast<int64_t>(in.take(1));
  const int64_t chunks = n / latent;
  std::vector<uint8_t> levels(static_cast<size_t>(chunks));
  for (int64_t i = 0; i < chunks; ++i)
    levels[static_cast<size_t>(i)] =
        static_cast<uint8_t>(level < c->config.levels ? level : i % c->config.levels);
  nwc_cdf_model model = c->tables.view();
  model.row_length = static_cast<uint32_t>(latent);
  model.row_levels = levels.data();
  std::vector<int32_t> symbols;
  if (!nwc::fuzz::decode_entropy(nwc::fuzz::entropy_instance("nwc.entropy.rans"), in.data, in.size,
                                 n, &model, &symbols))
    return 0;
  std::vector<float> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < chunks; ++i)
    for (int64_t ch = 0; ch < latent; ++ch) {
      const auto k = static_cast<size_t>(i * latent + ch);
      y[k] = static_cast<float>(symbols[k]) + c->tables.medians[static_cast<size_t>(ch)];
    }
  std::vector<float> x(static_cast<size_t>(chunks * c->config.chunk));
  c->synthesize(y.data(), chunks, levels.data(), x.data());
  return 0;
}
