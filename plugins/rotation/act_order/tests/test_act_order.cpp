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

// The side information format, written independently of the plugin: u8 format 1, u8 bits per
// index (the fewest that hold n - 1), u32 n, the indices packed least significant bit first.
int bits_for(int64_t n) {
  int b = 0;
  while ((int64_t{1} << b) < n) ++b;
  return b;
}

std::vector<uint8_t> pack(const std::vector<int64_t> &perm, int bits) {
  std::vector<uint8_t> out = {1, static_cast<uint8_t>(bits)};
  const auto n = static_cast<uint32_t>(perm.size());
  out.resize(6 + (perm.size() * static_cast<size_t>(bits) + 7) / 8, 0);
  std::memcpy(out.data() + 2, &n, 4);
  size_t bit = 0;
  for (int64_t j : perm)
    for (int b = 0; b < bits; ++b, ++bit)
      out[6 + bit / 8] |= static_cast<uint8_t>(((j >> b) & 1) << (bit % 8));
  return out;
}

std::vector<int64_t> permutation_of(const std::vector<uint8_t> &side) {
  REQUIRE(side.size() >= 6);
  uint32_t n;
  std::memcpy(&n, side.data() + 2, 4);
  const int bits = bits_for(n);
  REQUIRE(side[0] == 1);
  REQUIRE(side[1] == bits);
  REQUIRE(side.size() == 6 + (size_t{n} * static_cast<size_t>(bits) + 7) / 8);
  std::vector<int64_t> perm(n);
  for (uint32_t k = 0; k < n; ++k)
    for (int b = 0; b < bits; ++b) {
      const size_t bit = size_t{k} * static_cast<size_t>(bits) + static_cast<size_t>(b);
      perm[k] |= int64_t{(side[6 + bit / 8] >> (bit % 8)) & 1} << b;
    }
  CHECK(pack(perm, bits) == side); // and the padding bits are zero
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
  const int64_t rows = 2, n = 6; // 3 bits per index: 7 is out of range, 6 padding bits
  auto h = hessian(n, 5);
  View hv(h.data(), n, n);
  VecSink side;
  REQUIRE(r.plan(inst.get(), "t", rows, n, hv.get(), side.get()) == NWC_OK);
  CHECK(side.bytes.size() == 6 + 3); // 18 bits
  std::vector<float> w(static_cast<size_t>(rows * n), 1.0f);
  View wv(w.data(), rows, n);
  auto inverse_of = [&](std::vector<uint8_t> bytes) {
    return r.inverse(inst.get(), nwc_bytes{bytes.data(), bytes.size()}, wv.get());
  };
  CHECK(inverse_of(side.bytes) == NWC_OK);
  CHECK(inverse_of(pack({5, 4, 3, 2, 1, 0}, 3)) == NWC_OK);
  auto truncated = side.bytes;
  truncated.pop_back();
  CHECK(inverse_of(truncated) == NWC_E_CORRUPT_STREAM);
  auto extended = side.bytes;
  extended.push_back(0);
  CHECK(inverse_of(extended) == NWC_E_CORRUPT_STREAM);
  CHECK(inverse_of({}) == NWC_E_CORRUPT_STREAM);
  CHECK(inverse_of(pack({0, 1, 2, 3, 4, 0}, 3)) == NWC_E_CORRUPT_STREAM);
  CHECK(inst.last_error().find("not a permutation") != std::string::npos);
  CHECK(inverse_of(pack({0, 1, 2, 3, 4, 7}, 3)) == NWC_E_CORRUPT_STREAM);
  CHECK(inverse_of(pack({0, 1, 2, 3, 4, 5}, 4)) == NWC_E_CORRUPT_STREAM);
  auto padded = pack({0, 1, 2, 3, 4, 5}, 3);
  padded.back() |= 0x80; // a padding bit
  CHECK(inverse_of(padded) == NWC_E_CORRUPT_STREAM);
  CHECK(inst.last_error().find("padding") != std::string::npos);
  auto other_format = side.bytes;
  other_format[0] = 2;
  CHECK(inverse_of(other_format) == NWC_E_CORRUPT_STREAM);
  // Planned for 6 columns, applied to a 7-column tensor.
  std::vector<float> wide(static_cast<size_t>(rows * 7), 1.0f);
  View nv(wide.data(), rows, 7);
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
