// The committed plugin reference (docs/plugins/) is what the built nwc generates from the plugins'
// own descriptors and option schemas (`nwc plugins show --all --markdown`), so option docs cannot
// drift from the code. A stale page fails with its name and the command that regenerates it.
#include "cli_runner.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using nwc::test::Result;
using nwc::test::run_nwc;
using nwc::test::slurp;
using nwc::test::TempDir;

namespace {

// Only the build tree's plugins: nothing from the user's NWC_PLUGIN_PATH.
const char *kCleanEnv = "env -u NWC_PLUGIN_PATH -u NWC_PLUGIN_PATH_ONLY";

fs::path committed_dir() {
  return nwc::test::source_dir() / "docs" / "plugins";
}

std::string regenerate_hint() {
  return "regenerate with `scripts/gen-plugin-docs.sh " + nwc::test::binary_dir().string() +
         "` and commit docs/plugins/";
}

const std::vector<std::string> kBundled = {
    "nwc.chunk.group", "nwc.chunk.column", "nwc.quant.uniform", "nwc.quant.nf4",
    "nwc.quant.round", "nwc.entropy.raw",  "nwc.entropy.zstd",  "nwc.entropy.rans",
    "nwc.comp.none",   "nwc.comp.gptq",    "nwc.comp.ldlq",     "nwc.transform.neural"};

} // namespace

TEST_CASE("docs/plugins/ matches the pages generated from the plugins' schemas") {
  TempDir tmp;
  const fs::path out = tmp / "plugins";
  Result r = run_nwc({"plugins", "show", "--all", "--markdown", "--output-dir", out.string(),
                      "--no-default-plugin-path", "--plugin-path", nwc::test::plugin_dir().string(),
                      "--quiet"},
                     kCleanEnv);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);

  std::set<std::string> generated;
  for (const auto &e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    generated.insert(name);
    const fs::path committed = committed_dir() / name;
    if (!fs::exists(committed)) {
      FAIL_CHECK("docs/plugins/" << name << " is missing; " << regenerate_hint());
      continue;
    }
    if (slurp(committed) != slurp(e.path()))
      FAIL_CHECK("docs/plugins/" << name
                                 << " is stale: it differs from what the built nwc generates "
                                    "from the plugin's descriptor; "
                                 << regenerate_hint());
  }
  for (const auto &e : fs::directory_iterator(committed_dir())) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".md" && !generated.count(name))
      FAIL_CHECK("docs/plugins/" << name << " documents no installed plugin; " << regenerate_hint()
                                 << " (the script removes pages of plugins that are gone)");
  }
  CHECK(generated.count("README.md") == 1);
  for (const auto &id : kBundled) {
    INFO("bundled plugin " << id);
    CHECK(generated.count(id + ".md") == 1);
  }
}

TEST_CASE("plugins show ID --markdown prints one plugin's page") {
  Result r = run_nwc({"plugins", "show", "nwc.quant.uniform", "--markdown"}, kCleanEnv);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  // The same bytes as the page written by --all --output-dir (and committed).
  CHECK(r.out == slurp(committed_dir() / "nwc.quant.uniform.md"));
  CHECK(r.out.rfind("# nwc.quant.uniform\n", 0) == 0);
  CHECK(r.out.find("| kind | quantizer (interface `nwc.quantizer/1`") != std::string::npos);
  CHECK(r.out.find("| `bits` | int | `4` | 2 … 8 | bits | yes | Bits per symbol") !=
        std::string::npos);
  CHECK(r.out.find("| `mode` | enum | `\"asymmetric\"` | `\"asymmetric\"`, `\"symmetric\"` |") !=
        std::string::npos);
  // Deterministic: no library directory, no time.
  CHECK(r.out.find(nwc::test::binary_dir().string()) == std::string::npos);

  Result all = run_nwc({"plugins", "show", "--all", "--markdown"}, kCleanEnv);
  REQUIRE(all.exit_code == 0);
  CHECK(all.out.rfind("# Plugin reference\n", 0) == 0);
  CHECK(all.out.find(r.out) != std::string::npos);
}

TEST_CASE("plugins show --markdown usage errors") {
  auto check_usage = [](const std::vector<std::string> &args, const std::string &needle) {
    Result r = run_nwc(args, kCleanEnv);
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(needle) != std::string::npos);
  };
  check_usage({"plugins", "show", "nwc.quant.uniform", "--all", "--markdown"},
              "either a plugin id or --all");
  check_usage({"plugins", "show", "--markdown"}, "either a plugin id or --all");
  check_usage({"plugins", "show", "--all"}, "need --markdown");
  check_usage({"plugins", "show", "nwc.quant.uniform", "--markdown", "--json"}, "exclusive");
  check_usage({"plugins", "show", "nwc.quant.uniform", "--markdown", "--output-dir", "x"},
              "--output-dir needs --all");

  Result r = run_nwc({"plugins", "show", "nwc.quant.unifrm", "--markdown"}, kCleanEnv);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("did you mean nwc.quant.uniform") != std::string::npos);
}
