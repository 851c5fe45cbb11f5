// levels.cpp — per-column quality levels from the diagonal of a calibration Hessian.
#include "nwc/host/levels.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace nwc::host {

std::vector<uint8_t> levels_from_hessian(const float *hessian, int64_t n,
                                         const std::vector<double> &fractions) {
  if (fractions.size() > 15) fail(NWC_E_INVALID_ARG, "levels: at most 15 fractions");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) order[static_cast<size_t>(j)] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return hessian[a * n + a] > hessian[b * n + b]; });
  std::vector<uint8_t> levels(static_cast<size_t>(n), 0);
  size_t next = 0;
  for (size_t k = 0; k < fractions.size(); ++k) {
    const auto count = static_cast<size_t>(std::ceil(fractions[k] * static_cast<double>(n) - 1e-9));
    for (size_t c = 0; c < count && next < order.size(); ++c, ++next)
      levels[static_cast<size_t>(order[next])] = static_cast<uint8_t>(fractions.size() - k);
  }
  return levels;
}

} // namespace nwc::host
