// Hessian linear algebra shared by the Hessian-guided compensators (GPTQ, LDLQ): dead input
// columns, dampening with retries, blocked Cholesky factorisation and triangular inverse. Internal
// to these plugins (target nwc::linalg, header-only: each plugin library compiles its own copy;
// nothing here crosses the ABI).
//
// All matrices are row-major. The O(n³) work is matrix products (gemm.hpp), whose results do not
// depend on the machine's thread count or CPU; the factorisations fix their own block size
// (kBlock) for the same reason. (LAPACK's dpotrf in OpenBLAS, for one, blocks differently with one
// thread than with several, so its bits would depend on OPENBLAS_NUM_THREADS.)
#pragma once

#include "nwc/cpp/plugin.hpp"
#include "nwc/linalg/gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nwc::compensate {

// Block size of the factorisations.
inline constexpr int64_t kBlock = 128;

// Lower Cholesky factor of the b × b block at a (row stride ld; lower triangle read and written,
// nothing above the diagonal touched). False when it is not positive definite.
inline bool cholesky_unblocked(double *a, int64_t ld, int64_t b) {
  for (int64_t i = 0; i < b; ++i) {
    double *ri = a + i * ld;
    for (int64_t j = 0; j <= i; ++j) {
      const double *rj = a + j * ld;
      double s = ri[j];
      for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
      if (j < i) {
        ri[j] = s / rj[j];
      } else {
        if (!(s > 0.0) || !std::isfinite(s)) return false;
        ri[i] = std::sqrt(s);
      }
    }
  }
  return true;
}

// Inverse of the b × b lower-triangular block l (row stride ldl) into x (b × b, row stride b,
// zeros above the diagonal).
inline void invert_lower_unblocked(const double *l, int64_t ldl, double *x, int64_t b) {
  std::fill(x, x + b * b, 0.0);
  for (int64_t j = 0; j < b; ++j) {
    x[j * b + j] = 1.0 / l[j * ldl + j];
    for (int64_t i = j + 1; i < b; ++i) {
      double v = 0.0;
      for (int64_t k = j; k < i; ++k) v -= l[i * ldl + k] * x[k * b + j];
      x[i * b + j] = v / l[i * ldl + i];
    }
  }
}

// Lower Cholesky factor of the symmetric n × n matrix a (row stride lda, lower triangle read),
// written over a with zeros above the diagonal. False when a is not positive definite.
// Right-looking in blocks of kBlock: factor the diagonal block, scale the panel below it by the
// inverse of that block (one product), then subtract the panel's outer product from the lower part
// of the trailing matrix, one block column at a time (one product each).
inline bool lower_cholesky(double *a, int64_t n, int64_t lda) {
  std::vector<double> inv(static_cast<size_t>(kBlock * kBlock)), panel;
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int64_t b = std::min(kBlock, n - k0), k1 = k0 + b, m = n - k1;
    double *d = a + k0 * lda + k0;
    if (!cholesky_unblocked(d, lda, b)) return false;
    if (m == 0) break;
    invert_lower_unblocked(d, lda, inv.data(), b);
    // A[k1:, k0:k1] ← A[k1:, k0:k1] · D⁻ᵀ
    panel.resize(static_cast<size_t>(m * b));
    for (int64_t i = 0; i < m; ++i)
      std::copy(a + (k1 + i) * lda + k0, a + (k1 + i) * lda + k1, panel.data() + i * b);
    gemm(false, true, m, b, b, 1.0, panel.data(), b, inv.data(), b, 0.0, a + k1 * lda + k0, lda);
    // A[j0:, j0:j1] -= P[j0:] · P[j0:j1]ᵀ with P = A[:, k0:k1] (above the diagonal of the
    // diagonal blocks this writes values that are never read and cleared at the end).
    for (int64_t j0 = k1; j0 < n; j0 += kBlock) {
      const int64_t j1 = std::min(n, j0 + kBlock);
      const double *p = a + j0 * lda + k0;
      gemm(false, true, n - j0, j1 - j0, b, -1.0, p, lda, p, lda, 1.0, a + j0 * lda + j0, lda);
    }
  }
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * lda + i + 1, a + i * lda + n, 0.0);
  return true;
}

