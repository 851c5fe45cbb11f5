// nwc plugins check: the compensator steps.
#include "check_steps.hpp"
#include "fixtures.hpp"
#include "nwc/testing/stage_harness.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

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
           // Rounds to a grid of step 1/64 and counts the commits of each column.
           nwc::test::GridBlockCodec codec(kRows, kCols, 64.0f);
           View wv(w.data(), NWC_DTYPE_F32, kRows, kCols);
           View hv(h.data(), NWC_DTYPE_F32, kCols, kCols);
           nwc_status st =
               ci.compensate(inst.raw(), "check.weight", wv.get(), hv.get(), codec.get());
           if (!codec.error.empty()) throw StepFailed(codec.error);
           inst.check(st, "compensate");
           for (int64_t k = 0; k < kCols; ++k)
             require(codec.commits[static_cast<size_t>(k)] == 1,
                     "column " + std::to_string(k) + " coded " +
                         std::to_string(codec.commits[static_cast<size_t>(k)]) +
                         " times (expected once)");
           return std::string("every column coded once");
         });
}

} // namespace nwc::cli::check
