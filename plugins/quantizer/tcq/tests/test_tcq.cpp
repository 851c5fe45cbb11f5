// nwc.quant.tcq through its C ABI: the trellis the decoder follows (a hand-worked path), the
// encoder's reconstruction equal bit for bit to the decoder's, the Viterbi search against an
// exhaustive one, its gain over rounding on Gaussian samples against the closed form of entropy-
// coded rounding, importance weights, and the errors for bad latents, symbols and side bytes.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.quant.tcq";

const nwc_quantizer_interface &quantizer(Instance &inst) {
  const auto *q = inst.iface<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  REQUIRE(q != nullptr);
  return *q;
}

struct Quantized {
  nwc_status status = NWC_E_INTERNAL;
  std::vector<int32_t> symbols;
  std::vector<float> dequantized;
  std::vector<uint8_t> side;
};

// The block is columns [begin, begin + width) of a tensor; width = m unless given.
Quantized quantize(Instance &inst, const std::vector<float> &x, int64_t n, int64_t m,
                   const std::vector<float> *importance = nullptr, int64_t width = 0,
                   int64_t begin = 0) {
  Quantized out;
  out.symbols.assign(x.size(), INT32_MIN);
  out.dequantized.assign(x.size(), NAN);
  if (!width) width = m;
  Block block("layers.0.latents", n, begin + width, begin, begin + width);
  if (importance) block.info.importance = importance->data();
  View in(x.data(), n, m), sym(out.symbols.data(), n, m), dq(out.dequantized.data(), n, m);
  VecSink side;
  out.status =
      quantizer(inst).quantize(inst.get(), block.get(), in.get(), sym.get(), dq.get(), side.get());
  out.side = side.bytes;
  return out;
}

nwc_status dequantize(Instance &inst, const std::vector<int32_t> &symbols, nwc_bytes side,
                      int64_t n, int64_t m, std::vector<float> &out, int64_t width = 0) {
  out.assign(static_cast<size_t>(n * m), NAN);
  Block block("layers.0.latents", n, width ? width : m, 0, width ? width : m);
  View sym(symbols.data(), n, m), lat(out.data(), n, m);
  return quantizer(inst).dequantize(inst.get(), block.get(), sym.get(), side, lat.get());
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double entropy_bits(const std::vector<int32_t> &s) {
  std::map<int32_t, double> h;
  for (int32_t v : s) h[v] += 1.0;
  double bits = 0.0;
  for (const auto &[v, c] : h) bits -= c * std::log2(c / static_cast<double>(s.size()));
  return bits / static_cast<double>(s.size());
}

double sq_error(const std::vector<float> &x, const std::vector<float> &y,
                const std::vector<float> *w = nullptr) {
  double e = 0.0;
  for (size_t i = 0; i < x.size(); ++i)
    e += (w ? (*w)[i] : 1.0f) * (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return e;
}

// The block's two halves, coded as blocks of their own (the second beginning at column width / 2),
// give the whole block's symbols, and the whole decodes to the encoder's values.
void check_halves_code_as_whole(Instance &inst, const std::vector<float> &x, int64_t n, int64_t m,
                                int64_t width, const Quantized &whole) {
  const size_t half = x.size() / 2;
  const std::vector<float> left(x.begin(), x.begin() + half), right(x.begin() + half, x.end());
  const Quantized a = quantize(inst, left, n / 2, m, nullptr, width / 2, 0);
  const Quantized b = quantize(inst, right, n / 2, m, nullptr, width / 2, width / 2);
  REQUIRE(a.status == NWC_OK);
  REQUIRE(b.status == NWC_OK);
  std::vector<int32_t> joined = a.symbols;
  joined.insert(joined.end(), b.symbols.begin(), b.symbols.end());
  CHECK(joined == whole.symbols);
  std::vector<float> back;
  REQUIRE(dequantize(inst, whole.symbols, nwc_bytes{nullptr, 0}, n, m, back, width) == NWC_OK);
  CHECK(same_bits(back, whole.dequantized));
}

} // namespace

TEST_CASE("tcq: descriptor") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_QUANTIZER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 5);
  CHECK(std::string(d.options[0].key) == "step");
  CHECK(d.options[0].default_value.u.f == 0.5);
  CHECK(std::string(d.options[1].key) == "lambda");
  CHECK(d.options[1].default_value.u.f == 0.0);
  CHECK(std::string(d.options[2].key) == "trellis");
  CHECK(std::string(d.options[2].default_value.u.s) == "column");
  CHECK(std::string(d.options[3].key) == "states");
  CHECK(d.options[3].default_value.u.i == 4);
  CHECK(std::string(d.options[4].key) == "path_columns");
  CHECK(d.options[4].default_value.u.i == 1);
  for (size_t i = 0; i < d.option_count; ++i)
    CHECK((d.options[i].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0);
  const auto &q = quantizer(inst);
  CHECK(!q.quantize_fitted);
}

