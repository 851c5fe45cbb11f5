// nwc.rotation.hadamard against closed forms: Paley/Sylvester Hadamard matrices satisfy
// H·Hᵀ = K·I, the transforms are orthogonal (columns orthonormal to 1e-6), power-of-two sizes have
// every entry ±1/sqrt(n), inverse(forward(W)) = W, the Hessian-weighted error is the same in both
// bases, the harness's check_rotation passes, and bad side information is refused.
#include "../src/hadamard_math.hpp"
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.rotation.hadamard";

std::vector<float> gaussian(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto &x : v) x = d(g);
  return v;
}

// A symmetric positive definite [n, n] matrix X·Xᵀ/m + 0.01·I, computed in double.
std::vector<float> spd(int64_t n, uint32_t seed) {
  const int64_t m = 2 * n;
  std::vector<float> x = gaussian(static_cast<size_t>(n * m), seed);
  std::vector<float> h(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < m; ++k) s += double(x[i * m + k]) * x[j * m + k];
      h[i * n + j] = static_cast<float>(s / static_cast<double>(m) + (i == j ? 0.01 : 0.0));
    }
  return h;
}

// Columns `picks` of the transform of one side, as rows: forward on W = rows e_pickᵀ with sides
// "input" gives e_pickᵀ·Vᵀ = (V·e_pick)ᵀ.
std::vector<float> columns_of_v(Instance &inst, int64_t n, const std::vector<int64_t> &picks) {
  const auto k = static_cast<int64_t>(picks.size());
  std::vector<float> w(static_cast<size_t>(k * n), 0.0f);
  for (int64_t i = 0; i < k; ++i) w[static_cast<size_t>(i * n + picks[i])] = 1.0f;
  std::vector<uint8_t> side;
  REQUIRE(rotation_plan(inst, "layers.0.weight", k, n, nullptr, side) == NWC_OK);
  REQUIRE(rotation_forward(inst, side, w, k, n) == NWC_OK);
  return w;
}

} // namespace

TEST_CASE("Paley and Sylvester Hadamard matrices satisfy H times H transposed equals K times I") {
  // Every order up to 256 that the constructions reach, among them the orders QuIP# takes from
  // Sloane's library that Paley I/II with doubling give (12, 20, 28, 36, 40, 44, 60, 108, 140);
  // 52, 156 and 172 need other constructions (51, 25, 155, 77, 171, 85 are not prime).
  int constructed = 0;
  for (int64_t k = 1; k <= 256; ++k) {
    const std::vector<int8_t> h = nwc_hadamard::hadamard_matrix(k);
    if (h.empty()) continue;
    ++constructed;
    INFO("order " << k);
    REQUIRE(h.size() == static_cast<size_t>(k * k));
    bool ok = true;
    for (int64_t i = 0; i < k && ok; ++i)
      for (int64_t j = 0; j < k && ok; ++j) {
        int64_t s = 0;
        for (int64_t c = 0; c < k; ++c) s += h[i * k + c] * h[j * k + c];
        ok = s == (i == j ? k : 0) && (h[i * k + j] == 1 || h[i * k + j] == -1);
      }
    CHECK(ok);
  }
  for (int64_t k : {12, 20, 28, 36, 40, 44, 60, 108, 140})
    CHECK_MESSAGE(!nwc_hadamard::hadamard_matrix(k).empty(), "order " << k);
  for (int64_t k : {52, 156, 172})
    CHECK_MESSAGE(nwc_hadamard::hadamard_matrix(k).empty(), "order " << k);
  CHECK(nwc_hadamard::hadamard_matrix(6).empty()); // no Hadamard matrix of order 6 exists
  CHECK(constructed >= 40);
}

TEST_CASE("sizes decompose into a power of two times a Paley order or a random orthogonal block") {
  auto d = nwc_hadamard::decompose(4096);
  CHECK((d.supported && d.base == 1 && d.pow2 == 4096 && !d.random));
  d = nwc_hadamard::decompose(384); // 12 · 32
  CHECK((d.supported && d.base == 12 && d.pow2 == 32 && !d.random));
  d = nwc_hadamard::decompose(172); // 4 · 43: no Paley order 43·2^j up to 1024
  CHECK((d.supported && d.base == 43 && d.pow2 == 4 && d.random));
  d = nwc_hadamard::decompose(11008); // 256 · 43
  CHECK((d.supported && d.base == 43 && d.pow2 == 256 && d.random));
  CHECK(!nwc_hadamard::decompose(2 * 1031).supported); // odd part 1031 > 1024, 1032 = 8·129
}

