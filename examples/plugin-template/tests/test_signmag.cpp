// The plugin's own test, out of tree: its sources compiled in, driven through the C ABI by the
// SDK's installed harness (nwc/testing/stage_harness.hpp), with the checks every quantizer must
// pass (deterministic, dequantize reproduces what quantize returned, truncated side information
// refused). No test framework: exits non-zero with one line per failure. Run by `ctest`.
#include "nwc/testing/stage_harness.hpp"

#include <cmath>
#include <cstdio>
#include <random>

namespace t = nwc::test;

int main() {
  int failures = 0;
  auto expect = [&](bool ok, const std::string &what) {
    if (!ok) {
      std::fprintf(stderr, "test_signmag: %s\n", what.c_str());
      ++failures;
    }
  };
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t rows = 8, cols = 64;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float &x : w) x = normal(rng);

  for (int64_t bits : {2, 4, 8}) {
    t::Instance q("org.example.quant.signmag", {t::opt_int("bits", bits)});
    expect(q.ok(), "create with bits = " + std::to_string(bits) + ": " + q.host.last());
    if (!q.ok()) continue;
    const std::string why = t::check_quantizer(q, w, rows, cols);
    expect(why.empty(), "bits = " + std::to_string(bits) + ": " + why);
    // Sign-magnitude keeps every value within half a step of the chunk's scale.
    const t::QuantizerOutput out = t::run_quantize(q, w, rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      float scale = 0;
      for (int64_t c = 0; c < cols; ++c) scale = std::fmax(scale, std::fabs(w[r * cols + c]));
      const float step = scale / static_cast<float>((1 << (bits - 1)) - 1);
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        expect(std::fabs(out.dequantized[i] - w[i]) <= 0.5f * step * 1.0001f,
               "bits = " + std::to_string(bits) + ": element " + std::to_string(i) +
                   " is more than half a step from its value");
      }
    }
  }
  t::Instance bad("org.example.quant.signmag", {t::opt_int("bits", 99)});
  expect(!bad.ok(), "bits = 99 was accepted");
  if (failures == 0) std::puts("test_signmag: all checks passed");
  return failures == 0 ? 0 : 1;
}