TEST_CASE("tcq: the decoder follows the trellis from the symbols") {
  // H.266's 4-state trellis: states 0, 1 use Q0 (k -> 2k), states 2, 3 use Q1 (k -> 2k - sgn k);
  // the next state is next[state][k & 1] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}}.
  Instance inst(kId, {opt_float("step", 1.0), opt_enum("trellis", "block")});
  REQUIRE(inst.ok());
  // state 0 (Q0): 1 -> 2, to 2; Q1: 1 -> 1, to 3; Q1: 0 -> 0, to 3; Q1: -1 -> -1, to 1;
  // state 1 (Q0): 2 -> 4, to 2; Q1: -2 -> -3, to 1; Q0: 3 -> 6, to 0; Q0: -3 -> -6, to 2.
  const std::vector<int32_t> k{1, 1, 0, -1, 2, -2, 3, -3};
  std::vector<float> out;
  REQUIRE(dequantize(inst, k, nwc_bytes{nullptr, 0}, 2, 4, out) == NWC_OK);
  CHECK(out == std::vector<float>{2, 1, 0, -1, 4, -3, 6, -6});

  Instance quarter(kId, {opt_float("step", 0.25), opt_enum("trellis", "block")});
  REQUIRE(quarter.ok());
  REQUIRE(dequantize(quarter, k, nwc_bytes{nullptr, 0}, 1, 8, out) == NWC_OK);
  CHECK(out == std::vector<float>{0.5f, 0.25f, 0, -0.25f, 1, -0.75f, 1.5f, -1.5f});
}

TEST_CASE("tcq: the encoder reconstructs exactly what the decoder decodes") {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 7.0f);
  const int64_t n = 300, m = 16;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  for (int64_t states : {4, 8, 16, 32, 64})
    for (double step : {0.5, 0.1, 1.7}) {
      for (double lambda : {0.0, 0.1, 1.0}) {
        CAPTURE(states);
        CAPTURE(step);
        CAPTURE(lambda);
        Instance inst(kId, {opt_float("step", step), opt_float("lambda", lambda),
                            opt_int("states", states), opt_enum("trellis", "block")});
        REQUIRE(inst.ok());
        const Quantized q = quantize(inst, x, n, m);
        REQUIRE(q.status == NWC_OK);
        CHECK(q.side.empty());
        std::vector<float> back;
        REQUIRE(dequantize(inst, q.symbols, nwc_bytes{nullptr, 0}, n, m, back) == NWC_OK);
        CHECK(same_bits(back, q.dequantized));
        // Every value is a multiple of step, within one step of its latent at lambda 0 (both
        // quantizers reach any point within 2·step, and the search takes the cheapest path).
        double worst = 0.0;
        for (size_t i = 0; i < x.size(); ++i) {
          const double mult = double(q.dequantized[i]) / step;
          CHECK(q.dequantized[i] == static_cast<float>(std::nearbyint(mult) * step));
          worst = std::max(worst, std::fabs(double(x[i]) - q.dequantized[i]) / step);
        }
        if (lambda == 0.0) CHECK(worst <= 2.0);
        // Deterministic: the same latents give the same symbols.
        CHECK(quantize(inst, x, n, m).symbols == q.symbols);
      }
    }
}

