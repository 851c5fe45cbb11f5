// Replays files through a fuzz target without libFuzzer: the normal (gcc) build links each target
// with this main so that CTest runs the committed regression corpus and the seed corpus.
//
//   fuzz_X_replay PATH...   each PATH a file or a directory (its regular files, in name order);
//                           a missing PATH is skipped with a note, so optional seeds may be absent.
// Exits 0 when every input ran to completion (a crash or sanitizer report ends the process).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace {

std::vector<uint8_t> read_file(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

} // namespace

int main(int argc, char **argv) {
  size_t runs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg = argv[i];
    std::error_code ec;
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(arg, ec)) {
      for (const auto &e : std::filesystem::directory_iterator(arg, ec))
        if (e.is_regular_file(ec)) files.push_back(e.path());
      std::sort(files.begin(), files.end());
    } else if (std::filesystem::is_regular_file(arg, ec)) {
      files.push_back(arg);
    } else {
      std::printf("skipped (missing): %s\n", arg.c_str());
      continue;
    }
    for (const auto &f : files) {
      std::printf("replay %s\n", f.c_str());
      std::fflush(stdout);
      const std::vector<uint8_t> bytes = read_file(f);
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      ++runs;
    }
  }
  std::printf("%zu inputs replayed\n", runs);
  return 0;
}
