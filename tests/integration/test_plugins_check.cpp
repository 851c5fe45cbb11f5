// `nwc plugins check`: every bundled plugin passes; a plugin that crashes is reported as a failed
// check (with the signal and the step) by a parent that survives it.
#include "cli_runner.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <set>

namespace fs = std::filesystem;
using nlohmann::json;
using nwc::test::Result;
using nwc::test::run_nwc;

namespace {

std::string test_plugin_dir(const std::string &dir) {
  return (nwc::test::binary_dir() / "tests" / "plugins" / dir).string();
}
std::string codec() {
  return (nwc::test::source_dir() / "codecs" / "nwc-s-l300.nwcc").string();
}

} // namespace

TEST_CASE("plugins check passes for every bundled plugin") {
  Result r = run_nwc({"plugins", "check", "--all", "--set", "codec=" + codec(), "--json"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  json j = json::parse(r.out);
  CHECK(j["passed"] == true);
  std::set<std::string> ids, kinds;
  for (const auto &p : j["plugins"]) {
    INFO(p.dump(2));
    CHECK(p["passed"] == true);
    CHECK(p["steps"].size() >= 3);
    ids.insert(p["id"].get<std::string>());
    kinds.insert(p["kind"].get<std::string>());
  }
  for (const char *id : {"nwc.chunk.group", "nwc.chunk.column", "nwc.quant.uniform",
                         "nwc.quant.nf4", "nwc.entropy.rans", "nwc.entropy.zstd", "nwc.comp.gptq",
                         "nwc.transform.neural", "nwc.rotation.hadamard"})
    CHECK(ids.count(id) == 1);
  CHECK(kinds == std::set<std::string>{"chunker", "transform", "quantizer", "entropy",
                                       "compensator", "rotation"});
}

TEST_CASE("plugins check validates a codec's tables per quality level") {
  const std::string trellis =
      (nwc::test::source_dir() / "codecs" / "nwc-t-l300.nwcc").string(); // format 2
  Result r =
      run_nwc({"plugins", "check", "nwc.transform.neural", "--set", "codec=" + trellis, "--json"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  json j = json::parse(r.out);
  bool seen = false;
  for (const auto &s : j["plugins"][0]["steps"])
    if (s["step"] == "probability_model") {
      CHECK(s["result"] == "pass");
      CHECK(s["message"] == "16 channels x 4 levels");
      seen = true;
    }
  CHECK(seen);
}

TEST_CASE("plugins check show and list handle the rotation kind") {
  Result r = run_nwc({"plugins", "check", "nwc.rotation.hadamard"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("nwc.rotation.hadamard (rotation") != std::string::npos);
  CHECK(r.out.find("pass  forward: norm kept") != std::string::npos);
  CHECK(r.out.find("pass  inverse: max difference") != std::string::npos);
  Result s = run_nwc({"plugins", "show", "nwc.rotation.hadamard"});
  CHECK(s.exit_code == 0);
  CHECK(s.out.find("nwc.rotation.hadamard 1.0.0 (rotation") != std::string::npos);
  CHECK(s.out.find("sides") != std::string::npos);
  Result m = run_nwc({"plugins", "show", "nwc.rotation.hadamard", "--markdown"});
  CHECK(m.exit_code == 0);
  CHECK(
      m.out.find("| kind | rotation (interface `nwc.rotation/1`, pipeline table `[rotation]`) |") !=
      std::string::npos);
  Result l = run_nwc({"plugins", "list"});
  CHECK(l.out.find("nwc.rotation.hadamard") != std::string::npos);
}

TEST_CASE("plugins check in text form names each step") {
  Result r = run_nwc({"plugins", "check", "nwc.entropy.rans", "nwc.chunk.column"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("nwc.entropy.rans (entropy") != std::string::npos);
  CHECK(r.out.find("pass  decode (with a model): exact round trip") != std::string::npos);
  CHECK(r.out.find("pass  merge [0,128)") != std::string::npos);
  CHECK(r.out.find("2 of 2 plugins passed") != std::string::npos);
}

TEST_CASE("plugins check reports a plugin that needs an option") {
  Result r = run_nwc({"plugins", "check", "nwc.transform.neural", "--json"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 1);
  json j = json::parse(r.out);
  CHECK(j["plugins"][0]["error"].get<std::string>().find("needs option codec") !=
        std::string::npos);
}

TEST_CASE("plugins check survives a plugin that crashes and reports the signal and step") {
  Result r = run_nwc({"plugins", "check", "org.nwc-test.crash", "nwc.quant.uniform",
                      "--plugin-path", test_plugin_dir("crash"), "--json"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("plugin org.nwc-test.crash crashed with SIGSEGV while quantize") !=
        std::string::npos);
  json j = json::parse(r.out);
  CHECK(j["passed"] == false);
  REQUIRE(j["plugins"].size() == 2);
  CHECK(j["plugins"][0]["passed"] == false);
  CHECK(j["plugins"][0]["steps"].back()["step"] == "quantize");
  CHECK(j["plugins"][0]["steps"].back()["result"] == "fail");
  // The parent went on with the next plugin.
  CHECK(j["plugins"][1]["id"] == "nwc.quant.uniform");
  CHECK(j["plugins"][1]["passed"] == true);
}

TEST_CASE("plugins check reports a plugin that throws, and usage errors") {
  Result r = run_nwc({"plugins", "check", "org.nwc-test.throws", "--quiet", "--plugin-path",
                      test_plugin_dir("broken")});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("deliberate failure inside quantize") != std::string::npos);
  CHECK(r.out.find("FAIL  quantize") != std::string::npos);

  Result missing = run_nwc({"plugins", "check", "nwc.quant.unifrom"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.err.find("did you mean nwc.quant.uniform?") != std::string::npos);

  CHECK(run_nwc({"plugins", "check"}).exit_code == 2);
  CHECK(run_nwc({"plugins", "check", "x", "--set", "novalue"}).exit_code == 2);
}
