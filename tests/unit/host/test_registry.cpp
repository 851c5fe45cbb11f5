// Plugin discovery and loading: broken libraries are reported with path and reason and skipped,
// duplicates warn and the first wins, instances keep their library alive.
#include "nwc/cpp/error.hpp"
#include "nwc/host/registry.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cstdlib>
#include <doctest/doctest.h>
#include <iostream>
#include <sstream>

using namespace nwc::host;
namespace fs = std::filesystem;

namespace {
const fs::path kRoot = NWC_TEST_PLUGIN_ROOT;

std::string diagnostic_for(const Registry &r, const std::string &file) {
  for (const auto &d : r.diagnostics())
    if (d.path.filename() == file) return d.message;
  return "";
}

// What a scan logs (warnings included) and the registry it leaves.
struct LoggedScan {
  Registry registry;
  std::string log;
  explicit LoggedScan(const std::vector<fs::path> &dirs) {
    set_log_level(NWC_LOG_WARNING);
    std::ostringstream captured;
    std::streambuf *old = std::cerr.rdbuf(captured.rdbuf());
    registry.scan(dirs);
    std::cerr.rdbuf(old);
    set_log_level(NWC_LOG_ERROR);
    log = captured.str();
  }
};
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

TEST_CASE("one directory named twice, by different paths, is scanned once without warnings") {
  set_log_level(NWC_LOG_ERROR);
  Registry r;
  r.scan({kRoot / "dup_a", kRoot / "dup_b" / ".." / "dup_a" / "."});
  REQUIRE(r.find("org.nwc-test.dup") != nullptr);
  CHECK(r.find("org.nwc-test.dup")->version == "1.0.0");
  CHECK(r.diagnostics().empty());
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

TEST_CASE("KEY=VALUE assignments take the types of the plugin's schema") {
  set_log_level(NWC_LOG_ERROR);
  Registry r;
  r.scan({nwc::test::plugin_dir()});
  const Plugin *uniform = r.find("nwc.quant.uniform");
  REQUIRE(uniform != nullptr);
  const auto *specs = uniform->options.data();
  const auto n = static_cast<uint32_t>(uniform->options.size());
  const OptionValues v = options_from_assignments(
      {"bits=3", "clip_min_ratio=0.25", "mode=symmetric", "clip_search=true"}, specs, n, "test");
  CHECK(std::get<int64_t>(v.find("bits")->value) == 3);
  CHECK(std::get<double>(v.find("clip_min_ratio")->value) == 0.25);
  CHECK(std::get<std::string>(v.find("mode")->value) == "symmetric");
  CHECK(std::get<int64_t>(v.find("clip_search")->value) == 1);
  CHECK(r.create("nwc.quant.uniform", v) != nullptr);
  CHECK_THROWS_WITH_AS(options_from_assignments({"bitz=3"}, specs, n, "--opt for uniform"),
                       doctest::Contains("--opt for uniform: no option 'bitz' (its options: bits, "
                                         "mode, grid, clip_search"),
                       nwc::Error);
  CHECK(options_from_assignments({"bitz=3"}, specs, n, "for all", true).empty());
  CHECK_THROWS_WITH_AS(options_from_assignments({"bits"}, specs, n, "t"),
                       doctest::Contains("'bits' is not an assignment; expected KEY=VALUE"),
                       nwc::Error);
  CHECK_THROWS_WITH_AS(options_from_assignments({"bits=many"}, specs, n, "t"),
                       doctest::Contains("option 'bits' should be a int"), nwc::Error);
}

TEST_CASE("did_you_mean finds close candidates only") {
  CHECK(did_you_mean("gruop", {"group", "tail"}) == "group");
  CHECK(did_you_mean("zzzzzz", {"group", "tail"}).empty());
}

TEST_CASE("a plugin directory that does not exist is a warning naming it; the scan goes on") {
  nwc::test::TempDir dir;
  const fs::path missing = dir / "no-such-dir";
  nwc::test::write_bytes(dir / "a-file", "x", 1);
  LoggedScan s({missing, dir / "a-file", nwc::test::plugin_dir()});
  CHECK(diagnostic_for(s.registry, "no-such-dir") == "plugin directory does not exist");
  CHECK(diagnostic_for(s.registry, "a-file") == "plugin path entry is not a directory");
  CHECK(s.log.find("nwc: warning: " + missing.string() +
                   ": plugin directory does not exist; skipped") != std::string::npos);
  CHECK(s.log.find((dir / "a-file").string() + ": plugin path entry is not a directory") !=
        std::string::npos);
  CHECK(s.registry.find("nwc.quant.uniform") != nullptr);
}

TEST_CASE("the install-relative directory may be absent without a warning") {
  const fs::path install = Registry::install_dir();
  REQUIRE_FALSE(install.empty());
  CHECK(Registry::search_path({}, true).back() == install);
  if (!fs::exists(install)) {
    LoggedScan s({install});
    CHECK(s.registry.diagnostics().empty());
    CHECK(s.log.empty());
  }
}

TEST_CASE("shared libraries that are not plugins are warnings naming them") {
  nwc::test::TempDir dir;
  for (const char *name : {"libhelper.so", "nwc-versioned.so.1", "signmag.so"})
    nwc::test::write_bytes(dir / name, "not loaded\n", 11);
  nwc::test::write_bytes(dir / "README.md", "ignored\n", 8); // not a library: no warning
  fs::copy_file(kRoot / "broken" / "nwc-no-entry.so", dir / "nwc-no-entry.so");
  LoggedScan s({dir.path()});
  for (const char *name : {"libhelper.so", "nwc-versioned.so.1", "signmag.so"}) {
    INFO(name);
    CHECK(diagnostic_for(s.registry, name) ==
          "shared library not named nwc-<name>.so, so not a plugin");
    CHECK(s.log.find((dir / name).string() + ": shared library not named nwc-<name>.so") !=
          std::string::npos);
  }
  // Named like a plugin, but without the entry point: loaded, found wanting, reported.
  CHECK(diagnostic_for(s.registry, "nwc-no-entry.so").find("no nwc_module_entry") !=
        std::string::npos);
  CHECK(s.log.find((dir / "nwc-no-entry.so").string() + ": no nwc_module_entry symbol") !=
        std::string::npos);
  CHECK(diagnostic_for(s.registry, "README.md").empty());
  CHECK(s.registry.diagnostics().size() == 4);
  CHECK(s.registry.plugins().empty());
}
