// MappedFile and AtomicFile: errors name the path, output appears only on commit, temporaries are
// removed on every path.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace nwc;
using nwc::test::TempDir;

namespace {

// The names in dir that are temporaries of target `name`.
std::vector<std::string> temporaries(const TempDir &dir, const std::string &name) {
  std::vector<std::string> out;
  for (const auto &e : dir.entries())
    if (e.rfind("." + name + ".tmp.", 0) == 0) out.push_back(e);
  std::sort(out.begin(), out.end());
  return out;
}

// A child that starts writing `target` and dies without cleaning up: _exit() (no destructors) or
// abort(), as a crashing plugin would. Returns its pid once it is gone (and reaped).
pid_t die_while_writing(const std::filesystem::path &target, bool abort_it, int &status) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    AtomicFile f(target);
    f.write("partial", 7);
    if (abort_it) {
      std::signal(SIGABRT, SIG_DFL);
      std::abort();
    }
    ::_exit(0);
  }
  REQUIRE(pid > 0);
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return pid;
}

// The host part of this process's temporary names (".NAME.tmp.HOST.PID.N").
std::string host_of(const std::string &temporary, const std::string &name) {
  const std::string rest = temporary.substr(name.size() + 6); // past ".NAME.tmp."
  const std::string tail = "." + std::to_string(::getpid()) + ".";
  return rest.substr(0, rest.rfind(tail));
}

} // namespace

TEST_CASE("MappedFile maps a file and reports bad paths") {
  TempDir dir;
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5};
  nwc::test::write_bytes(dir / "a.bin", bytes);
  {
    MappedFile f(dir / "a.bin");
    REQUIRE(f.size() == 5);
    CHECK(std::equal(bytes.begin(), bytes.end(), f.data()));
    CHECK(f.path() == dir / "a.bin");
  }
  nwc::test::write_bytes(dir / "empty", nullptr, 0);
  {
    MappedFile f(dir / "empty");
    CHECK(f.size() == 0);
  }
  try {
    MappedFile f(dir / "missing.bin");
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()) == (dir / "missing.bin").string() + ": no such file or directory");
  }
  try {
    MappedFile f(dir.path());
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()).find("is a directory") != std::string::npos);
  }
}

TEST_CASE("AtomicFile writes, overwrites and commits") {
  TempDir dir;
  const auto target = dir / "out.bin";
  {
    AtomicFile f(target);
    CHECK(f.temporary().parent_path() == dir.path());
    CHECK(f.temporary().filename().string().rfind(".out.bin.tmp.", 0) == 0);
    CHECK(std::filesystem::exists(f.temporary()));
    CHECK_FALSE(std::filesystem::exists(target));
    f.write("hello world", 11);
    CHECK(f.size() == 11);
    f.write_at(6, "WORLD", 5);
    CHECK_THROWS_AS(f.write_at(8, "xyzw", 4), Error); // past the written bytes
    f.commit();
  }
  const auto got = nwc::test::read_bytes(target);
  CHECK(std::string(got.begin(), got.end()) == "hello WORLD");
  CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
}

TEST_CASE("AtomicFile destroyed without commit leaves nothing and keeps the old target") {
  TempDir dir;
  const auto target = dir / "keep.txt";
  nwc::test::write_bytes(target, "old", 3);
  {
    AtomicFile f(target);
    f.write("new content", 11);
  }
  CHECK(dir.entries() == std::vector<std::string>{"keep.txt"});
  const auto got = nwc::test::read_bytes(target);
  CHECK(std::string(got.begin(), got.end()) == "old");
}

TEST_CASE("remove_pending_temporaries unlinks live temporaries only") {
  TempDir dir;
  AtomicFile a(dir / "a");
  AtomicFile b(dir / "b");
  {
    AtomicFile done(dir / "done");
    done.write("x", 1);
    done.commit();
  }
  CHECK(dir.entries().size() == 3);
  remove_pending_temporaries();
  CHECK(dir.entries() == std::vector<std::string>{"done"});
}

TEST_CASE("AtomicFile in a missing directory names the path") {
  TempDir dir;
  const auto target = dir / "no" / "such" / "out.bin";
  try {
    AtomicFile f(target);
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()).rfind(target.string() + ":", 0) == 0);
  }
}

TEST_CASE(
    "a writer that dies leaves its temporary, and the next AtomicFile of the output removes it") {
  for (bool abort_it : {false, true}) {
    INFO((abort_it ? "abort()" : "_exit()"));
    TempDir dir;
    int status = 0;
    const pid_t pid = die_while_writing(dir / "out.bin", abort_it, status);
    if (abort_it)
      CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT));
    else
      CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    const auto left = temporaries(dir, "out.bin");
    REQUIRE(left.size() == 1);
    CHECK(left[0].find("." + std::to_string(pid) + ".") != std::string::npos); // names its writer
    {
      AtomicFile f(dir / "out.bin");
      CHECK(temporaries(dir, "out.bin") ==
            std::vector<std::string>{f.temporary().filename().string()});
      f.write("complete", 8);
      f.commit();
    }
    CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
  }
}

TEST_CASE("temporaries of live writers, of other outputs and of other hosts are kept") {
  TempDir dir;
  // A live writer in another process, holding its temporary.
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t live = ::fork();
  if (live == 0) {
    AtomicFile f(dir / "out.bin");
    f.write("x", 1);
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  REQUIRE(live > 0);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  ::close(ready[0]);
  ::close(ready[1]);
  const auto live_tmp = temporaries(dir, "out.bin");
  REQUIRE(live_tmp.size() == 1);

  // A live writer in this process.
  AtomicFile mine(dir / "out.bin");
  const std::string host = host_of(mine.temporary().filename().string(), "out.bin");
  REQUIRE_FALSE(host.empty());

  // Leftovers: a process that is gone, this process's pid without a lock (a run before a restart
  // that reused it), another host, another output, the old name without a host.
  int status = 0;
  const pid_t gone = die_while_writing(dir / "scratch.bin", false, status);
  const std::string dead = std::to_string(gone), self = std::to_string(::getpid());
  const std::vector<std::string> stale = {".out.bin.tmp." + host + "." + dead + ".7",
                                          ".out.bin.tmp." + host + "." + self + ".999"};
  const std::vector<std::string> kept = {".out.bin.tmp.other-host." + dead + ".0",
                                         ".other.bin.tmp." + host + "." + dead + ".0",
                                         ".out.bin.tmp." + dead + ".0"};
  for (const auto &n : stale) nwc::test::write_bytes(dir / n, "s", 1);
  for (const auto &n : kept) nwc::test::write_bytes(dir / n, "k", 1);

  {
    AtomicFile next(dir / "out.bin");
    const auto names = dir.entries();
    auto has = [&](const std::string &n) {
      return std::find(names.begin(), names.end(), n) != names.end();
    };
    for (const auto &n : stale) CHECK_MESSAGE(!has(n), n);
    for (const auto &n : kept) CHECK_MESSAGE(has(n), n);
    CHECK(has(live_tmp[0]));
    CHECK(has(mine.temporary().filename().string()));
  }

  // Once the other writer is killed, its temporary is stale too.
  ::kill(live, SIGKILL);
  REQUIRE(::waitpid(live, &status, 0) == live);
  { AtomicFile again(dir / "out.bin"); }
  const auto names = dir.entries();
  CHECK(std::find(names.begin(), names.end(), live_tmp[0]) == names.end());
  CHECK(std::find(names.begin(), names.end(), mine.temporary().filename().string()) != names.end());
}
