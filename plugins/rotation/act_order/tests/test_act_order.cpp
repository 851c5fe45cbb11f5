// nwc.rotation.act_order through its C ABI: the permutation GPTQ's act-order uses (decreasing
// Hessian diagonal, dead columns as 1, ties in original order), exact forward/inverse, the Hessian
// permuted consistently, and the errors for a missing Hessian and hostile side bytes.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.rotation.act_order";

const nwc_rotation_interface &rotation(Instance &inst) {
  const auto *r = inst.iface<nwc_rotation_interface>(NWC_ROTATION_INTERFACE);
  REQUIRE(r != nullptr);
  return *r;
}

// A symmetric positive semi-definite [n, n] Hessian X Xᵀ of random inputs, with column `dead`
// (if any) never active.
std::vector<float> hessian(int64_t n, uint32_t seed, int64_t dead = -1) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g;
  const int64_t samples = 3 * n;
  std::vector<double> x(static_cast<size_t>(n * samples));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < samples; ++s)
      x[static_cast<size_t>(i * samples + s)] =
          i == dead ? 0.0 : g(rng) * (1.0 + 0.1 * static_cast<double>(i));
  std::vector<float> h(static_cast<size_t>(n * n));
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      double v = 0;
      for (int64_t s = 0; s < samples; ++s)
        v += x[static_cast<size_t>(a * samples + s)] * x[static_cast<size_t>(b * samples + s)];
      h[static_cast<size_t>(a * n + b)] = static_cast<float>(v / static_cast<double>(samples));
    }
  return h;
}

std::vector<int64_t> permutation_of(const std::vector<uint8_t> &side) {
  REQUIRE(side.size() >= 6);
  REQUIRE(side[0] == 1);
  REQUIRE(side[1] == 2);
  uint32_t n;
  std::memcpy(&n, side.data() + 2, 4);
  REQUIRE(side.size() == 6 + 2 * size_t{n});
  std::vector<int64_t> perm(n);
  for (uint32_t k = 0; k < n; ++k) {
    uint16_t j;
    std::memcpy(&j, side.data() + 6 + 2 * k, 2);
    perm[k] = j;
  }
  return perm;
}

} // namespace

TEST_CASE("act_order plans GPTQ's order: decreasing Hessian diagonal, dead columns as 1") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &r = rotation(inst);
  const int64_t rows = 5, n = 40;
  auto h = hessian(n, 7, /*dead=*/3);
  // Two equal diagonals: GPTQ's stable order keeps the earlier column first.
  h[static_cast<size_t>(20 * n + 20)] = h[static_cast<size_t>(10 * n + 10)];
  View hv(h.data(), n, n);
  VecSink side;
  REQUIRE(r.plan(inst.get(), "layers.0.attention.wq.weight", rows, n, hv.get(), side.get()) ==
          NWC_OK);
  const auto perm = permutation_of(side.bytes);
  std::vector<int64_t> expected(static_cast<size_t>(n));
  std::iota(expected.begin(), expected.end(), 0);
  auto diag = [&](int64_t j) {
    const double v = h[static_cast<size_t>(j * n + j)];
    return v == 0.0 ? 1.0 : v;
  };
  std::stable_sort(expected.begin(), expected.end(),
                   [&](int64_t a, int64_t b) { return diag(a) > diag(b); });
  CHECK(perm == expected);
  CHECK(std::find(perm.begin(), perm.end(), 10) < std::find(perm.begin(), perm.end(), 20));
  for (int64_t k = 1; k < n; ++k) CHECK(diag(perm[k - 1]) >= diag(perm[k]));
}

