// nwc.comp.none through its C ABI with the SDK's harness: the compensator contract, and no
// feedback — what it commits is the weight rounded on the codec's grid, element for element.
#include "nwc/testing/stage_harness.hpp"

#include <cmath>
#include <doctest/doctest.h>

using namespace nwc::test;

TEST_CASE("nwc.comp.none keeps the compensator contract and commits the weight as coded") {
  const int64_t rows = 12, cols = 100;
  const auto w = synthetic_weight(rows, cols);
  for (int64_t block : {1, 32, 100, 4096}) {
    INFO("block " << block);
    Instance none("nwc.comp.none", {opt_int("block", block)});
    REQUIRE(none.ok());
    std::vector<float> out;
    CHECK(check_compensator(none, w, rows, cols, nullptr, 64.0f, &out) == "");
    REQUIRE(out.size() == w.size());
    for (size_t i = 0; i < w.size(); ++i) REQUIRE(out[i] == std::nearbyint(w[i] * 64.0f) / 64.0f);
  }
}
