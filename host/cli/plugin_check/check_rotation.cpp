// nwc plugins check: the rotation steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

bool check_rotation(const Instance &inst) {
  const auto &ri = inst.interface_as<nwc_rotation_interface>(NWC_ROTATION_INTERFACE);
  const int64_t n = kRows, m = kCols;
  const std::vector<float> w = check_weight();
  std::vector<float> rotated, back;
  Sink side;
  return step("plan",
              [&] {
                inst.check(ri.plan(inst.raw(), "check.weight", n, m, nullptr, &side.sink), "plan");
                return std::to_string(side.bytes.size()) + " bytes of side information";
              }) &&
         step("forward",
              [&] {
                rotated = w;
                View v(rotated.data(), NWC_DTYPE_F32, n, m);
                inst.check(ri.forward(inst.raw(), side.view(), v.get()), "forward");
                require(all_finite(rotated), "forward returned non-finite values");
                double a = 0, b = 0;
                for (size_t i = 0; i < w.size(); ++i) {
                  a += double(w[i]) * w[i];
                  b += double(rotated[i]) * rotated[i];
                }
                require(std::fabs(std::sqrt(a) - std::sqrt(b)) <= 1e-4 * std::sqrt(a),
                        "forward changed the Frobenius norm (not orthogonal)");
                return std::string("norm kept");
              }) &&
         step("inverse", [&] {
           back = rotated;
           View v(back.data(), NWC_DTYPE_F32, n, m);
           inst.check(ri.inverse(inst.raw(), side.view(), v.get()), "inverse");
           const double d = max_abs_diff(back, w);
           require(d <= 1e-5, "inverse(forward(W)) differs from W by " + std::to_string(d));
           char note[64];
           std::snprintf(note, sizeof note, "max difference %.3g", d);
           return std::string(note);
         });
}

} // namespace nwc::cli::check
