// Plugin discovery and loading: broken libraries are reported with path and reason and skipped,
// duplicates warn and the first wins, instances keep their library alive.
#include "nwc/cpp/error.hpp"
#include "nwc/host/registry.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cstdlib>
#include <doctest/doctest.h>

using namespace nwc::host;
namespace fs = std::filesystem;

namespace {
const fs::path kRoot = NWC_TEST_PLUGIN_ROOT;

std::string diagnostic_for(const Registry &r, const std::string &file) {
  for (const auto &d : r.diagnostics())
    if (d.path.filename() == file) return d.message;
  return "";
}
} // namespace

TEST_CASE("broken plugin libraries are reported and skipped, the scan goes on") {
  set_log_level(NWC_LOG_ERROR);
  Registry r;
  r.scan({kRoot / "broken", nwc::test::plugin_dir()});
  CHECK(diagnostic_for(r, "nwc-no-entry.so").find("no nwc_module_entry") != std::string::npos);
  CHECK(diagnostic_for(r, "nwc-foreign-abi.so").find("built for ABI 2.0") != std::string::npos);
  CHECK(diagnostic_for(r, "nwc-not-elf.so").find("cannot load library") != std::string::npos);
  // The plugins after the broken ones still loaded.
  CHECK(r.find("nwc.quant.uniform") != nullptr);
  CHECK(r.find("nwc.entropy.zstd") != nullptr);
  // Libraries that load fine but fail later are listed.
  CHECK(r.find("org.nwc-test.create-fails") != nullptr);
  CHECK(r.find("org.nwc-test.throws") != nullptr);
}

TEST_CASE("a plugin whose create fails gives an error naming it, not a crash") {
  set_log_level(NWC_LOG_ERROR + 1);
  Registry r;
  r.scan({kRoot / "broken"});
  CHECK_THROWS_WITH_AS(
      r.create("org.nwc-test.create-fails", {}),
      doctest::Contains("org.nwc-test.create-fails: create failed (NWC_E_DEVICE): this test "
                        "plugin never starts"),
      nwc::Error);
}

TEST_CASE("an exception inside a plugin operation becomes a status and a message") {
  set_log_level(NWC_LOG_ERROR + 1);
  Registry r;
  r.scan({kRoot / "broken"});
  auto inst = r.create("org.nwc-test.throws", {});
  const auto &q = inst->interface_as<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  float x[4] = {1, 2, 3, 4};
  int32_t s[4];
  float d[4];
  int64_t shape[2] = {1, 4};
  nwc_tensor_view xv{x, 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view sv{s, 0, NWC_DTYPE_I32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view dv{d, 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_block_info info{sizeof(nwc_block_info), 0, "t", 1, 4, 0, 4, nullptr, nullptr};
  nwc_status st = q.quantize(inst->raw(), &info, &xv, &sv, &dv, nullptr);
  CHECK(st == NWC_E_INTERNAL);
  CHECK_THROWS_WITH_AS(inst->check(st, "quantize"),
                       doctest::Contains("deliberate failure inside quantize"), nwc::Error);
}

TEST_CASE("duplicate ids: the first directory wins and the later one is reported") {
  set_log_level(NWC_LOG_ERROR);
  Registry r;
  r.scan({kRoot / "dup_b", kRoot / "dup_a"});
  const Plugin *p = r.find("org.nwc-test.dup");
  REQUIRE(p != nullptr);
  CHECK(p->version == "2.0.0");
  CHECK(diagnostic_for(r, "nwc-dup-first.so").find("duplicate plugin id") != std::string::npos);
}

TEST_CASE("search path order: --plugin-path, then NWC_PLUGIN_PATH, then install-relative") {
  setenv("NWC_PLUGIN_PATH", "/env/one:/env/two", 1);
  auto dirs = Registry::search_path({"/cli"});
  REQUIRE(dirs.size() == 4);
  CHECK(dirs[0] == "/cli");
  CHECK(dirs[1] == "/env/one");
  CHECK(dirs[2] == "/env/two");
  CHECK(dirs[3].string().find("lib/nwc/plugins") != std::string::npos);
  CHECK(Registry::search_path({"/cli"}, false).size() == 3);
  unsetenv("NWC_PLUGIN_PATH");
}

TEST_CASE("an instance keeps its library loaded after the registry is gone") {
  set_log_level(NWC_LOG_ERROR);
  std::unique_ptr<Instance> inst;
  {
    Registry r;
    r.scan({nwc::test::plugin_dir()});
    OptionValues opts;
    opts.set(OptionValue{"bits", NWC_OPT_INT, int64_t{3}});
    inst = r.create("nwc.quant.uniform", opts);
  }
  OptionValues resolved = inst->resolved_options();
  REQUIRE(resolved.find("bits") != nullptr);
  CHECK(std::get<int64_t>(resolved.find("bits")->value) == 3);
}

TEST_CASE("options are validated against the schema before create") {
  set_log_level(NWC_LOG_ERROR);
  Registry r;
  r.scan({nwc::test::plugin_dir()});
  OptionValues bad;
  bad.set(OptionValue{"bitz", NWC_OPT_INT, int64_t{3}});
  CHECK_THROWS_WITH_AS(r.create("nwc.quant.uniform", bad), doctest::Contains("did you mean 'bits'"),
                       nwc::Error);
  OptionValues range;
  range.set(OptionValue{"bits", NWC_OPT_INT, int64_t{12}});
  CHECK_THROWS_WITH_AS(r.create("nwc.quant.uniform", range),
                       doctest::Contains("out of range [2, 8]"), nwc::Error);
  CHECK_THROWS_WITH_AS(r.create("nwc.quant.unifrom", {}),
                       doctest::Contains("did you mean nwc.quant.uniform"), nwc::Error);
}

TEST_CASE("did_you_mean finds close candidates only") {
  CHECK(did_you_mean("gruop", {"group", "tail"}) == "group");
  CHECK(did_you_mean("zzzzzz", {"group", "tail"}).empty());
}
