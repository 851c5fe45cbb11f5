// A matrix product with a fixed summation order, for the Hessian-guided compensators: every
// element of the result is the same sequence of fused multiply-adds whatever the matrix shapes,
// the cache blocking and the instruction set, so the compensators' output does not depend on the
// machine's BLAS, its thread count or its CPU (threaded BLAS libraries such as OpenBLAS split
// the product differently with one thread than with several and round differently at the tile
// edges, which would make the container bytes depend on OPENBLAS_NUM_THREADS and on the number
// of cores). Internal to these plugins (each plugin library compiles its own copy).
//
// Cache-blocked as in GotoBLAS/BLIS: panels of B (kKC × kNC) and A (kMC × kKC) are packed, and a
// 6 × 8 register tile runs over them: AVX2 + FMA when the CPU has them, otherwise the same
// operations one element at a time with std::fma (identical results, slower).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NWC_COMPENSATE_X86_KERNEL 1
#include <immintrin.h>
#endif

namespace nwc::compensate {

namespace gemm_detail {

inline constexpr int64_t kMR = 6, kNR = 8; // register tile
// Cache blocks: kMC a multiple of kMR, kNC of kNR.
inline constexpr int64_t kKC = 256, kMC = 72, kNC = 2040;

// The register tile c (kMR × kNR, row stride ldc; from 0 when !load): for p = 0, 1, …, kc − 1,
// c[i][j] = fma(a[p·kMR + i], b[p·kNR + j], c[i][j]).
inline void kernel_portable(int64_t kc, const double *a, const double *b, double *c, int64_t ldc,
                            bool load) {
  double t[kMR][kNR];
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t j = 0; j < kNR; ++j) t[i][j] = load ? c[i * ldc + j] : 0.0;
  for (int64_t p = 0; p < kc; ++p, a += kMR, b += kNR)
    for (int64_t i = 0; i < kMR; ++i)
      for (int64_t j = 0; j < kNR; ++j) t[i][j] = std::fma(a[i], b[j], t[i][j]);
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t j = 0; j < kNR; ++j) c[i * ldc + j] = t[i][j];
}

#ifdef NWC_COMPENSATE_X86_KERNEL
__attribute__((target("avx2,fma"))) inline void
kernel_avx2(int64_t kc, const double *a, const double *b, double *c, int64_t ldc, bool load) {
  __m256d c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (load) {
    c00 = _mm256_loadu_pd(c + 0 * ldc), c01 = _mm256_loadu_pd(c + 0 * ldc + 4);
    c10 = _mm256_loadu_pd(c + 1 * ldc), c11 = _mm256_loadu_pd(c + 1 * ldc + 4);
    c20 = _mm256_loadu_pd(c + 2 * ldc), c21 = _mm256_loadu_pd(c + 2 * ldc + 4);
    c30 = _mm256_loadu_pd(c + 3 * ldc), c31 = _mm256_loadu_pd(c + 3 * ldc + 4);
    c40 = _mm256_loadu_pd(c + 4 * ldc), c41 = _mm256_loadu_pd(c + 4 * ldc + 4);
    c50 = _mm256_loadu_pd(c + 5 * ldc), c51 = _mm256_loadu_pd(c + 5 * ldc + 4);
  } else {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_pd();
  }
  for (int64_t p = 0; p < kc; ++p, a += kMR, b += kNR) {
    const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
    __m256d x = _mm256_broadcast_sd(a + 0);
    c00 = _mm256_fmadd_pd(x, b0, c00), c01 = _mm256_fmadd_pd(x, b1, c01);
    x = _mm256_broadcast_sd(a + 1);
    c10 = _mm256_fmadd_pd(x, b0, c10), c11 = _mm256_fmadd_pd(x, b1, c11);
    x = _mm256_broadcast_sd(a + 2);
    c20 = _mm256_fmadd_pd(x, b0, c20), c21 = _mm256_fmadd_pd(x, b1, c21);
    x = _mm256_broadcast_sd(a + 3);
    c30 = _mm256_fmadd_pd(x, b0, c30), c31 = _mm256_fmadd_pd(x, b1, c31);
    x = _mm256_broadcast_sd(a + 4);
    c40 = _mm256_fmadd_pd(x, b0, c40), c41 = _mm256_fmadd_pd(x, b1, c41);
    x = _mm256_broadcast_sd(a + 5);
    c50 = _mm256_fmadd_pd(x, b0, c50), c51 = _mm256_fmadd_pd(x, b1, c51);
  }
  _mm256_storeu_pd(c + 0 * ldc, c00), _mm256_storeu_pd(c + 0 * ldc + 4, c01);
  _mm256_storeu_pd(c + 1 * ldc, c10), _mm256_storeu_pd(c + 1 * ldc + 4, c11);
  _mm256_storeu_pd(c + 2 * ldc, c20), _mm256_storeu_pd(c + 2 * ldc + 4, c21);
  _mm256_storeu_pd(c + 3 * ldc, c30), _mm256_storeu_pd(c + 3 * ldc + 4, c31);
  _mm256_storeu_pd(c + 4 * ldc, c40), _mm256_storeu_pd(c + 4 * ldc + 4, c41);
  _mm256_storeu_pd(c + 5 * ldc, c50), _mm256_storeu_pd(c + 5 * ldc + 4, c51);
}

