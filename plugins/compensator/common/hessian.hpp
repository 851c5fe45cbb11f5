// Hessian preparation shared by the Hessian-guided compensators (GPTQ, LDLQ): dead input
// columns, dampening with retries, Cholesky factorisation. Internal to these plugins (each
// plugin library compiles its own copy; nothing here crosses the ABI).
#pragma once

#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace nwc::compensate {

// Lower Cholesky factor of the symmetric n×n matrix a (row-major, lower triangle read), written
// over a with zeros above the diagonal. False when a is not positive definite.
inline bool lower_cholesky(std::vector<double> &a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double *ri = a.data() + i * n;
    for (int64_t j = 0; j <= i; ++j) {
      const double *rj = a.data() + j * n;
      double s = ri[j];
      for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
      if (j < i) {
        ri[j] = s / rj[j];
      } else {
        if (!(s > 0.0) || !std::isfinite(s)) return false;
        ri[i] = std::sqrt(s);
      }
    }
    std::fill(ri + i + 1, ri + n, 0.0);
  }
  return true;
}

// Inputs never active during calibration (H[j][j] == 0) cannot matter: their weight columns
// (w, rows × n) are zeroed and a unit diagonal keeps H positive definite. Returns their count.
inline int64_t zero_dead_columns(std::vector<double> &h, std::vector<double> &w, int64_t rows,
                                 int64_t n) {
  int64_t dead = 0;
  for (int64_t j = 0; j < n; ++j)
    if (h[j * n + j] == 0.0) {
      ++dead;
      h[j * n + j] = 1.0;
      for (int64_t r = 0; r < rows; ++r) w[r * n + j] = 0.0;
    }
  return dead;
}

// Lower Cholesky factor of H + damp·I with damp = percdamp × mean(diag H), multiplied by 10 (with
// a warning through host) while the factorisation fails, as GPTQ does. damp_out receives the
// dampening used.
inline std::vector<double> dampened_cholesky(const std::vector<double> &h, int64_t n,
                                             double percdamp, const nwc::Host &host,
                                             const std::string &tensor, double *damp_out) {
  double mean_diag = 0.0;
  for (int64_t i = 0; i < n; ++i) mean_diag += h[i * n + i];
  mean_diag /= static_cast<double>(n);
  double damp = percdamp * mean_diag;
  std::vector<double> c;
  for (int attempt = 0;; ++attempt) {
    c = h;
    for (int64_t i = 0; i < n; ++i) c[i * n + i] += damp;
    if (lower_cholesky(c, n)) break;
    if (attempt == 8)
      nwc::fail(NWC_E_INVALID_ARG, "tensor " + tensor +
                                       ": Hessian is not positive definite even with dampening " +
                                       std::to_string(damp));
    damp = damp > 0.0 ? damp * 10.0 : 1e-6 * std::max(mean_diag, 1e-12);
    host.warn("tensor " + tensor + ": Cholesky factorization failed, retrying with dampening " +
              std::to_string(damp));
  }
  if (damp_out) *damp_out = damp;
  return c;
}

} // namespace nwc::compensate
