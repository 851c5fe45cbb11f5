// `nwc compress --target-bpw`: the rate search over the shipped codec ladder lands near the asked
// rate, reports what it measured, and the container holds exactly that; the Hessian-levels variant
// stores no levels stream when it settles on uniform level 0; non-NWC pipelines are refused.
// `nwc compress --json` with [allocate] reports what each tensor group measured and got.
#include "cli_runner.hpp"
#include "nwc/formats/container.hpp"
#include "test_support.hpp"

#include <cmath>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;
using nwc::test::Result;
using nwc::test::run_nwc;
using nwc::test::TempDir;

namespace {

std::string stories() {
  return nwc::test::stories260k().string();
}
std::string pipeline(const std::string &name) {
  return (nwc::test::source_dir() / "pipelines" / (name + ".toml")).string();
}

json compress_to(double target, const std::string &pipe, const fs::path &out,
                 const std::vector<std::string> &extra = {}) {
  std::vector<std::string> args = {"compress", stories(),      "--pipeline",
                                   pipe,       "-o",           out.string(),
                                   "--json",   "--target-bpw", std::to_string(target)};
  args.insert(args.end(), extra.begin(), extra.end());
  Result r = run_nwc(args);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

// Measured bits per coded weight of a container: its pipeline tensors' stream bytes.
double coded_bpw(const fs::path &file, bool *has_levels = nullptr) {
  nwc::ContainerReader reader(file);
  double bytes = 0, weights = 0;
  if (has_levels) *has_levels = false;
  for (const auto &t : reader.manifest().tensors) {
    if (t.storage != "pipeline") continue;
    double n = 1;
    for (auto d : t.shape) n *= static_cast<double>(d);
    weights += n;
    for (const auto &s : t.streams) {
      bytes += static_cast<double>(s.length);
      if (has_levels && s.role == "levels") *has_levels = true;
    }
  }
  return 8.0 * bytes / weights;
}

} // namespace

TEST_CASE("--target-bpw picks the ladder codec closest to the asked rate and reports it") {
  TempDir dir;
  double previous = 0;
  for (double target : {3.0, 5.0}) {
    INFO("target " << target);
    const fs::path out = dir.path() / ("t" + std::to_string(int(target)) + ".nwc");
    json j = compress_to(target, pipeline("nwc-datafree-l300"), out);
    const json &rc = j.at("rate_control");
    CHECK(rc.at("target_bpw").get<double>() == doctest::Approx(target));
    CHECK(rc.at("candidates").get<int>() >= 7);
    const double achieved = rc.at("achieved_bpw").get<double>();
    // The ladder's steps (7 codecs x 4 levels) are well under half a bit apart here.
    CHECK(std::fabs(achieved - target) < 0.25);
    // Without fine-tuning the final container is the searched candidate, and holds that rate.
    CHECK(rc.at("search_bpw").get<double>() == doctest::Approx(achieved).epsilon(1e-9));
    CHECK(coded_bpw(out) == doctest::Approx(achieved).epsilon(1e-9));
    CHECK(achieved > previous);
    previous = achieved;
  }
}

TEST_CASE("--target-bpw with Hessian levels stores levels only when it raises some columns") {
  TempDir dir;
  const fs::path h = dir.path() / "h.safetensors";
  const fs::path tok = nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
  Result cal = run_nwc({"calibrate", "--model", stories(), "--tokenizer", tok.string(), "--text",
                        (nwc::test::data_dir() / "text" / "tinystories-calib.txt").string(),
                        "--tokens", "8192", "-o", h.string(), "--quiet"});
  INFO("calibrate stderr: " << cal.err);
  REQUIRE(cal.exit_code == 0);
  // The whole-method preset without fine-tuning (fast): levels + row norm + LDLQ.
  std::string text = nwc::test::slurp(pipeline("nwc-l300"));
  text = text.substr(0, text.find("[blockft]"));
  const std::string codec = (nwc::test::source_dir() / "codecs" / "nwc-s-l300.nwcc").string();
  text.replace(text.find("../codecs/nwc-s-l300.nwcc"), 25, codec);
  const fs::path pipe = dir.path() / "levels.toml";
  std::ofstream(pipe) << text;
  for (double target : {3.0, 4.0}) {
    INFO("target " << target);
    const fs::path out = dir.path() / "l.nwc";
    json rc =
        compress_to(target, pipe.string(), out, {"--calibration", h.string()})["rate_control"];
    bool has_levels = false;
    const double achieved = coded_bpw(out, &has_levels);
    CHECK(achieved == doctest::Approx(rc.at("achieved_bpw").get<double>()).epsilon(1e-9));
    CHECK(std::fabs(achieved - target) < 0.3);
    CHECK(has_levels == (rc.at("fraction_scale").get<double>() > 0));
  }
}

TEST_CASE("--target-bpw refuses a pipeline without the neural codec") {
  TempDir dir;
  Result r = run_nwc({"compress", stories(), "--pipeline", pipeline("rtn-4bit-g32"), "-o",
                      (dir.path() / "x.nwc").string(), "--target-bpw", "4"});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("--target-bpw needs a pipeline whose transform is nwc.transform.neural") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "x.nwc"));
}