TEST_CASE("the seeded random orthogonal block is orthogonal in double precision") {
  for (int64_t m : {1, 3, 43, 101}) {
    const std::vector<double> q = nwc_hadamard::random_orthogonal(m, 7);
    double worst = 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double s = 0;
        for (int64_t c = 0; c < m; ++c) s += q[i * m + c] * q[j * m + c];
        worst = std::fmax(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    INFO("order " << m);
    CHECK(worst < 1e-12);
  }
}

TEST_CASE("the transform of every size has orthonormal columns to 1e-6") {
  Instance inst(kId, {opt_enum("sides", "input"), opt_int("seed", 3)});
  REQUIRE(inst.ok());
  for (int64_t n : {64, 172, 384, 4096, 11008}) {
    // All columns up to 384; 48 spread columns (first and last included) beyond.
    std::vector<int64_t> picks;
    if (n <= 384)
      for (int64_t i = 0; i < n; ++i) picks.push_back(i);
    else
      for (int64_t i = 0; i < 48; ++i) picks.push_back(i * (n - 1) / 47);
    const std::vector<float> v = columns_of_v(inst, n, picks);
    const auto k = static_cast<int64_t>(picks.size());
    double worst = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t c = 0; c < n; ++c) s += double(v[i * n + c]) * v[j * n + c];
        worst = std::fmax(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    INFO("size " << n);
    CHECK(worst < 1e-6);
  }
}

TEST_CASE("power-of-two and Paley sizes spread every unit vector evenly over all coordinates") {
  // |V_ij| = 1/sqrt(n) exactly for Hadamard-based sizes: a single outlier column becomes n entries
  // of equal magnitude (the point of incoherence processing).
  Instance inst(kId, {opt_enum("sides", "input")});
  REQUIRE(inst.ok());
  for (int64_t n : {64, 384, 4096}) {
    const std::vector<float> v = columns_of_v(inst, n, {0, n / 2, n - 1});
    const double expect = 1.0 / std::sqrt(double(n));
    double worst = 0;
    for (float x : v) worst = std::fmax(worst, std::fabs(std::fabs(double(x)) - expect));
    INFO("size " << n);
    CHECK(worst < 1e-7);
  }
}

TEST_CASE("inverse of forward gives the weight back within 1e-5 on every side setting") {
  for (const char *sides : {"both", "input", "output"})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 172}, {172, 64}, {96, 384}}) {
      Instance inst(kId, {opt_enum("sides", sides), opt_int("seed", 11)});
      REQUIRE(inst.ok());
      const std::vector<float> w = gaussian(static_cast<size_t>(rows * cols), 5, 0.02f);
      std::vector<uint8_t> side;
      REQUIRE(rotation_plan(inst, "layers.1.mlp.up_proj.weight", rows, cols, nullptr, side) ==
              NWC_OK);
      CHECK(side.size() == 18);
      std::vector<float> x = w;
      REQUIRE(rotation_forward(inst, side, x, rows, cols) == NWC_OK);
      CHECK(x != w);
      REQUIRE(rotation_inverse(inst, side.data(), side.size(), x, rows, cols) == NWC_OK);
      double worst = 0;
      for (size_t i = 0; i < w.size(); ++i) worst = std::fmax(worst, std::fabs(x[i] - w[i]));
      INFO(sides << " " << rows << "x" << cols);
      CHECK(worst < 1e-5 * 0.02 * 10);
    }
}

TEST_CASE("the Hessian-weighted error is the same before and after the rotation") {
  // tr(E·H·Eᵀ) = tr((U·E·Vᵀ)(V·H·Vᵀ)(U·E·Vᵀ)ᵀ), computed independently here in double.
  for (int64_t cols : {64, 172}) {
    Instance inst(kId, {opt_int("seed", 2)});
    REQUIRE(inst.ok());
    const int64_t rows = 48;
    const std::vector<float> h = spd(cols, 9);
    const std::vector<float> e = gaussian(static_cast<size_t>(rows * cols), 4);
    std::vector<uint8_t> side;
    REQUIRE(rotation_plan(inst, "w", rows, cols, &h, side) == NWC_OK);
    std::vector<float> er = e, hr = h;
    REQUIRE(rotation_forward(inst, side, er, rows, cols) == NWC_OK);
    REQUIRE(rotation_forward_hessian(inst, side, hr, cols) == NWC_OK);
    const double before = hessian_error(e, h, rows, cols),
                 after = hessian_error(er, hr, rows, cols);
    INFO(cols << ": " << before << " " << after);
    CHECK(std::fabs(after - before) < 1e-5 * before);
    // The rotated Hessian is symmetric and keeps its trace (V orthogonal).
    double tr = 0, trr = 0, asym = 0;
    for (int64_t i = 0; i < cols; ++i) {
      tr += h[i * cols + i];
      trr += hr[i * cols + i];
      for (int64_t j = 0; j < cols; ++j)
        asym = std::fmax(asym, std::fabs(hr[i * cols + j] - hr[j * cols + i]));
    }
    CHECK(std::fabs(tr - trr) < 1e-5 * tr);
    CHECK(asym < 1e-5);
  }
}

