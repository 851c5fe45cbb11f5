// Helpers shared by the test suite: where the shared data and built plugins are, and scratch
// directories that clean up after themselves.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace nwc::test {

// ../shared/data, or $NWC_DATA. A missing directory is a test failure with a clear message.
inline std::filesystem::path data_dir() {
  const char *env = std::getenv("NWC_DATA");
  std::filesystem::path p = env && *env ? env : NWC_TEST_DATA_DIR;
  if (!std::filesystem::is_directory(p))
    throw std::runtime_error("shared data directory not found: " + p.string() +
                             " (set NWC_DATA to the directory holding models/ and text/)");
  return p;
}
inline std::filesystem::path stories260k() {
  return data_dir() / "models" / "stories260K" / "stories260K.bin";
}
// The reference implementations fetched by scripts/fetch-references.sh (.cache/references), or
// $NWC_REFERENCES; `package` is a path under it such as "node-llama-cpp/linux-x64". Missing is a
// test failure naming the script that fetches it.
inline std::filesystem::path reference_dir(const std::string &package) {
  const char *env = std::getenv("NWC_REFERENCES");
  std::filesystem::path p = env && *env ? env : NWC_TEST_REFERENCES_DIR;
  p /= package;
  if (!std::filesystem::is_directory(p))
    throw std::runtime_error("reference package not found: " + p.string() +
                             " (run scripts/fetch-references.sh, or set NWC_REFERENCES)");
  return p;
}
inline std::filesystem::path source_dir() {
  return NWC_TEST_SOURCE_DIR;
}
inline std::filesystem::path binary_dir() {
  return NWC_TEST_BINARY_DIR;
}
inline std::filesystem::path plugin_dir() {
  return NWC_TEST_PLUGIN_DIR;
}

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
public:
  TempDir() {
    std::random_device rd;
    auto base = std::filesystem::temp_directory_path();
    for (int i = 0; i < 100; ++i) {
      path_ = base / ("nwc-test-" + std::to_string(rd()));
      if (std::filesystem::create_directory(path_)) return;
    }
    throw std::runtime_error("cannot create a temporary directory");
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  const std::filesystem::path &path() const { return path_; }
  std::filesystem::path operator/(const std::string &name) const { return path_ / name; }
  // Names of the entries in the directory (to check that nothing half-written is left).
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (auto &e : std::filesystem::directory_iterator(path_)) out.push_back(e.path().filename());
    return out;
  }

private:
  std::filesystem::path path_;
};

inline std::vector<uint8_t> read_bytes(const std::filesystem::path &p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}
inline void write_bytes(const std::filesystem::path &p, const void *data, size_t n) {
  std::ofstream f(p, std::ios::binary);
  f.write(static_cast<const char *>(data), static_cast<std::streamsize>(n));
}
inline void write_bytes(const std::filesystem::path &p, const std::vector<uint8_t> &b) {
  write_bytes(p, b.data(), b.size());
}

} // namespace nwc::test
