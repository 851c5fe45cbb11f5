#include "common.hpp"

#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <unistd.h>

namespace nwc::cli {

void add_common(po::options_description &d, Common &c) {
  d.add_options()("plugin-path", po::value(&c.plugin_paths)->composing(),
                  "directory to search for plugins first (repeatable)")(
      "no-default-plugin-path", po::bool_switch(&c.no_default_plugin_path),
      "search only --plugin-path and NWC_PLUGIN_PATH")("json", po::bool_switch(&c.json),
                                                       "machine-readable JSON on stdout")(
      "quiet,q", po::bool_switch(&c.quiet),
      "no progress, no warnings")("threads", po::value(&c.threads)->default_value(0),
                                  "worker threads (0 = all cores)")("help,h", "show this help");
}

po::variables_map parse(const std::vector<std::string> &args, po::options_description &desc,
                        const std::vector<std::string> &positional, std::string_view usage) {
  po::positional_options_description pos;
  for (const auto &p : positional) {
    const bool rest = p.size() > 3 && p.compare(p.size() - 3, 3, "...") == 0;
    pos.add(rest ? p.substr(0, p.size() - 3).c_str() : p.c_str(), rest ? -1 : 1);
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << desc << "\n";
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error &e) {
    throw UsageError(std::string(e.what()) + " (usage: " + std::string(usage) + ")");
  }
  return vm;
}

host::Registry load_registry(const Common &c) {
  host::set_log_level(c.quiet ? NWC_LOG_ERROR : NWC_LOG_WARNING);
  std::vector<std::filesystem::path> cli(c.plugin_paths.begin(), c.plugin_paths.end());
  host::Registry reg;
  reg.scan(host::Registry::search_path(cli, !c.no_default_plugin_path));
  return reg;
}

Progress::Progress(bool on, std::string label)
    : enabled_(on && isatty(STDERR_FILENO)), label_(std::move(label)) {}

void Progress::operator()(size_t done, size_t total, const std::string &name) {
  if (!enabled_) return;
  double secs = seconds_since(start_);
  double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0;
  std::fprintf(stderr, "\r\033[K%s tensor %zu of %zu  %.1f tensors/s  ETA %.0fs  %s",
               label_.c_str(), done, total, rate, eta, name.c_str());
  if (done == total) std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string shape_str(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string fmt(double v, int precision) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(precision) << v;
  return o.str();
}

std::string sci(double v) {
  std::ostringstream o;
  o << std::scientific << std::setprecision(3) << v;
  return o.str();
}

void print_json(const json &j) {
  std::cout << j.dump(2) << "\n";
}

Model open_model(const std::string &path, const host::Registry &reg, unsigned threads) {
  static const unsigned char magic[8] = {0x89, 'N', 'W', 'C', '\r', '\n', 0x1a, '\n'};
  unsigned char head[8] = {};
  if (FILE *f = std::fopen(path.c_str(), "rb")) {
    size_t got = std::fread(head, 1, 8, f);
    std::fclose(f);
    if (got == 8 && std::memcmp(head, magic, 8) == 0)
      return host::open_container_model(path, reg, threads);
  }
  return load_model(path);
}

DType parse_output_dtype(std::string name) {
  for (auto &ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  DType dtype;
  if (!dtype_from_name(name, dtype) ||
      (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16))
    throw UsageError("--dtype: expected F32, F16 or BF16, got '" + name + "'");
  return dtype;
}

} // namespace nwc::cli
