// Runs the built `nwc` executable as a child process and captures its exit code and output.
#pragma once

#include "test_support.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace nwc::test {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

inline std::string quote(const std::string &s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline std::string slurp(const std::filesystem::path &p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `nwc ARGS` with the build tree's plugins (install-relative discovery).
inline Result run_nwc(const std::vector<std::string> &args, const std::string &env = "") {
  static int counter = 0;
  std::filesystem::path dir = std::filesystem::temp_directory_path();
  std::string tag = std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::filesystem::path out = dir / ("nwc-cli-out-" + tag), err = dir / ("nwc-cli-err-" + tag);
  std::string cmd = env + " " + quote((binary_dir() / "bin" / "nwc").string());
  for (const auto &a : args) cmd += " " + quote(a);
  cmd += " >" + quote(out.string()) + " 2>" + quote(err.string()) + " </dev/null";
  int st = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

} // namespace nwc::test
