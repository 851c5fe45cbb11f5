// nwc plugins check: the rotation steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

bool check_rotation(const Instance &inst) {
  const auto &ri = inst.interface_as<nwc_rotation_interface>(NWC_ROTATION_INTERFACE);
  const int64_t n = kRows, m = kCols;
  const std::vector<float> w = check_weight();
  // Rotations may use the Hessian (a column order by its diagonal, say): plan gets one, and the
  // rotated Hessian must keep its trace (V orthogonal) and stay symmetric.
  const std::vector<float> h = check_hessian();
  std::vector<float> rotated, back;
  Sink side;
  return step("plan",
              [&] {
                View hv(h.data(), NWC_DTYPE_F32, m, m);
                inst.check(ri.plan(inst.raw(), "check.weight", n, m, hv.get(), &side.sink), "plan");
                return std::to_string(side.bytes.size()) + " bytes of side information";
              }) &&
         step("forward_hessian",
              [&] {
                std::vector<float> hr = h;
                View hv(hr.data(), NWC_DTYPE_F32, m, m);
                inst.check(ri.forward_hessian(inst.raw(), side.view(), hv.get()),
                           "forward_hessian");
                require(all_finite(hr), "forward_hessian returned non-finite values");
                double t0 = 0, t1 = 0, asym = 0;
                for (int64_t i = 0; i < m; ++i) {
                  t0 += h[static_cast<size_t>(i * m + i)];
                  t1 += hr[static_cast<size_t>(i * m + i)];
                  for (int64_t j = 0; j < i; ++j)
                    asym = std::max(asym, std::fabs(double(hr[static_cast<size_t>(i * m + j)]) -
                                                    hr[static_cast<size_t>(j * m + i)]));
                }
                require(std::fabs(t1 - t0) <= 1e-4 * t0,
                        "forward_hessian changed the trace (not V·H·Vᵀ with V orthogonal)");
                require(asym <= 1e-4 * t0 / static_cast<double>(m),
                        "forward_hessian returned an asymmetric matrix");
                return std::string("trace and symmetry kept");
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
