// Shared helpers of the fuzz targets (tests/fuzz/*.cpp): a per-process scratch file for readers
// that take a path, the location of the built plugins and shipped codecs, and work caps.
//
// Each target defines LLVMFuzzerTestOneInput. Built with -DNWC_FUZZ=ON (clang) it links libFuzzer;
// in every normal build it links replay_main.cpp and replays the committed regression corpus and
// the seed corpus under CTest. A target catches nwc::Error (the readers' documented way to refuse
// an input); anything else escaping (another exception type, a crash, a sanitizer report, a leak,
// an allocation far beyond the input size) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace nwc::fuzz {

// Work caps per input: tensors larger than this are validated but not loaded / decoded.
inline constexpr uint64_t kMaxLoadElements = uint64_t{1} << 20;
// Symbols decoded per entropy-coder input.
inline constexpr int64_t kMaxSymbols = int64_t{1} << 16;

// A file that holds the current input, reused for every input of the process and removed at exit.
// The extension matters to readers that dispatch on it (".safetensors", ".gguf", ".bin", ".nwc").
class ScratchFile {
public:
  explicit ScratchFile(const std::string &extension) {
    std::filesystem::path dir = "/dev/shm";
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) dir = std::filesystem::temp_directory_path();
    path_ = dir / ("nwc-fuzz-" + std::to_string(::getpid()) + extension);
  }
  ~ScratchFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  ScratchFile(const ScratchFile &) = delete;
  ScratchFile &operator=(const ScratchFile &) = delete;

  // Replaces the file's content with the input; returns its path.
  const std::filesystem::path &write(const uint8_t *data, size_t size) {
    FILE *f = std::fopen(path_.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    if (std::fclose(f) != 0) std::abort();
    return path_;
  }
  const std::filesystem::path &path() const { return path_; }

private:
  std::filesystem::path path_;
};

// The built plugins (the registry scans this directory): NWC_FUZZ_PLUGIN_DIR overrides the
// compiled-in build-tree location.
inline std::filesystem::path plugin_dir() {
  const char *env = std::getenv("NWC_FUZZ_PLUGIN_DIR");
  return env && *env ? std::filesystem::path(env)
                     : std::filesystem::path(NWC_FUZZ_PLUGIN_DIR_DEFAULT);
}

// A shipped codec with a prior per quality level (codecs/nwc-t-l300.nwcc), or NWC_FUZZ_CODEC.
inline std::filesystem::path codec_file() {
  const char *env = std::getenv("NWC_FUZZ_CODEC");
  if (env && *env) return env;
  return std::filesystem::path(NWC_FUZZ_SOURCE_DIR) / "codecs" / "nwc-t-l300.nwcc";
}

// With NWC_FUZZ_VERBOSE set, prints why an input was refused (to check that seeds get deep).
inline void note(const char *why) {
  static const bool verbose = std::getenv("NWC_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "refused: %s\n", why);
}

// Little-endian reads from the front of the input, advancing it; 0 past the end.
struct Input {
  const uint8_t *data;
  size_t size;
  uint64_t take(size_t bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) {
      const uint64_t b = i < size ? data[i] : 0;
      v |= b << (8 * i);
    }
    const size_t used = bytes < size ? bytes : size;
    data += used;
    size -= used;
    return v;
  }
};

} // namespace nwc::fuzz
