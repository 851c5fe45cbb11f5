// Interrupted and failing runs of the real `nwc` executable: SIGINT or SIGTERM part-way through a
// compression of stories260K, and a plugin that fails mid-run, leave neither the output nor a
// temporary file behind, and the same command then succeeds.
//
// Timing-independent: the run is slowed by the test quantizer org.nwc-test.slow (a sleep per
// block), the test waits (with generous timeouts, polling) until the temporary output file exists
// and only then sends the signal, and nothing asserts how long anything took.
#include "cli_runner.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using nwc::test::Result;
using nwc::test::run_nwc;
using nwc::test::TempDir;

namespace {

std::string model() {
  return nwc::test::stories260k().string();
}

fs::path test_plugin_dir(const std::string &dir) {
  return nwc::test::binary_dir() / "tests" / "plugins" / dir;
}

// A pipeline whose quantizer is `quantizer` (with its options as TOML inline-table members).
fs::path write_pipeline(const TempDir &dir, const std::string &quantizer,
                        const std::string &options = "") {
  const fs::path p = dir / "p.toml";
  const std::string text = "[pipeline]\nname = \"interrupt\"\nselect = [\"*_proj.weight\"]\n"
                           "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 32\n"
                           "[quantizer]\nplugin = \"" +
                           quantizer + "\"\n" + options +
                           "\n[entropy]\nplugin = \"nwc.entropy.raw\"\n"
                           "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 32\n";
  nwc::test::write_bytes(p, text.data(), text.size());
  return p;
}

// `nwc ARGS` started in the background, stdout and stderr to files.
struct Child {
  pid_t pid = -1;
  fs::path out, err;
};

Child spawn_nwc(const std::vector<std::string> &args, const TempDir &logs) {
  Child c;
  c.out = logs / "stdout";
  c.err = logs / "stderr";
  const std::string exe = (nwc::test::binary_dir() / "bin" / "nwc").string();
  std::vector<std::string> argv_s = {exe};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char *> argv;
  for (auto &s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  c.pid = ::fork();
  REQUIRE(c.pid >= 0);
  if (c.pid == 0) {
    // The child: default signal dispositions (the test runner may ignore SIGINT), files as output.
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(c.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(c.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) ::_exit(127);
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  return c;
}

// Waits up to timeout for the child to end; returns its wait status, or -1 (child killed) if it
// did not end in time.
int wait_child(pid_t pid, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool has_temporary(const TempDir &dir) {
  for (const auto &e : dir.entries())
    if (e.find(".tmp.") != std::string::npos) return true;
  return false;
}

// Polls until a temporary output file appears in dir (true) or the child ends first (false).
bool wait_for_temporary(const Child &c, const TempDir &dir, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (has_temporary(dir)) return true;
    int status = 0;
    if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
      INFO("nwc ended before writing anything; stderr: " << nwc::test::slurp(c.err));
      FAIL("nwc ended before the temporary output file appeared");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void interrupt_case(int sig) {
  TempDir out, work;
  const fs::path pipeline = write_pipeline(work, "org.nwc-test.slow", "delay_ms = 100");
  const std::vector<std::string> args = {"compress",
                                         model(),
                                         "--pipeline",
                                         pipeline.string(),
                                         "-o",
                                         (out / "m.nwc").string(),
                                         "--threads",
                                         "1",
                                         "--quiet",
                                         "--plugin-path",
                                         test_plugin_dir("slow").string()};
  Child c = spawn_nwc(args, work);
  REQUIRE(wait_for_temporary(c, out, std::chrono::seconds(300)));
  REQUIRE(::kill(c.pid, sig) == 0);
  const int status = wait_child(c.pid, std::chrono::seconds(120));
  const std::string err = nwc::test::slurp(c.err);
  INFO("signal " << sig << ", stderr: " << err);
  REQUIRE(status != -1);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + sig);
  CHECK(err.find("nwc: interrupted; no output written") != std::string::npos);
  CHECK(out.entries().empty()); // neither m.nwc nor .m.nwc.tmp.*

  // The same command now runs to completion and leaves exactly the output.
  Result r = run_nwc(args);
  INFO("rerun stderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(out.entries() == std::vector<std::string>{"m.nwc"});
}

} // namespace

TEST_CASE("SIGINT part-way through compress leaves no output and no temporary file") {
  interrupt_case(SIGINT);
}

TEST_CASE("SIGTERM part-way through compress leaves no output and no temporary file") {
  interrupt_case(SIGTERM);
}

TEST_CASE("a plugin that fails mid-run leaves no output and no temporary file, and is named") {
  TempDir out, work;
  const fs::path pipeline = write_pipeline(work, "org.nwc-test.throws");
  Result r =
      run_nwc({"compress", model(), "--pipeline", pipeline.string(), "-o", (out / "m.nwc").string(),
               "--threads", "2", "--quiet", "--plugin-path", test_plugin_dir("broken").string()});
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("plugin org.nwc-test.throws") != std::string::npos);
  CHECK(r.err.find("deliberate failure inside quantize") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(out.entries().empty());
}

TEST_CASE("SIGINT part-way through decompress leaves no output and no temporary file") {
  TempDir out, work;
  // A container of the slow quantizer decodes quickly; decompress is interrupted as soon as its
  // temporary file exists, so it may also finish first: then the output must be complete.
  Result made = run_nwc({"compress", model(), "--pipeline",
                         (nwc::test::source_dir() / "pipelines" / "rtn-4bit-g32.toml").string(),
                         "-o", (work / "m.nwc").string(), "--quiet"});
  REQUIRE(made.exit_code == 0);
  const std::vector<std::string> args = {"decompress", (work / "m.nwc").string(),
                                         "-o",         (out / "m.safetensors").string(),
                                         "--threads",  "1",
                                         "--quiet"};
  TempDir logs;
  Child c = spawn_nwc(args, logs);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  int status = 0;
  bool ended = false;
  while (std::chrono::steady_clock::now() < until) {
    if (has_temporary(out)) break;
    if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
      ended = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!ended) {
    ::kill(c.pid, SIGINT);
    status = wait_child(c.pid, std::chrono::seconds(120));
  }
  const std::string err = nwc::test::slurp(c.err);
  INFO("stderr: " << err);
  REQUIRE(status != -1);
  REQUIRE(WIFEXITED(status));
  CHECK(!has_temporary(out));
  if (WEXITSTATUS(status) == 0) {
    CHECK(out.entries() == std::vector<std::string>{"m.safetensors"});
  } else {
    CHECK(WEXITSTATUS(status) == 128 + SIGINT);
    CHECK(out.entries().empty());
  }
}