TEST_CASE("--json reports the [allocate] candidates, what each group measured and its choice") {
  TempDir dir;
  const fs::path pipe = dir.path() / "alloc.toml", out = dir.path() / "a.nwc";
  std::ofstream(pipe) << "[pipeline]\nselect = [\"model.layers.*_proj.weight\"]\n"
                         "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 32\n"
                         "[quantizer]\nplugin = \"nwc.quant.uniform\"\nbits = 4\n"
                         "[entropy]\nplugin = \"nwc.entropy.raw\"\n"
                         "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n"
                         "[allocate]\ngroup = \"kind\"\ntarget_bpw = 5\ntokens = 256\n"
                         "[[allocate.candidate]]\nquantizer = { bits = 3 }\n"
                         "[[allocate.candidate]]\nquantizer = { bits = 8 }\n";
  const fs::path data = nwc::test::data_dir();
  Result r = run_nwc({"compress", stories(), "--pipeline", pipe.string(), "-o", out.string(),
                      "--json", "--tokenizer", (data / "models/stories260K/tok512.bin").string(),
                      "--calib-text", (data / "text/tinystories-calib.txt").string()});
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  const json a = json::parse(r.out).at("allocation");
  CHECK(a.at("candidates") ==
        json{"the pipeline's chain", "quantizer.bits = 3", "quantizer.bits = 8"});
  REQUIRE(a.at("units").size() == 7);
  double bits = 0, weights = 0;
  for (const json &u : a.at("units")) {
    INFO(u.dump());
    CHECK(u.at("tensors").size() == 5);
    REQUIRE(u.at("options").size() == 3);
    const size_t chosen = u.at("chosen").get<size_t>();
    REQUIRE(chosen < 3);
    const json &o = u.at("options")[chosen];
    CHECK(o.at("candidate").get<size_t>() == chosen);
    // More bits, less KL: 3 bits, 4 bits, 8 bits.
    const auto bpw = [&](size_t k) {
      return u.at("options")[k].at("bits_per_weight").get<double>();
    };
    const auto kl = [&](size_t k) { return u.at("options")[k].at("kl").get<double>(); };
    CHECK(bpw(1) < bpw(0));
    CHECK(bpw(0) < bpw(2));
    CHECK(kl(2) < kl(0));
    CHECK(kl(0) < kl(1));
    bits += o.at("bits_per_weight").get<double>() * u.at("weights").get<double>();
    weights += u.at("weights").get<double>();
  }
  CHECK(bits / weights == doctest::Approx(a.at("bits_per_weight").get<double>()).epsilon(1e-9));
  CHECK(a.at("bits_per_weight").get<double>() <= 5);
  // The container's coded streams (without the header share) stay under it.
  CHECK(coded_bpw(out) < a.at("bits_per_weight").get<double>());
}