TEST_CASE("nwc.rotation.hadamard passes the harness check_rotation") {
  for (const char *sides : {"both", "input", "output"}) {
    Instance inst(kId, {opt_enum("sides", sides)});
    REQUIRE(inst.ok());
    const std::vector<float> w = gaussian(64 * 172, 8, 0.05f);
    const std::vector<float> h = spd(172, 3);
    INFO(sides);
    CHECK(check_rotation(inst, w, 64, 172, &h) == "");
    CHECK(check_rotation(inst, gaussian(172 * 64, 9), 172, 64) == "");
  }
}

TEST_CASE("signs depend on the seed and the tensor name and the side holds no matrix") {
  Instance a(kId, {opt_int("seed", 0)}), b(kId, {opt_int("seed", 1)});
  REQUIRE((a.ok() && b.ok()));
  std::vector<uint8_t> s1, s2, s3;
  REQUIRE(rotation_plan(a, "x.weight", 64, 64, nullptr, s1) == NWC_OK);
  REQUIRE(rotation_plan(b, "x.weight", 64, 64, nullptr, s2) == NWC_OK);
  REQUIRE(rotation_plan(a, "y.weight", 64, 64, nullptr, s3) == NWC_OK);
  CHECK((s1.size() == 18 && s2.size() == 18 && s3.size() == 18));
  CHECK(s1 != s2);
  CHECK(s1 != s3);
  const std::vector<float> w = gaussian(64 * 64, 1);
  std::vector<float> x1 = w, x2 = w;
  REQUIRE(rotation_forward(a, s1, x1, 64, 64) == NWC_OK);
  REQUIRE(rotation_forward(a, s2, x2, 64, 64) == NWC_OK);
  CHECK(x1 != x2);
}

TEST_CASE("corrupt or short side information is refused with NWC_E_CORRUPT_STREAM") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::vector<uint8_t> side;
  REQUIRE(rotation_plan(inst, "w", 64, 172, nullptr, side) == NWC_OK);
  std::vector<float> w = gaussian(64 * 172, 2);
  for (size_t cut = 0; cut < side.size(); ++cut)
    CHECK(rotation_inverse(inst, side.data(), cut, w, 64, 172) == NWC_E_CORRUPT_STREAM);
  auto bad = [&](size_t at, uint8_t v) {
    std::vector<uint8_t> s = side;
    s[at] = v;
    std::vector<float> x = w;
    return rotation_inverse(inst, s.data(), s.size(), x, 64, 172);
  };
  CHECK(bad(0, 2) == NWC_E_CORRUPT_STREAM);  // format
  CHECK(bad(1, 0) == NWC_E_CORRUPT_STREAM);  // no side
  CHECK(bad(1, 4) == NWC_E_CORRUPT_STREAM);  // unknown side bit
  CHECK(bad(2, 65) == NWC_E_CORRUPT_STREAM); // rows differ from the matrix
  CHECK(bad(6, 0) == NWC_E_CORRUPT_STREAM);  // cols differ from the matrix
  CHECK(inst.last_error().find("matrix") != std::string::npos);
  // A size with no transform, even when the matrix claims it.
  std::vector<uint8_t> big = side;
  const uint32_t n = 2 * 1031;
  std::memcpy(big.data() + 6, &n, 4);
  std::vector<float> x(static_cast<size_t>(64 * n));
  CHECK(rotation_inverse(inst, big.data(), big.size(), x, 64, n) == NWC_E_CORRUPT_STREAM);
  // plan refuses such a shape up front.
  std::vector<uint8_t> none;
  CHECK(rotation_plan(inst, "w", 64, n, nullptr, none) == NWC_E_UNSUPPORTED_SHAPE);
}
