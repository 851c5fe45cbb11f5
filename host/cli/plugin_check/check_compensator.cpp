// nwc plugins check: the compensator steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

namespace {

// A block codec for compensators: rounds values to a grid of step 1/64 and checks that blocks
// cover every column exactly once.
struct GridCodec {
  nwc_block_codec codec{};
  std::vector<int> covered = std::vector<int>(kCols, 0);
  std::string error;
  GridCodec() {
    codec.struct_size = sizeof(nwc_block_codec);
    codec.ctx = this;
    codec.rows = kRows;
    codec.cols = kCols;
    codec.encode = [](nwc_block_codec *c, int64_t c0, int64_t c1, const nwc_tensor_view *values,
                      nwc_tensor_view *recon) -> nwc_status {
      return c->encode_ex(c, c0, c1, values, nullptr, 0, recon);
    };
    codec.encode_ex = [](nwc_block_codec *c, int64_t c0, int64_t c1, const nwc_tensor_view *values,
                         const nwc_tensor_view *, uint32_t flags,
                         nwc_tensor_view *recon) -> nwc_status {
      auto *self = static_cast<GridCodec *>(c->ctx);
      if (c0 < 0 || c1 > kCols || c0 >= c1 || !values || !recon || values->dtype != NWC_DTYPE_F32 ||
          recon->dtype != NWC_DTYPE_F32 || values->shape[0] != kRows ||
          values->shape[1] != c1 - c0) {
        self->error = "block [" + std::to_string(c0) + ", " + std::to_string(c1) +
                      ") with malformed arguments";
        return NWC_E_INVALID_ARG;
      }
      const auto *in = static_cast<const float *>(values->data);
      auto *out = static_cast<float *>(recon->data);
      for (int64_t i = 0; i < kRows * (c1 - c0); ++i)
        out[i] = std::nearbyint(in[i] * 64.0f) / 64.0f;
      if (!(flags & NWC_BLOCK_DRY_RUN))
        for (int64_t k = c0; k < c1; ++k) self->covered[static_cast<size_t>(k)]++;
      return NWC_OK;
    };
  }
};

} // namespace

bool check_compensator(const Instance &inst) {
  const auto &ci = inst.interface_as<nwc_compensator_interface>(NWC_COMPENSATOR_INTERFACE);
  std::vector<float> w = check_weight();
  for (auto &x : w) x *= 50.0f; // values of about 1, so the 1/64 grid matters
  const std::vector<float> h = check_hessian();
  uint32_t req = 0;
  return step("requirements",
              [&] {
                req = ci.requirements(inst.raw());
                return std::string(req & NWC_COMPENSATOR_NEEDS_HESSIAN ? "needs a Hessian"
                                                                       : "no Hessian needed");
              }) &&
         step("compensate", [&] {
           GridCodec codec;
           View wv(w.data(), NWC_DTYPE_F32, kRows, kCols);
           View hv(h.data(), NWC_DTYPE_F32, kCols, kCols);
           nwc_status st =
               ci.compensate(inst.raw(), "check.weight", wv.get(), hv.get(), &codec.codec);
           if (st != NWC_OK && !codec.error.empty()) throw StepFailed(codec.error);
           inst.check(st, "compensate");
           for (int64_t k = 0; k < kCols; ++k)
             require(codec.covered[static_cast<size_t>(k)] == 1,
                     "column " + std::to_string(k) + " coded " +
                         std::to_string(codec.covered[static_cast<size_t>(k)]) +
                         " times (expected once)");
           return std::string("every column coded once");
         });
}

} // namespace nwc::cli::check
