// nwc.comp.none — no error feedback: codes the tensor in column blocks, left to right.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <vector>

namespace {

class NoCompensation final : public nwc::Compensator {
public:
  static constexpr const char *id = "nwc.comp.none";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "none";
  static constexpr const char *description =
      "No error compensation. Codes each tensor in independent column blocks of `block` columns "
      "(0 = the whole width), left to right; blocks decode in parallel.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::int_option("block", 0, 0, 1 << 20,
                              "Columns per independently decodable block; 0 codes the whole "
                              "tensor as one block.",
                              0, "columns"));

  explicit NoCompensation(const nwc::Options &opts) : block_(opts.get_int("block")) {}

  void compensate(std::string_view, nwc::ConstTensor<float> weight, const nwc_tensor_view *,
                  nwc_block_codec &codec) override {
    const int64_t step = block_ > 0 ? block_ : std::max<int64_t>(weight.cols, 1);
    std::vector<float> values, recon;
    for (int64_t c0 = 0; c0 < weight.cols; c0 += step) {
      const int64_t c1 = std::min(weight.cols, c0 + step), w = c1 - c0;
      values.resize(static_cast<size_t>(weight.rows * w));
      recon.resize(values.size());
      for (int64_t r = 0; r < weight.rows; ++r)
        std::copy_n(weight.row(r) + c0, w, values.data() + r * w);
      nwc::encode_block(codec, c0, c1, {values.data(), weight.rows, w},
                        {recon.data(), weight.rows, w});
    }
  }

private:
  int64_t block_;
};

} // namespace

NWC_MODULE(NoCompensation)
