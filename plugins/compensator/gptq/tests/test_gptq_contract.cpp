// nwc.comp.gptq through its C ABI with the SDK's harness (the plugin's source is compiled into
// this test): the compensator contract for each ordering, a missing Hessian refused, and error
// feedback that lowers the Hessian-weighted error below plain rounding on the same grid.
#include "nwc/testing/stage_harness.hpp"

#include <cmath>
#include <doctest/doctest.h>

using namespace nwc::test;

TEST_CASE("nwc.comp.gptq keeps the compensator contract and beats rounding in tr(E H E^T)") {
  const int64_t rows = 16, cols = 96;
  const auto w = synthetic_weight(rows, cols);
  const auto h = synthetic_hessian(cols);
  std::vector<float> rounding_error(w.size());
  for (size_t i = 0; i < w.size(); ++i) rounding_error[i] = w[i] - std::nearbyint(w[i] * 8) / 8;
  const double rounding = hessian_error(rounding_error, h, rows, cols);
  struct Case {
    const char *name;
    std::vector<nwc_option> options;
  };
  const Case cases[] = {
      {"no groups", {opt_int("group", 0), opt_int("block", 32)}},
      {"groups of 32", {opt_int("group", 32), opt_int("block", 64)}},
      {"act-order", {opt_int("group", 32), opt_bool("act_order", true)}},
      {"act-order, static groups",
       {opt_int("group", 32), opt_bool("act_order", true), opt_bool("static_groups", true)}},
  };
  for (const auto &c : cases) {
    INFO(c.name);
    Instance gptq("nwc.comp.gptq", c.options);
    REQUIRE(gptq.ok());
    std::vector<float> out;
    REQUIRE(check_compensator(gptq, w, rows, cols, &h, 8.0f, &out) == "");
    std::vector<float> e(w.size());
    for (size_t i = 0; i < w.size(); ++i) e[i] = w[i] - out[i];
    const double compensated = hessian_error(e, h, rows, cols);
    MESSAGE(std::string(c.name) << ": tr(E H E^T) " << compensated << ", rounding " << rounding);
    CHECK(compensated < 0.9 * rounding);
  }
}