// X = L⁻¹ of the n × n lower-triangular a (row stride lda, zeros above the diagonal), in place.
// Blocked forward substitution of L X = I, right-looking: block row k of X is D_k⁻¹ times what
// remains of its right-hand side, which is then subtracted, times L's panel below D_k, from the
// right-hand sides of the rows below (one product). The right-hand sides live where L's columns
// were, once those are no longer needed.
inline void lower_inverse(double *a, int64_t n, int64_t lda) {
  std::vector<double> inv(static_cast<size_t>(kBlock * kBlock)), rhs, panel;
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int64_t b = std::min(kBlock, n - k0), k1 = k0 + b, m = n - k1;
    invert_lower_unblocked(a + k0 * lda + k0, lda, inv.data(), b);
    if (k0 > 0) { // X[k0:k1, :k0] = D⁻¹ · R[k0:k1, :k0]
      rhs.resize(static_cast<size_t>(b * k0));
      for (int64_t i = 0; i < b; ++i)
        std::copy(a + (k0 + i) * lda, a + (k0 + i) * lda + k0, rhs.data() + i * k0);
      gemm(false, false, b, k0, b, 1.0, inv.data(), b, rhs.data(), k0, 0.0, a + k0 * lda, lda);
    }
    for (int64_t i = 0; i < b; ++i)
      std::copy(inv.data() + i * b, inv.data() + (i + 1) * b, a + (k0 + i) * lda + k0);
    if (m == 0) break;
    // R[k1:, :k1] -= L[k1:, k0:k1] · X[k0:k1, :k1], where R[k1:, k0:k1] starts at 0.
    panel.resize(static_cast<size_t>(m * b));
    for (int64_t i = 0; i < m; ++i) {
      double *row = a + (k1 + i) * lda;
      std::copy(row + k0, row + k1, panel.data() + i * b);
      std::fill(row + k0, row + k1, 0.0);
    }
    gemm(false, false, m, k1, b, -1.0, panel.data(), b, a + k0 * lda, lda, 1.0, a + k1 * lda, lda);
  }
}

// The Hessian a compensator was given for tensor `tensor` of width n: present and [n, n], else
// NWC_E_INVALID_ARG naming the tensor and what `method` (the compensator's name) expected.
inline nwc::ConstTensor<float> require_hessian(const nwc_tensor_view *hessian,
                                               const std::string &tensor, int64_t n,
                                               const char *method) {
  if (!hessian)
    nwc::fail(NWC_E_INVALID_ARG, "tensor " + tensor + ": " + method + " needs its Hessian");
  nwc::ConstTensor<float> hv(hessian);
  if (hv.rows != n || hv.cols != n)
    nwc::fail(NWC_E_INVALID_ARG, "tensor " + tensor + ": Hessian is [" + std::to_string(hv.rows) +
                                     ", " + std::to_string(hv.cols) + "], expected [" +
                                     std::to_string(n) + ", " + std::to_string(n) + "]");
  return hv;
}

// Inputs never active during calibration (H[j][j] == 0) cannot matter: their weight columns are
// coded as zeros and a unit diagonal keeps H positive definite. Marks them in dead (n entries,
// diag is H's diagonal) and returns their count.
inline int64_t find_dead_columns(const float *h, int64_t n, std::vector<char> &dead,
                                 std::vector<double> &diag) {
  dead.assign(static_cast<size_t>(n), 0);
  diag.resize(static_cast<size_t>(n));
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double v = h[j * n + j];
    dead[static_cast<size_t>(j)] = v == 0.0;
    count += v == 0.0;
    diag[static_cast<size_t>(j)] = v == 0.0 ? 1.0 : v;
  }
  return count;
}

// Lower Cholesky factor of H + damp·I into a (n × n, row-major) with damp = percdamp ×
// mean_diag, multiplied by 10 (with a warning through host) while the factorisation fails, as
// GPTQ does. fill(a) writes the lower triangle of H (in whatever order the caller factors it,
// dead columns' unit diagonal included) before each attempt. damp_out receives the dampening
// used.
template <class Fill>
void dampened_cholesky(std::vector<double> &a, int64_t n, double mean_diag, double percdamp,
                       const nwc::Host &host, const std::string &tensor, double *damp_out,
                       const Fill &fill) {
  a.resize(static_cast<size_t>(n * n));
  double damp = percdamp * mean_diag;
  for (int attempt = 0;; ++attempt) {
    fill(a);
    for (int64_t i = 0; i < n; ++i) a[static_cast<size_t>(i * n + i)] += damp;
    if (lower_cholesky(a.data(), n, n)) break;
    if (attempt == 8)
      nwc::fail(NWC_E_INVALID_ARG, "tensor " + tensor +
                                       ": Hessian is not positive definite even with dampening " +
                                       std::to_string(damp));
    damp = damp > 0.0 ? damp * 10.0 : 1e-6 * std::max(mean_diag, 1e-12);
    host.warn("tensor " + tensor + ": Cholesky factorization failed, retrying with dampening " +
              std::to_string(damp));
  }
  if (damp_out) *damp_out = damp;
}

} // namespace nwc::compensate
