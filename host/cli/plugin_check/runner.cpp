// The parent side of `nwc plugins check`: starts the child for one plugin, reads its report (with
// a timeout), and turns the report and the child's wait status into a CheckResult.
#include "plugin_check.hpp"

#include "nwc/cpp/error.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace nwc::cli {

namespace {

std::string signal_name(int sig) {
  if (const char *abbrev = sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

struct Child {
  pid_t pid = 0;
  int out = -1; // the read end of its stdout
};

// Starts this executable as `nwc __plugin-check-child [ID] ARGS...` with stdout into a pipe.
Child spawn_child(const std::string &id, const std::vector<std::string> &child_args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail(NWC_E_IO, std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> argv_s = {"nwc", kPluginCheckChild};
  if (!id.empty()) argv_s.push_back(id);
  argv_s.insert(argv_s.end(), child_args.begin(), child_args.end());
  std::vector<char *> argv;
  for (auto &s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  Child c;
  const int err = posix_spawn(&c.pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (err != 0) {
    ::close(fds[0]);
    fail(NWC_E_IO, std::string("cannot start the check process: ") + std::strerror(err));
  }
  c.out = fds[0];
  return c;
}

// Reads the child's output until it closes it; kills the child after timeout_s (0 = no limit).
// Returns whether it was killed.
bool read_report(const Child &c, double timeout_s, std::string &buf) {
  const auto start = std::chrono::steady_clock::now();
  bool timed_out = false;
  for (;;) {
    pollfd pfd{c.out, POLLIN, 0};
    const int pr = ::poll(&pfd, 1, 200);
    if (pr < 0 && errno != EINTR) break;
    if (pr > 0) {
      char chunk[4096];
      const ssize_t n = ::read(c.out, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break; // EOF: the child exited (or closed stdout)
      buf.append(chunk, static_cast<size_t>(n));
    }
    if (timeout_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >
            timeout_s) {
      timed_out = true;
      ::kill(c.pid, SIGKILL);
      break;
    }
  }
  ::close(c.out);
  return timed_out;
}

// Fills r from the report lines; returns the step that was announced and did not finish.
std::string parse_report(const std::string &buf, CheckResult &r) {
  std::istringstream in(buf);
  std::string line, current;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    const std::string event = line.substr(0, sp);
    std::string rest = line.substr(sp + 1), msg;
    if (const auto tab = rest.find('\t'); tab != std::string::npos) {
      msg = rest.substr(tab + 1);
      rest = rest.substr(0, tab);
    }
    if (event == "step") {
      current = rest;
    } else if (event == "pass" || event == "fail") {
      r.steps.push_back({rest, event, msg});
      if (event == "fail" && r.failure.empty())
        r.failure =
            msg.rfind("plugin ", 0) == 0 ? msg : "plugin " + r.id + ": " + rest + ": " + msg;
      current.clear();
    } else if (event == "info") {
      if (rest == "kind") r.kind = msg;
      if (rest == "version") r.version = msg;
      if (rest == "library") r.library = msg;
      if (rest == "id") r.ids.push_back(msg);
    }
  }
  return current;
}

} // namespace

CheckResult run_plugin_check(const std::string &id, const std::vector<std::string> &child_args,
                             double timeout_s) {
  CheckResult r;
  r.id = id;
  const Child child = spawn_child(id, child_args);
  std::string buf;
  const bool timed_out = read_report(child, timeout_s, buf);
  int status = 0;
  while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  const std::string current = parse_report(buf, r);
  const std::string where = current.empty() ? "" : " while " + current;
  std::string died;
  if (timed_out)
    died = "plugin " + id + " did not finish within " +
           std::to_string(static_cast<int>(timeout_s)) + " s" + where + " (killed)";
  else if (WIFSIGNALED(status))
    died = "plugin " + id + " crashed with " + signal_name(WTERMSIG(status)) + where;
  else if (WIFEXITED(status) && WEXITSTATUS(status) != 0 && r.failure.empty())
    died = "plugin " + id + ": the check process exited with status " +
           std::to_string(WEXITSTATUS(status)) + where;
  if (!died.empty()) {
    if (!current.empty()) r.steps.push_back({current, "fail", died});
    r.failure = died;
  }
  r.passed = r.failure.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!r.passed && r.failure.empty()) r.failure = "plugin " + id + ": check failed";
  return r;
}

} // namespace nwc::cli
