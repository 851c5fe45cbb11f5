// The ABI headers compile as C++20 with -pedantic -Werror, their layouts are pinned (layout.h,
// checked at compile time in both languages), and the C and C++ views of them agree.
#include "layout.h"
#include "nwc/cpp/plugin.hpp"

#include <cstring>
#include <doctest/doctest.h>

extern "C" const char *nwc_test_c_status_name(nwc_status st);
extern "C" size_t nwc_test_c_sizeof_descriptor(void);

TEST_CASE("C and C++ translation units agree on the ABI") {
  CHECK(nwc_test_c_sizeof_descriptor() == sizeof(nwc_plugin_descriptor));
  CHECK(std::strcmp(nwc_test_c_status_name(NWC_E_CORRUPT_STREAM), "NWC_E_CORRUPT_STREAM") == 0);
  CHECK(std::strcmp(nwc_status_name(-1234), "NWC_E_PLUGIN_PRIVATE") == 0);
  CHECK(std::strcmp(nwc_status_name(-999), "NWC_E_UNKNOWN") == 0);
}

TEST_CASE("ABI version macros split major and minor") {
  CHECK(NWC_ABI_MAJOR(NWC_ABI_VERSION) == 1);
  CHECK(NWC_ABI_MINOR(NWC_ABI_VERSION) == 7);
  CHECK(NWC_ABI_MAJOR(0x00020003u) == 2);
  CHECK(NWC_ABI_MINOR(0x00020003u) == 3);
}

TEST_CASE("C++ helper options: defaults, overrides, bounds and types are enforced") {
  static const char *const modes[] = {"a", "b"};
  const nwc_option_spec specs[] = {
      nwc::int_option("bits", 4, 2, 8, "bits"),
      nwc::float_option("ratio", 0.5, 0.0, 1.0, "ratio"),
      nwc::bool_option("flag", false, "flag"),
      nwc::enum_option("mode", "a", modes, 2, "mode"),
  };
  SUBCASE("defaults") {
    nwc::Options o(specs, 4, nullptr);
    CHECK(o.get_int("bits") == 4);
    CHECK(o.get_float("ratio") == 0.5);
    CHECK_FALSE(o.get_bool("flag"));
    CHECK(o.get_string("mode") == "a");
  }
  SUBCASE("given values") {
    nwc_option given[2]{};
    given[0].key = "bits";
    given[0].value.type = NWC_OPT_INT;
    given[0].value.u.i = 8;
    given[1].key = "mode";
    given[1].value.type = NWC_OPT_ENUM;
    given[1].value.u.s = "b";
    nwc_options opts{sizeof(nwc_options), 2, given};
    nwc::Options o(specs, 4, &opts);
    CHECK(o.get_int("bits") == 8);
    CHECK(o.get_string("mode") == "b");
  }
  SUBCASE("out of range, wrong type, unknown key, bad choice are rejected") {
    nwc_option bad{};
    bad.key = "bits";
    bad.value.type = NWC_OPT_INT;
    bad.value.u.i = 9;
    nwc_options opts{sizeof(nwc_options), 1, &bad};
    CHECK_THROWS_WITH_AS(nwc::Options(specs, 4, &opts), doctest::Contains("outside"), nwc::Error);
    bad.value.type = NWC_OPT_FLOAT;
    CHECK_THROWS_WITH_AS(nwc::Options(specs, 4, &opts), doctest::Contains("wrong type"),
                         nwc::Error);
    bad.key = "bitz";
    CHECK_THROWS_WITH_AS(nwc::Options(specs, 4, &opts), doctest::Contains("unknown option"),
                         nwc::Error);
    bad.key = "mode";
    bad.value.type = NWC_OPT_ENUM;
    bad.value.u.s = "c";
    CHECK_THROWS_WITH_AS(nwc::Options(specs, 4, &opts), doctest::Contains("choices"), nwc::Error);
  }
}