TEST_CASE("tcq: at lambda 0 the Viterbi path has the least squared error of all paths") {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> uni(-4.0f, 4.0f);
  Instance inst(kId, {opt_float("step", 1.0), opt_enum("trellis", "block")});
  REQUIRE(inst.ok());
  for (int trial = 0; trial < 5; ++trial) {
    const int64_t n = 7;
    std::vector<float> x(static_cast<size_t>(n));
    for (auto &v : x) v = uni(rng);
    const Quantized q = quantize(inst, x, 1, n);
    REQUIRE(q.status == NWC_OK);
    // Exhaustive: every symbol sequence in [-4, 4]^7, decoded along the trellis.
    double best = INFINITY;
    std::vector<int32_t> k(static_cast<size_t>(n));
    std::function<void(size_t, int, double)> walk = [&](size_t i, int s, double err) {
      if (err >= best) return;
      if (i == k.size()) {
        best = err;
        return;
      }
      static const int next[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}};
      for (int32_t v = -4; v <= 4; ++v) {
        const double r = s < 2 ? 2.0 * v : 2.0 * v - (v > 0) + (v < 0);
        walk(i + 1, next[s][v & 1], err + (x[i] - r) * (x[i] - r));
      }
    };
    walk(0, 0, 0.0);
    CHECK(sq_error(x, q.dequantized) == doctest::Approx(best).epsilon(1e-9));
  }
}

TEST_CASE(
    "tcq: on Gaussian samples 0.9 dB (4 states) to 1.2 dB (64) below entropy-coded rounding") {
  // Entropy-coded rounding of N(0, 1) at high rate has D · 2^(2H) = 2πe/12 = 1.4233 (1.53 dB above
  // the Shannon bound D · 2^(2R) = 1). One long path at ~5 bits: H.266's 4 states reach ~1.15,
  // 64 states ~1.07, and each size does better than the one below.
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 4096, m = 16;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  const double rounding = 2.0 * M_PI * M_E / 12.0;
  for (double step : {0.02, 0.05}) {
    double last = INFINITY, four = 0.0;
    for (int64_t states : {4, 8, 16, 32, 64}) {
      CAPTURE(step);
      CAPTURE(states);
      Instance inst(
          kId, {opt_float("step", step), opt_int("states", states), opt_enum("trellis", "block")});
      REQUIRE(inst.ok());
      const Quantized q = quantize(inst, x, n, m);
      REQUIRE(q.status == NWC_OK);
      const double h = entropy_bits(q.symbols);
      const double normalized =
          sq_error(x, q.dequantized) / double(x.size()) * std::pow(2.0, 2.0 * h);
      CAPTURE(h);
      CAPTURE(normalized);
      CHECK(h > 4.5);
      CHECK(normalized < last);
      CHECK(normalized > 1.0); // never below the Shannon bound
      last = normalized;
      if (states == 4) four = normalized;
    }
    CHECK(four < 0.85 * rounding);
    CHECK(10.0 * std::log10(rounding / last) > 1.1);
    CHECK(10.0 * std::log10(four / last) > 0.25);
  }
}

TEST_CASE("tcq: importance weights steer the error to the unimportant elements") {
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int64_t n = 64, m = 16;
  std::vector<float> x(static_cast<size_t>(n * m)), w(x.size());
  for (auto &v : x) v = normal(rng);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i % 3 == 0) ? 10.0f : 0.1f;
  Instance inst(kId, {opt_float("step", 1.0), opt_enum("trellis", "block")});
  REQUIRE(inst.ok());
  const Quantized plain = quantize(inst, x, n, m);
  const Quantized weighted = quantize(inst, x, n, m, &w);
  REQUIRE(plain.status == NWC_OK);
  REQUIRE(weighted.status == NWC_OK);
  // At lambda 0 each search is optimal for its own objective.
  CHECK(sq_error(x, weighted.dequantized, &w) < sq_error(x, plain.dequantized, &w));
  CHECK(sq_error(x, plain.dequantized) < sq_error(x, weighted.dequantized));
  std::vector<float> back;
  REQUIRE(dequantize(inst, weighted.symbols, nwc_bytes{nullptr, 0}, n, m, back) == NWC_OK);
  CHECK(same_bits(back, weighted.dequantized));

  std::vector<float> bad = w;
  bad[5] = -1.0f;
  CHECK(quantize(inst, x, n, m, &bad).status == NWC_E_INVALID_ARG);
}

