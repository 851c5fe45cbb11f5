// nwc.quant.round through its C ABI: round-half-to-even symbols on a grid of spacing `step`,
// bit-identical dequantization, quantize_fitted equal to quantize, and the errors for non-finite
// latents, symbols beyond 2^30 steps and hostile side bytes.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.quant.round";

struct Quantized {
  nwc_status status = NWC_E_INTERNAL;
  std::vector<int32_t> symbols;
  std::vector<float> dequantized;
  std::vector<uint8_t> side;
};

const nwc_quantizer_interface &quantizer(Instance &inst) {
  const auto *q = inst.iface<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  REQUIRE(q != nullptr);
  return *q;
}

// reference == nullptr: plain quantize; otherwise quantize_fitted with that reference.
Quantized quantize(Instance &inst, const std::vector<float> &x, int64_t n, int64_t m,
                   const std::vector<float> *reference = nullptr,
                   const char *tensor = "layers.0.latents") {
  Quantized out;
  out.symbols.assign(x.size(), INT32_MIN);
  out.dequantized.assign(x.size(), NAN);
  Block block(tensor, n, m, 0, m);
  View in(x.data(), n, m), sym(out.symbols.data(), n, m), dq(out.dequantized.data(), n, m);
  VecSink side;
  const auto &q = quantizer(inst);
  if (reference) {
    View ref(reference->data(), n, m);
    out.status = q.quantize_fitted(inst.get(), block.get(), in.get(), ref.get(), sym.get(),
                                   dq.get(), side.get());
  } else {
    out.status = q.quantize(inst.get(), block.get(), in.get(), sym.get(), dq.get(), side.get());
  }
  out.side = side.bytes;
  return out;
}

nwc_status dequantize(Instance &inst, const std::vector<int32_t> &symbols, nwc_bytes side,
                      int64_t n, int64_t m, std::vector<float> &out) {
  out.assign(static_cast<size_t>(n * m), NAN);
  Block block("layers.0.latents", n, m, 0, m);
  View sym(symbols.data(), n, m), lat(out.data(), n, m);
  return quantizer(inst).dequantize(inst.get(), block.get(), sym.get(), side, lat.get());
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

} // namespace

TEST_CASE("round: descriptor") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_QUANTIZER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 1);
  CHECK(std::string(d.options[0].key) == "step");
  CHECK(d.options[0].type == NWC_OPT_FLOAT);
  CHECK(d.options[0].default_value.u.f == 1.0);
  CHECK(d.options[0].max == 1e6);
  CHECK((d.options[0].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0);
  const auto &q = quantizer(inst);
  REQUIRE(q.struct_size >= sizeof(nwc_quantizer_interface));
  CHECK(static_cast<bool>(q.quantize_fitted));
}

TEST_CASE("round: ties go to the even symbol") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const std::vector<float> x{0.5f,  1.5f,  2.5f,        3.5f,        -0.5f, -1.5f,
                             -2.5f, -3.5f, 0.49999997f, 0.50000006f, -7.0f, 1e-30f};
  const Quantized q = quantize(inst, x, 3, 4);
  REQUIRE(q.status == NWC_OK);
  CHECK(q.symbols == std::vector<int32_t>{0, 2, 2, 4, 0, -2, -2, -4, 0, 1, -7, 0});
  CHECK(q.dequantized == std::vector<float>{0, 2, 2, 4, 0, -2, -2, -4, 0, 1, -7, 0});
  CHECK(q.side.empty());
}

TEST_CASE("round: the step scales the grid") {
  Instance half(kId, {opt_float("step", 0.5)});
  REQUIRE(half.ok());
  const std::vector<float> x{0.25f, 0.75f, 1.25f, -0.25f, -0.75f, 0.3f, 100.0f, -0.6f};
  const Quantized q = quantize(half, x, 2, 4);
  REQUIRE(q.status == NWC_OK);
  CHECK(q.symbols == std::vector<int32_t>{0, 2, 2, 0, -2, 1, 200, -1});
  CHECK(q.dequantized == std::vector<float>{0.0f, 1.0f, 1.0f, 0.0f, -1.0f, 0.5f, 100.0f, -0.5f});

  // Any step: symbol = nearest multiple, within half a step, dequantized = symbol * step.
  std::mt19937_64 rng(17);
  std::normal_distribution<float> normal(0.0f, 30.0f);
  const int64_t n = 16, m = 64;
  std::vector<float> y(static_cast<size_t>(n * m));
  for (auto &v : y) v = normal(rng);
  for (double step : {1.0, 0.1, 0.37, 3.0, 1e-3, 1e6}) {
    CAPTURE(step);
    Instance inst(kId, {opt_float("step", step)});
    REQUIRE(inst.ok());
    const Quantized r = quantize(inst, y, n, m);
    REQUIRE(r.status == NWC_OK);
    CHECK(r.side.empty());
    for (size_t i = 0; i < y.size(); ++i) {
      const double t = static_cast<double>(y[i]) / step;
      REQUIRE(std::fabs(t - r.symbols[i]) <= 0.5);
      REQUIRE(r.dequantized[i] == static_cast<float>(r.symbols[i] * step));
    }
    std::vector<float> back;
    REQUIRE(dequantize(inst, r.symbols, nwc_bytes{nullptr, 0}, n, m, back) == NWC_OK);
    CHECK(same_bits(back, r.dequantized));
  }
}

