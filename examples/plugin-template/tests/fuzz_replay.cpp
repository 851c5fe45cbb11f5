// Runs LLVMFuzzerTestOneInput on files and on every file of directories given as arguments, without
// libFuzzer: the fuzz target's corpus as a regression test under any compiler.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
  namespace fs = std::filesystem;
  int inputs = 0;
  auto replay = [&](const fs::path &p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    ++inputs;
  };
  for (int i = 1; i < argc; ++i) {
    const fs::path arg(argv[i]);
    if (fs::is_directory(arg)) {
      for (const auto &e : fs::directory_iterator(arg))
        if (e.is_regular_file()) replay(e.path());
    } else if (fs::is_regular_file(arg)) {
      replay(arg);
    } else {
      std::fprintf(stderr, "fuzz_replay: %s: no such file or directory\n", argv[i]);
      return 2;
    }
  }
  if (inputs == 0) {
    std::fprintf(stderr, "fuzz_replay: no inputs\n");
    return 2;
  }
  std::printf("fuzz_replay: %d inputs ran\n", inputs);
  return 0;
}