TEST_CASE("act_order moves columns exactly and permutes the Hessian with them") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &r = rotation(inst);
  const int64_t rows = 6, n = 33;
  auto h = hessian(n, 11);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  std::vector<float> w(static_cast<size_t>(rows * n));
  for (auto &v : w) v = g(rng);
  View hv(h.data(), n, n);
  VecSink side;
  REQUIRE(r.plan(inst.get(), "t", rows, n, hv.get(), side.get()) == NWC_OK);
  const auto perm = permutation_of(side.bytes);

  auto wp = w;
  View wv(wp.data(), rows, n);
  REQUIRE(r.forward(inst.get(), side.view(), wv.get()) == NWC_OK);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < n; ++k)
      CHECK(wp[static_cast<size_t>(i * n + k)] == w[static_cast<size_t>(i * n + perm[k])]);

  auto hp = h;
  View hpv(hp.data(), n, n);
  REQUIRE(r.forward_hessian(inst.get(), side.view(), hpv.get()) == NWC_OK);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b)
      CHECK(hp[static_cast<size_t>(a * n + b)] == h[static_cast<size_t>(perm[a] * n + perm[b])]);

  // The output error tr(ΔW H ΔWᵀ) of any error ΔW is the same in both orders (closed form).
  std::vector<float> d(w.size());
  for (auto &v : d) v = g(rng);
  auto dp = d;
  View dv(dp.data(), rows, n);
  REQUIRE(r.forward(inst.get(), side.view(), dv.get()) == NWC_OK);
  auto trace = [&](const std::vector<float> &e, const std::vector<float> &hh) {
    double t = 0;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b)
          t += double(e[static_cast<size_t>(i * n + a)]) * hh[static_cast<size_t>(a * n + b)] *
               e[static_cast<size_t>(i * n + b)];
    return t;
  };
  CHECK(trace(dp, hp) == doctest::Approx(trace(d, h)).epsilon(1e-12));

  REQUIRE(r.inverse(inst.get(), side.view(), wv.get()) == NWC_OK);
  CHECK(wp == w); // a permutation is undone exactly, bit for bit
}

TEST_CASE("act_order without a Hessian names the tensor and what to give") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  VecSink side;
  CHECK(rotation(inst).plan(inst.get(), "layers.1.feed_forward.w2.weight", 4, 8, nullptr,
                            side.get()) == NWC_E_INVALID_ARG);
  const std::string msg = inst.last_error();
  CHECK(msg.find("layers.1.feed_forward.w2.weight") != std::string::npos);
  CHECK(msg.find("Hessian") != std::string::npos);
  CHECK(side.bytes.empty());
}

TEST_CASE("act_order refuses side information that is not this tensor's permutation") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &r = rotation(inst);
  const int64_t rows = 2, n = 8;
  auto h = hessian(n, 5);
  View hv(h.data(), n, n);
  VecSink side;
  REQUIRE(r.plan(inst.get(), "t", rows, n, hv.get(), side.get()) == NWC_OK);
  std::vector<float> w(static_cast<size_t>(rows * n), 1.0f);
  View wv(w.data(), rows, n);
  auto inverse_of = [&](std::vector<uint8_t> bytes) {
    return r.inverse(inst.get(), nwc_bytes{bytes.data(), bytes.size()}, wv.get());
  };
  CHECK(inverse_of(side.bytes) == NWC_OK);
  auto truncated = side.bytes;
  truncated.pop_back();
  CHECK(inverse_of(truncated) == NWC_E_CORRUPT_STREAM);
  CHECK(inverse_of({}) == NWC_E_CORRUPT_STREAM);
  auto repeated = side.bytes; // position 1 names the column of position 0 again
  repeated[8] = repeated[6];
  repeated[9] = repeated[7];
  CHECK(inverse_of(repeated) == NWC_E_CORRUPT_STREAM);
  CHECK(inst.last_error().find("not a permutation") != std::string::npos);
  auto out_of_range = side.bytes;
  out_of_range[6] = 8;
  out_of_range[7] = 0;
  CHECK(inverse_of(out_of_range) == NWC_E_CORRUPT_STREAM);
  auto other_width = side.bytes;
  other_width[1] = 3;
  CHECK(inverse_of(other_width) == NWC_E_CORRUPT_STREAM);
  auto other_format = side.bytes;
  other_format[0] = 2;
  CHECK(inverse_of(other_format) == NWC_E_CORRUPT_STREAM);
  // Planned for 8 columns, applied to a 7-column tensor.
  std::vector<float> narrow(static_cast<size_t>(rows * 7), 1.0f);
  View nv(narrow.data(), rows, 7);
  CHECK(r.inverse(inst.get(), side.view(), nv.get()) == NWC_E_CORRUPT_STREAM);
  CHECK(w == std::vector<float>(static_cast<size_t>(rows * n), 1.0f));
}

TEST_CASE("act_order passes the SDK's rotation checks") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const int64_t rows = 7, n = 48;
  const auto h = hessian(n, 21, /*dead=*/5);
  std::mt19937 rng(9);
  std::normal_distribution<float> g;
  std::vector<float> w(static_cast<size_t>(rows * n));
  for (auto &v : w) v = g(rng);
  CHECK(check_rotation(inst, w, rows, n, &h) == "");
}
