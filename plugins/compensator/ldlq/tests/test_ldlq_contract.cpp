// nwc.comp.ldlq through its C ABI with the SDK's harness (the plugin's source is compiled into
// this test): the compensator contract for several block widths, a missing Hessian refused, and
// feedback that lowers the Hessian-weighted error below plain rounding on the same grid — except
// for one block as wide as the tensor, which is rounding.
#include "nwc/testing/stage_harness.hpp"

#include <cmath>
#include <doctest/doctest.h>

using namespace nwc::test;

TEST_CASE("nwc.comp.ldlq keeps the compensator contract and beats rounding in tr(E H E^T)") {
  const int64_t rows = 16, cols = 96;
  const auto w = synthetic_weight(rows, cols, 2);
  const auto h = synthetic_hessian(cols, 2);
  std::vector<float> rounded(w.size()), rounding_error(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    rounded[i] = std::nearbyint(w[i] * 8) / 8;
    rounding_error[i] = w[i] - rounded[i];
  }
  const double rounding = hessian_error(rounding_error, h, rows, cols);
  for (int64_t block : {1, 16, 40, 96}) {
    INFO("block " << block);
    Instance ldlq("nwc.comp.ldlq", {opt_int("block", block)});
    REQUIRE(ldlq.ok());
    std::vector<float> out;
    REQUIRE(check_compensator(ldlq, w, rows, cols, &h, 8.0f, &out) == "");
    if (block == cols) {
      CHECK(bitwise_equal(out, rounded));
      continue;
    }
    std::vector<float> e(w.size());
    for (size_t i = 0; i < w.size(); ++i) e[i] = w[i] - out[i];
    const double compensated = hessian_error(e, h, rows, cols);
    MESSAGE("block " << block << ": tr(E H E^T) " << compensated << ", rounding " << rounding);
    CHECK(compensated < 0.9 * rounding);
  }
}