inline bool have_avx2_fma() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
}
#endif

using Kernel = void (*)(int64_t, const double *, const double *, double *, int64_t, bool);

inline Kernel kernel() {
#ifdef NWC_COMPENSATE_X86_KERNEL
  if (have_avx2_fma()) return kernel_avx2;
#endif
  return kernel_portable;
}

} // namespace gemm_detail

// C (m × n, row stride ldc) = beta·C + alpha·op(A)·op(B), all row-major, beta 0 or 1: op(A) is
// m × k (A stored k × m when ta), op(B) is k × n (B stored n × k when tb). Element by element:
// c = beta·C[i][j], then c = fma(alpha·op(A)[i][p], op(B)[p][j], c) for p = 0, 1, …, k − 1 (with
// beta 0, C is not read). alpha·op(A) is exact for alpha = ±1.
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
                 int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
  using namespace gemm_detail;
  if (m <= 0 || n <= 0) return;
  const bool keep = beta != 0.0; // beta is 0 or 1
  if (k <= 0) {
    if (!keep)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0);
    return;
  }
  const Kernel run = kernel();
  const int64_t kcmax = std::min(k, kKC);
  // Packing buffers, kept per thread (growing only): no allocation or page faults per call.
  thread_local std::vector<double> bp, ap;
  const auto need_b = static_cast<size_t>(kcmax * std::min(n + kNR, kNC)),
             need_a = static_cast<size_t>(kcmax * std::min(m + kMR, kMC));
  if (bp.size() < need_b) bp.resize(need_b);
  if (ap.size() < need_a) ap.resize(need_a);
  double edge[kMR * kNR];
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const bool load = keep || pc > 0;
      // B[pc:pc+kc, jc:jc+nc] in slivers of kNR columns, p-major inside a sliver, zero-padded.
      for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
        double *dst = bp.data() + j0 * kc;
        const int64_t w = std::min(kNR, nc - j0);
        for (int64_t p = 0; p < kc; ++p) {
          for (int64_t jj = 0; jj < w; ++jj) {
            const int64_t row = pc + p, col = jc + j0 + jj;
            dst[p * kNR + jj] = tb ? b[col * ldb + row] : b[row * ldb + col];
          }
          for (int64_t jj = w; jj < kNR; ++jj) dst[p * kNR + jj] = 0.0;
        }
      }
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        // alpha·A[ic:ic+mc, pc:pc+kc] in slivers of kMR rows, p-major inside a sliver.
        for (int64_t i0 = 0; i0 < mc; i0 += kMR) {
          double *dst = ap.data() + i0 * kc;
          const int64_t h = std::min(kMR, mc - i0);
          for (int64_t p = 0; p < kc; ++p) {
            for (int64_t ii = 0; ii < h; ++ii) {
              const int64_t row = ic + i0 + ii, col = pc + p;
              dst[p * kMR + ii] = alpha * (ta ? a[col * lda + row] : a[row * lda + col]);
            }
            for (int64_t ii = h; ii < kMR; ++ii) dst[p * kMR + ii] = 0.0;
          }
        }
        for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
          const int64_t w = std::min(kNR, nc - j0);
          for (int64_t i0 = 0; i0 < mc; i0 += kMR) {
            const int64_t h = std::min(kMR, mc - i0);
            double *ct = c + (ic + i0) * ldc + jc + j0;
            if (h == kMR && w == kNR) {
              run(kc, ap.data() + i0 * kc, bp.data() + j0 * kc, ct, ldc, load);
            } else { // edge tile: through a zero-padded copy
              for (int64_t i = 0; i < kMR; ++i)
                for (int64_t j = 0; j < kNR; ++j)
                  edge[i * kNR + j] = load && i < h && j < w ? ct[i * ldc + j] : 0.0;
              run(kc, ap.data() + i0 * kc, bp.data() + j0 * kc, edge, kNR, true);
              for (int64_t i = 0; i < h; ++i)
                for (int64_t j = 0; j < w; ++j) ct[i * ldc + j] = edge[i * kNR + j];
            }
          }
        }
      }
    }
  }
}

} // namespace nwc::compensate