TEST_CASE("tcq: a larger lambda spends fewer bits") {
  std::mt19937_64 rng(21);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  const int64_t n = 512, m = 16;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  double last_bits = INFINITY, last_mse = 0.0;
  for (double lambda : {0.0, 0.1, 0.5}) {
    Instance inst(
        kId, {opt_float("step", 0.5), opt_float("lambda", lambda), opt_enum("trellis", "block")});
    REQUIRE(inst.ok());
    const Quantized q = quantize(inst, x, n, m);
    REQUIRE(q.status == NWC_OK);
    const double bits = entropy_bits(q.symbols), mse = sq_error(x, q.dequantized);
    CAPTURE(lambda);
    CHECK(bits < last_bits);
    CHECK(mse > last_mse);
    last_bits = bits;
    last_mse = mse;
  }
}

TEST_CASE("tcq: per-column trellis paths code a block the same alone or with its neighbours") {
  // 8 columns of 3 chunks of 4 latents each, column-major as nwc.chunk.column orders them.
  std::mt19937_64 rng(13);
  std::normal_distribution<float> normal(0.0f, 5.0f);
  const int64_t width = 8, per_column = 3, m = 4, n = width * per_column;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  Instance inst(kId);
  REQUIRE(inst.ok());
  const Quantized whole = quantize(inst, x, n, m, nullptr, width);
  REQUIRE(whole.status == NWC_OK);
  check_halves_code_as_whole(inst, x, n, m, width, whole);
  std::vector<float> back;
  // Each column starts from state 0 (Q0: even multiples) while one path would not.
  for (int64_t c = 0; c < width; ++c) {
    const float first = whole.dequantized[static_cast<size_t>(c * per_column * m)];
    CHECK(std::fmod(std::fabs(first) / 0.5f, 2.0f) == 0.0f);
  }
  // A chunk count that is not a whole number of columns (another chunker's layout) gets one path
  // through the block, on both sides.
  Instance one_path(kId, {opt_enum("trellis", "block")});
  REQUIRE(one_path.ok());
  const Quantized odd = quantize(inst, x, n, m, nullptr, 5);
  REQUIRE(odd.status == NWC_OK);
  CHECK(odd.symbols == quantize(one_path, x, n, m, nullptr, 5).symbols);
  REQUIRE(dequantize(inst, odd.symbols, nwc_bytes{nullptr, 0}, n, m, back, 5) == NWC_OK);
  CHECK(same_bits(back, odd.dequantized));
}

TEST_CASE("tcq: 8 to 64 states: at lambda 0 the path has the least squared error of all paths") {
  std::mt19937_64 rng(17);
  // Against every symbol sequence, each decoded by the plugin itself (so the check does not restate
  // the trellis): 6 values, symbols in [-3, 3].
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  for (int64_t states : {8, 64}) {
    CAPTURE(states);
    Instance inst(
        kId, {opt_float("step", 1.0), opt_int("states", states), opt_enum("trellis", "block")});
    REQUIRE(inst.ok());
    for (int trial = 0; trial < 2; ++trial) {
      std::vector<float> y(6);
      for (auto &v : y) v = uni(rng);
      const Quantized q = quantize(inst, y, 1, 6);
      REQUIRE(q.status == NWC_OK);
      double best = INFINITY;
      std::vector<int32_t> k(6);
      std::vector<float> decoded;
      for (int code = 0; code < 117649; ++code) { // 7^6
        for (int i = 0, c = code; i < 6; ++i, c /= 7) k[static_cast<size_t>(i)] = c % 7 - 3;
        REQUIRE(dequantize(inst, k, nwc_bytes{nullptr, 0}, 1, 6, decoded) == NWC_OK);
        best = std::min(best, sq_error(y, decoded));
      }
      CHECK(sq_error(y, q.dequantized) == doctest::Approx(best).epsilon(1e-9));
    }
  }
}

