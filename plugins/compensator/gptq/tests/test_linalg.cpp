// The compensators' linear algebra (nwc/linalg/gemm.hpp, nwc/linalg/hessian.hpp) and GPTQ's learned
// staircases (src/staircase.hpp), without the host.
#include "../src/staircase.hpp"
#include "nwc/linalg/hessian.hpp"

#include <cmath>
#include <cstring>
#include <doctest/doctest.h>
#include <random>

using namespace nwc::compensate;

namespace {

std::vector<double> random_vector(size_t n, std::mt19937_64 &rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> v(n);
  for (auto &x : v) x = g(rng);
  return v;
}

// A well-conditioned SPD matrix X Xᵀ / m + 0.1 I with correlated rows.
std::vector<double> spd(int64_t n, std::mt19937_64 &rng) {
  const int64_t m = n + 16;
  auto x = random_vector(static_cast<size_t>(n * m), rng);
  for (int64_t i = 1; i < n; ++i)
    for (int64_t t = 0; t < m; ++t)
      x[static_cast<size_t>(i * m + t)] += 0.5 * x[static_cast<size_t>((i - 1) * m + t)];
  std::vector<double> h(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < m; ++t)
        s += x[static_cast<size_t>(i * m + t)] * x[static_cast<size_t>(j * m + t)];
      h[static_cast<size_t>(i * n + j)] = s / static_cast<double>(m) + (i == j ? 0.1 : 0.0);
    }
  return h;
}

} // namespace

TEST_CASE("GPTQ/LDLQ gemm: every element is its fused multiply-add sequence, for any shape") {
  std::mt19937_64 rng(7);
  for (const int64_t m : {1, 5, 6, 13, 73, 150})
    for (const int64_t n : {1, 7, 8, 9, 40, 300})
      for (const int64_t k : {0, 1, 3, 128, 257})
        for (int v = 0; v < 8; ++v) {
          const bool ta = v & 1, tb = v & 2, keep = v & 4;
          const double alpha = v % 3 == 0 ? -1.0 : 1.0;
          INFO(m << " x " << n << " x " << k << ", ta " << ta << ", tb " << tb << ", beta " << keep
                 << ", alpha " << alpha);
          const int64_t lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
          const auto a = random_vector(static_cast<size_t>((ta ? k : m) * lda), rng);
          const auto b = random_vector(static_cast<size_t>((tb ? n : k) * ldb), rng);
          auto c = random_vector(static_cast<size_t>(m * ldc), rng);
          auto expect = c;
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double s = keep ? c[static_cast<size_t>(i * ldc + j)] : 0.0;
              for (int64_t p = 0; p < k; ++p)
                s = std::fma(alpha * (ta ? a[static_cast<size_t>(p * lda + i)]
                                         : a[static_cast<size_t>(i * lda + p)]),
                             tb ? b[static_cast<size_t>(j * ldb + p)]
                                : b[static_cast<size_t>(p * ldb + j)],
                             s);
              expect[static_cast<size_t>(i * ldc + j)] = s;
            }
          gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, keep ? 1.0 : 0.0, c.data(),
               ldc);
          CHECK(std::memcmp(c.data(), expect.data(), c.size() * sizeof(double)) == 0);
        }
}

TEST_CASE("GPTQ/LDLQ gemm: the portable kernel and the vector kernel agree bit for bit") {
  using namespace nwc::compensate::gemm_detail;
  std::mt19937_64 rng(3);
  const int64_t kc = 100;
  const auto a = random_vector(static_cast<size_t>(kc * kMR), rng);
  const auto b = random_vector(static_cast<size_t>(kc * kNR), rng);
  const auto c0 = random_vector(static_cast<size_t>(kMR * 11), rng);
  auto c1 = c0, c2 = c0;
  kernel_portable(kc, a.data(), b.data(), c1.data(), 11, true);
  kernel()(kc, a.data(), b.data(), c2.data(), 11, true);
  CHECK(c1 == c2);
  CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(double)) == 0);
  kernel_portable(kc, a.data(), b.data(), c1.data(), 11, false);
  kernel()(kc, a.data(), b.data(), c2.data(), 11, false);
  CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(double)) == 0);
}