TEST_CASE("round: quantize_fitted ignores the reference and equals quantize") {
  Instance inst(kId, {opt_float("step", 0.25)});
  REQUIRE(inst.ok());
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  const int64_t n = 8, m = 32;
  std::vector<float> x(static_cast<size_t>(n * m)), ref(x.size());
  for (auto &v : x) v = normal(rng);
  for (auto &v : ref) v = 1000.0f * normal(rng); // wildly different: must not matter
  const Quantized plain = quantize(inst, x, n, m);
  const Quantized fitted = quantize(inst, x, n, m, &ref);
  REQUIRE(plain.status == NWC_OK);
  REQUIRE(fitted.status == NWC_OK);
  CHECK(fitted.symbols == plain.symbols);
  CHECK(same_bits(fitted.dequantized, plain.dequantized));
  CHECK(fitted.side.empty());

  // The reference must still have the latents' shape.
  const auto &q = quantizer(inst);
  std::vector<int32_t> sym(x.size());
  std::vector<float> dq(x.size());
  Block block("t", n, m, 0, m);
  View xv(x.data(), n, m), rv(ref.data(), n / 2, m), sv(sym.data(), n, m), dv(dq.data(), n, m);
  VecSink side;
  CHECK(q.quantize_fitted(inst.get(), block.get(), xv.get(), rv.get(), sv.get(), dv.get(),
                          side.get()) == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("reference") != std::string::npos);
}

TEST_CASE("round: non-finite latents and symbols beyond 2^30 steps are refused") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    CAPTURE(bad);
    std::vector<float> x(8, 0.5f);
    x[5] = bad;
    const Quantized q = quantize(inst, x, 2, 4, nullptr, "blk.3.latents");
    CHECK(q.status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("'blk.3.latents'") != std::string::npos);
    CHECK(inst.last_error().find("non-finite latent at chunk 1, element 1") != std::string::npos);
  }
  // 2^30 itself is fine, the next float above it is not.
  const float limit = std::ldexp(1.0f, 30);
  std::vector<float> x{limit, -limit};
  Quantized ok = quantize(inst, x, 1, 2);
  REQUIRE(ok.status == NWC_OK);
  CHECK(ok.symbols == std::vector<int32_t>{1 << 30, -(1 << 30)});
  for (float bad : {std::nextafter(limit, INFINITY), -std::nextafter(limit, INFINITY), 3e38f}) {
    CAPTURE(bad);
    x = {1.0f, bad};
    const Quantized q = quantize(inst, x, 1, 2, nullptr, "blk.4.latents");
    CHECK(q.status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("'blk.4.latents'") != std::string::npos);
    CHECK(inst.last_error().find("2^30") != std::string::npos);
  }
  // A small step reaches the limit with small latents.
  Instance fine(kId, {opt_float("step", 1e-6)});
  REQUIRE(fine.ok());
  x = {2000.0f};
  CHECK(quantize(fine, x, 1, 1).status == NWC_E_INVALID_ARG);
  x = {1000.0f};
  CHECK(quantize(fine, x, 1, 1).status == NWC_OK);
}

TEST_CASE("round: hostile side bytes and symbols are rejected") {
  Instance inst(kId, {opt_float("step", 0.5)});
  REQUIRE(inst.ok());
  const std::vector<int32_t> symbols{1, -2, 3, 4};
  std::vector<float> out;
  REQUIRE(dequantize(inst, symbols, nwc_bytes{nullptr, 0}, 2, 2, out) == NWC_OK);
  CHECK(out == std::vector<float>{0.5f, -1.0f, 1.5f, 2.0f});
  const uint8_t junk[4] = {0xde, 0xad, 0xbe, 0xef};
  for (size_t size : {size_t{1}, size_t{4}}) {
    CAPTURE(size);
    CHECK(dequantize(inst, symbols, nwc_bytes{junk, size}, 2, 2, out) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find("no side info") != std::string::npos);
  }
  for (int32_t bad : {(1 << 30) + 1, -(1 << 30) - 1, INT32_MAX, INT32_MIN}) {
    CAPTURE(bad);
    std::vector<int32_t> s = symbols;
    s[2] = bad;
    CHECK(dequantize(inst, s, nwc_bytes{nullptr, 0}, 2, 2, out) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find(std::to_string(bad)) != std::string::npos);
  }
  std::vector<int32_t> edge{1 << 30, -(1 << 30), 0, 0};
  REQUIRE(dequantize(inst, edge, nwc_bytes{nullptr, 0}, 2, 2, out) == NWC_OK);
  CHECK(out[0] == std::ldexp(1.0f, 29));
}

TEST_CASE("round: option bounds") {
  CHECK(Instance(kId, {opt_float("step", 0.0)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_float("step", -1.0)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_float("step", 1e6 * 1.0001)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_float("step", NAN)}).status == NWC_E_INVALID_OPTION);
  Instance zero(kId, {opt_float("step", 0.0)});
  CHECK(zero.host.last().find("step") != std::string::npos);
  CHECK(Instance(kId, {opt_float("step", 1e6)}).ok());
  CHECK(Instance(kId, {opt_float("step", 1e-9)}).ok());
}
