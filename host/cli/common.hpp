// What the commands of `nwc` share: the common options, argument parsing and usage errors, plugin
// discovery, progress lines, number formatting and JSON output. Exit codes: 0 success, 1 runtime
// failure, 2 usage error (a UsageError reaching main); every error is one line on stderr.
#pragma once

#include "nwc/formats/dtype.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/registry.hpp"

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace nwc::cli {

namespace po = boost::program_options;
using nlohmann::json;

inline constexpr const char *kVersion = "0.1.0";

// A command line that cannot run: main prints "nwc: usage error: <what>" and exits with 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The options every command takes (`add_common`).
struct Common {
  std::vector<std::string> plugin_paths;
  bool no_default_plugin_path = false;
  bool json = false;
  bool quiet = false;
  unsigned threads = 0;
};

void add_common(po::options_description &d, Common &c);

// Parses a command's arguments. `positional` names the positional arguments in order; a name
// ending in "..." takes every remaining one. --help prints "usage: USAGE" and the options, then
// exits with 0; a malformed command line is a UsageError that ends with " (usage: USAGE)".
po::variables_map parse(const std::vector<std::string> &args, po::options_description &desc,
                        const std::vector<std::string> &positional, std::string_view usage);

// The installed plugins (--plugin-path, NWC_PLUGIN_PATH, the install-relative directory); sets
// the log level from --quiet.
host::Registry load_registry(const Common &c);

// Progress on a terminal: "LABEL tensor i of N  rate  ETA  name", rewritten in place on stderr.
// Does nothing when disabled or when stderr is not a terminal.
class Progress {
public:
  Progress(bool on, std::string label);
  void operator()(size_t done, size_t total, const std::string &name);

private:
  bool enabled_;
  std::string label_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

double seconds_since(std::chrono::steady_clock::time_point start);

std::string shape_str(const std::vector<int64_t> &shape); // "[64, 172]"
std::string fmt(double v, int precision);                 // fixed-point
std::string sci(double v);                                // scientific, 3 digits

// Writes j indented by two spaces and a newline to stdout (the --json output of every command).
void print_json(const json &j);

// A model file, or a .nwc container decoded through the installed plugins (by its magic bytes).
Model open_model(const std::string &path, const host::Registry &reg, unsigned threads);

// --dtype of written tensors: F32, F16 or BF16 (any case); anything else is a UsageError.
DType parse_output_dtype(std::string name);

} // namespace nwc::cli