TEST_CASE("GPTQ/LDLQ blocked Cholesky factor and triangular inverse") {
  std::mt19937_64 rng(11);
  for (const int64_t n : {1, 2, 127, 128, 129, 300}) {
    INFO("n = " << n);
    const auto h = spd(n, rng);
    auto l = h;
    for (int64_t i = 0; i < n; ++i) // only the lower triangle is read
      for (int64_t j = i + 1; j < n; ++j) l[static_cast<size_t>(i * n + j)] = 1e300;
    REQUIRE(lower_cholesky(l.data(), n, n));
    auto x = l;
    lower_inverse(x.data(), n, n);
    double e_chol = 0.0, e_inv = 0.0, above = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const auto ij = static_cast<size_t>(i * n + j);
        if (j > i) {
          above = std::max({above, std::abs(l[ij]), std::abs(x[ij])});
          continue;
        }
        double s = 0.0, t = 0.0;
        for (int64_t p = 0; p <= j; ++p)
          s += l[static_cast<size_t>(i * n + p)] * l[static_cast<size_t>(j * n + p)];
        for (int64_t p = j; p <= i; ++p)
          t += l[static_cast<size_t>(i * n + p)] * x[static_cast<size_t>(p * n + j)];
        e_chol = std::max(e_chol, std::abs(s - h[ij]));
        e_inv = std::max(e_inv, std::abs(t - (i == j ? 1.0 : 0.0)));
      }
    CHECK(above == 0.0);
    CHECK(e_chol < 1e-12);
    CHECK(e_inv < 1e-10);
  }
  // Not positive definite: refused.
  std::vector<double> bad = spd(200, rng);
  bad[static_cast<size_t>(150 * 200 + 150)] = -1.0;
  CHECK_FALSE(lower_cholesky(bad.data(), 200, 200));
}

TEST_CASE("GPTQ staircase: predictions only inside runs, contradictions detected") {
  using nwc::gptq::Staircase;
  // Q: rounding to multiples of 0.25, clamped to [-1, 1].
  auto q = [](float x) { return std::clamp(std::nearbyint(x * 4.0f) / 4.0f, -1.0f, 1.0f); };
  Staircase st;
  float out = 0.0f;
  CHECK_FALSE(st.predict(0.3f, out)); // nothing seen
  std::vector<float> probe(40);
  st.probes(-0.9f, 0.8f, NAN, NAN, probe.data(), static_cast<int64_t>(probe.size()));
  for (const float p : probe) {
    CHECK(p >= -0.9f);
    CHECK(p <= 0.8f);
    REQUIRE(st.observe(p, q(p)));
  }
  // A few rounds of probing pin every step down to adjacent floats inside the probed range.
  for (int round = 0; round < 30; ++round) {
    st.probes(-0.9f, 0.8f, -2.0f, 2.0f, probe.data(), static_cast<int64_t>(probe.size()));
    for (const float p : probe) {
      CHECK(p >= -2.0f);
      CHECK(p <= 2.0f);
      REQUIRE(st.observe(p, q(p)));
    }
  }
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (int i = 0; i < 10000; ++i) {
    const float x = u(rng);
    REQUIRE(st.predict(x, out));
    CHECK(out == q(x));
  }
  CHECK_FALSE(st.predict(3.0f, out)); // beyond everything seen
  CHECK_FALSE(st.predict(NAN, out));
  // A value inside a run that codes to another level, or a level out of order: not monotone.
  Staircase copy = st;
  CHECK_FALSE(copy.observe(0.5f, 0.25f));
  copy = st;
  CHECK_FALSE(copy.observe(3.0f, 0.5f));
  CHECK(st.observe(3.0f, 1.0f));
  CHECK(st.predict(2.5f, out));
  CHECK(out == 1.0f);
}
