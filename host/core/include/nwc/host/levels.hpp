// nwc/host/levels.hpp — per-column quality levels from calibration importance (a pipeline's
// [levels] table; stored with each tensor as stream "levels" and handed to the transform).
#pragma once

#include <cstdint>
#include <vector>

namespace nwc::host {

// Quality level of each of n input columns from the diagonal of their Hessian H (n x n, row-major),
// the columns' mean squared input: ranked by diag(H) descending (ties: lower index first), the
// first ceil(fractions[0] * n) get level fractions.size(), the next ceil(fractions[1] * n) one
// less, and so on; the rest level 0. Ceil rather than the reference's floor: on narrow layers
// (64 columns) floor would give the top levels no column at all, ceil gives each band at least
// one column whenever its fraction is positive.
std::vector<uint8_t> levels_from_hessian(const float *hessian, int64_t n,
                                         const std::vector<double> &fractions);

} // namespace nwc::host