TEST_CASE("tcq: path_columns: one path through several columns and blocks on its boundaries") {
  // 8 columns of 3 chunks of 4 latents each, column-major; paths of 4 columns.
  std::mt19937_64 rng(29);
  std::normal_distribution<float> normal(0.0f, 5.0f);
  const int64_t width = 8, per_column = 3, m = 4, n = width * per_column;
  std::vector<float> x(static_cast<size_t>(n * m));
  for (auto &v : x) v = normal(rng);
  for (int64_t states : {4, 32}) {
    CAPTURE(states);
    Instance inst(kId, {opt_int("states", states), opt_int("path_columns", 4)});
    REQUIRE(inst.ok());
    const Quantized whole = quantize(inst, x, n, m, nullptr, width);
    REQUIRE(whole.status == NWC_OK);
    // Two blocks of 4 columns each code the same symbols as the whole.
    check_halves_code_as_whole(inst, x, n, m, width, whole);
    // The paths are the first and the last 4 columns: the same as "block" over each half.
    Instance one_path(kId, {opt_int("states", states), opt_enum("trellis", "block")});
    REQUIRE(one_path.ok());
    const size_t half = x.size() / 2;
    const std::vector<float> left(x.begin(), x.begin() + half);
    const std::vector<int32_t> first_half(whole.symbols.begin(), whole.symbols.begin() + half);
    CHECK(quantize(one_path, left, n / 2, m).symbols == first_half);
    // and not per-column paths.
    Instance per_column_paths(kId, {opt_int("states", states)});
    REQUIRE(per_column_paths.ok());
    CHECK(quantize(per_column_paths, x, n, m, nullptr, width).symbols != whole.symbols);
    // A block that begins inside a path cannot be decoded apart from the one before it.
    const std::vector<float> cols_2_to_4(x.begin() + 2 * per_column * m,
                                         x.begin() + 4 * per_column * m);
    const Quantized inside = quantize(inst, cols_2_to_4, 2 * per_column, m, nullptr, 2, 2);
    CHECK(inside.status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("path_columns = 4") != std::string::npos);
  }
}

TEST_CASE("tcq: errors") {
  for (int64_t states : {0, 5, 12, 128}) {
    CAPTURE(states);
    Instance bad(kId, {opt_int("states", states)});
    CHECK(!bad.ok());
  }
  Instance no_path(kId, {opt_int("path_columns", 0)});
  CHECK(!no_path.ok());
  Instance zero(kId, {opt_float("step", 0.0)});
  CHECK(!zero.ok());
  Instance inst(kId, {opt_enum("trellis", "block")});
  REQUIRE(inst.ok());
  const std::vector<float> nan_in{0.0f, NAN, 1.0f, 2.0f};
  CHECK(quantize(inst, nan_in, 1, 4).status == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("layers.0.latents") != std::string::npos);
  const std::vector<float> huge{0.0f, 1e9f, 1.0f, 2.0f};
  CHECK(quantize(inst, huge, 1, 4).status == NWC_E_INVALID_ARG);

  std::vector<float> out;
  const std::vector<int32_t> ok{1, 2, 3, 4};
  const uint8_t byte = 0;
  CHECK(dequantize(inst, ok, nwc_bytes{&byte, 1}, 1, 4, out) == NWC_E_CORRUPT_STREAM);
  const std::vector<int32_t> wild{1, INT32_MIN, 3, 4};
  CHECK(dequantize(inst, wild, nwc_bytes{nullptr, 0}, 1, 4, out) == NWC_E_CORRUPT_STREAM);
  const std::vector<int32_t> edge{(1 << 29), -(1 << 29), 0, 0};
  CHECK(dequantize(inst, edge, nwc_bytes{nullptr, 0}, 1, 4, out) == NWC_OK);
}
