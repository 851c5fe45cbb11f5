// Tokenizer micro-benchmark: llama2.c encoding throughput of nwc's heap-based encoder on 1 MiB of
// tinyshakespeare, and of the run.c-style quadratic reference on a prefix, with the speed-up on
// that prefix. Prints figures only.
//
//   nwc_tokenizer_bench [data_dir] [naive_prefix_bytes]
//   (data_dir defaults to $NWC_DATA, then the build's shared data; the prefix to 16384: the
//   reference is quadratic, 65536 bytes take about 100 s)
#include "naive_bpe.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace {

struct Timing {
  double seconds;
  size_t tokens;
};

// Best of `reps` runs, so that a busy shared machine disturbs the figure less.
template <typename F> Timing time_best(int reps, F &&encode) {
  Timing best{1e30, 0};
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const size_t tokens = encode();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best.seconds) best = {s, tokens};
  }
  return best;
}

void report(const char *what, size_t bytes, const Timing &t) {
  std::printf("%-28s %9zu bytes %8zu tokens %9.4f s %8.3f MB/s %11.0f tokens/s\n", what, bytes,
              t.tokens, t.seconds, static_cast<double>(bytes) / 1e6 / t.seconds,
              static_cast<double>(t.tokens) / t.seconds);
}

} // namespace

int main(int argc, char **argv) {
  std::filesystem::path data = NWC_BENCH_DATA_DIR;
  if (const char *env = std::getenv("NWC_DATA"); env && *env) data = env;
  if (argc > 1) data = argv[1];
  const size_t naive_bytes = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 16384;

  const auto tok_path = data / "models" / "stories260K" / "tok512.bin";
  const auto text_path = data / "text" / "tinyshakespeare.txt";
  std::ifstream in(text_path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() < (1u << 20)) {
    std::fprintf(stderr, "%s: expected at least 1 MiB of text\n", text_path.string().c_str());
    return 1;
  }
  text.resize(1u << 20);
  const std::string prefix = text.substr(0, std::min(naive_bytes, text.size()));

  try {
    const auto tok = nwc::runtime::load_tokenizer(tok_path);
    const nwc::test::NaiveBpe naive(tok_path);
    std::printf("tokenizer %s, text %s\n", tok_path.string().c_str(), text_path.string().c_str());

    const Timing fast_full = time_best(3, [&] { return tok->encode(text, true, false).size(); });
    report("fast, 1 MiB", text.size(), fast_full);
    const Timing fast_prefix =
        time_best(5, [&] { return tok->encode(prefix, true, false).size(); });
    report("fast, prefix", prefix.size(), fast_prefix);
    std::vector<int32_t> naive_ids;
    const Timing naive_prefix = time_best(1, [&] {
      naive_ids = naive.encode(prefix, true, false);
      return naive_ids.size();
    });
    report("naive (run.c loop), prefix", prefix.size(), naive_prefix);
    if (tok->encode(prefix, true, false) != naive_ids) {
      std::fprintf(stderr, "MISMATCH: fast and naive encoders disagree on the prefix\n");
      return 1;
    }
    std::printf("speed-up on the %zu-byte prefix: %.1fx\n", prefix.size(),
                naive_prefix.seconds / fast_prefix.seconds);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
