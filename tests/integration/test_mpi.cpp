// `mpirun -np N nwc calibrate|compress`: calibration windows and tensors shared over MPI ranks,
// rank 0 writing, and the same bytes as one process writes. Run on one machine with
// --oversubscribe (the ranks share its cores).
#include "cli_runner.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;
using namespace nwc;
using test::run_nwc;

namespace {

// The prefix run_nwc puts before the nwc executable: an MPI job of n processes on this machine.
// Root is allowed (CI containers run as root); the shared-memory transport copies through a
// buffer because containers often forbid the cross-process reads of its default mechanism.
std::string mpirun(int n) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
         "OMPI_MCA_btl_vader_single_copy_mechanism=none " +
         test::quote(NWC_MPIEXEC) + " -np " + std::to_string(n) + " --oversubscribe";
}

std::string model() {
  return test::stories260k().string();
}
std::string tokenizer() {
  return (test::data_dir() / "models" / "stories260K" / "tok512.bin").string();
}
std::string source(const std::string &rel) {
  return (test::source_dir() / rel).string();
}

std::string data_env() {
  return "NWC_DATA=" + test::quote(test::data_dir().string());
}

void require_ok(const test::Result &r) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
}

} // namespace

TEST_CASE("mpirun -np 2 calibrate writes the single-process Hessians byte for byte") {
  test::TempDir dir;
  const std::vector<std::string> args = {"calibrate", "--model",  model(), "--tokenizer",
                                         tokenizer(), "--tokens", "8192",  "--quiet"};
  auto one_args = args, job_args = args;
  one_args.insert(one_args.end(), {"-o", (dir / "one.safetensors").string(), "--threads", "2"});
  job_args.insert(job_args.end(), {"-o", (dir / "job.safetensors").string(), "--threads", "1"});
  require_ok(run_nwc(one_args, data_env()));
  require_ok(run_nwc(job_args, data_env() + " " + mpirun(2)));
  const std::string a = test::slurp(dir / "one.safetensors"),
                    b = test::slurp(dir / "job.safetensors");
  REQUIRE(a.size() > 800000);
  CHECK(a == b);
}

TEST_CASE("mpirun compress --calibrate: GPTQ and NWC containers identical to one process") {
  test::TempDir dir;
  struct Case {
    const char *name, *pipeline;
    int ranks;
  };
  for (const Case c : {Case{"gptq", "pipelines/gptq-3bit-g32.toml", 2},
                       Case{"gptq3", "pipelines/gptq-3bit-g32.toml", 3},
                       Case{"nwc", "benchmarks/suites/nwc-ablation/nwc-abl4-ldlq.toml", 2}}) {
    INFO(c.name);
    auto args = [&](const std::string &out, const char *threads) {
      return std::vector<std::string>{"compress",    model(),
                                      "--pipeline",  source(c.pipeline),
                                      "-o",          (dir / out).string(),
                                      "--calibrate", "--tokenizer",
                                      tokenizer(),   "--calib-tokens",
                                      "8192",        "--threads",
                                      threads,       "--quiet"};
    };
    const std::string one = std::string(c.name) + "-one.nwc",
                      job = std::string(c.name) + "-job.nwc";
    require_ok(run_nwc(args(one, "2"), data_env()));
    require_ok(run_nwc(args(job, "1"), data_env() + " " + mpirun(c.ranks)));
    const std::string a = test::slurp(dir / one), b = test::slurp(dir / job);
    REQUIRE(a.size() > 100000);
    CHECK(a == b);
  }
  // The intermediate Hessians are gone: only the containers are left.
  size_t files = 0;
  for (const auto &e : fs::directory_iterator(dir.path())) {
    CHECK(e.path().extension() == ".nwc");
    ++files;
  }
  CHECK(files == 6);
}

TEST_CASE("under mpirun, other commands and failing ranks stop the job with one line each") {
  test::TempDir dir;
  auto r = run_nwc({"eval", "--model", model(), "--tokenizer", tokenizer()},
                   data_env() + " " + mpirun(2));
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("nwc eval runs in one process") != std::string::npos);
  // A pipeline that needs Hessians, none given: every rank fails, no output is left.
  r = run_nwc({"compress", model(), "--pipeline",
               source("benchmarks/suites/nwc-ablation/nwc-abl4-ldlq.toml"), "-o",
               (dir / "x.nwc").string()},
              data_env() + " " + mpirun(2));
  CHECK(r.exit_code != 0);
  // Whichever rank fails first aborts the job, possibly before the other one has printed.
  CHECK((r.err.find("(rank 0 of 2): error:") != std::string::npos ||
         r.err.find("(rank 1 of 2): error:") != std::string::npos));
  CHECK(r.err.find("needs the calibration Hessian") != std::string::npos);
  CHECK(fs::is_empty(dir.path()));
  r = run_nwc({"compress", model(), "--pipeline", source("pipelines/nwc-l300.toml"), "-o",
               (dir / "x.nwc").string(), "--target-bpw", "4"},
              data_env() + " " + mpirun(2));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--target-bpw runs in one process") != std::string::npos);
}
