// Tokenizer micro-benchmark, one core:
//   1. llama2.c encoding throughput of nwc's heap-based encoder on 1 MiB of tinyshakespeare, and
//      of the run.c-style quadratic reference on a prefix, with the speed-up on that prefix;
//   2. tokenizer.json: nwc encoding wiki.test.raw with the Llama 3 tokenizer (byte-level BPE,
//      regex pre-tokenizer) side by side with the JavaScript reference @huggingface/tokenizers
//      timed in the same run (Node.js, tests/unit/tokenizer/hf_reference_encode.mjs), and checks
//      that the ids agree. Skipped with a note when node or the reference cache is missing.
// Prints figures only.
//
//   nwc_tokenizer_bench [data_dir] [naive_prefix_bytes] [references_dir]
//   (data_dir defaults to $NWC_DATA, then the build's shared data; the prefix to 16384: the
//   reference is quadratic, 65536 bytes take about 100 s; references_dir to $NWC_REFERENCES, then
//   the source tree's .cache/references)
#include "naive_bpe.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
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

std::string read_file(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs a command, returns its standard output ("" if it failed).
std::string capture(const std::string &cmd) {
  std::unique_ptr<FILE, int (*)(FILE *)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) return {};
  std::string out;
  std::array<char, 65536> buf;
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), p.get())) > 0;)
    out.append(buf.data(), n);
  return out;
}

std::vector<int32_t> parse_ids(const std::string &line) {
  std::vector<int32_t> ids;
  int64_t v = 0;
  bool in_num = false;
  for (char c : line) {
    if (c >= '0' && c <= '9') {
      v = v * 10 + (c - '0');
      in_num = true;
    } else if (in_num) {
      ids.push_back(static_cast<int32_t>(v));
      v = 0;
      in_num = false;
    }
  }
  return ids;
}

// Section 2: returns false on a mismatch.
bool bench_llama3(const std::filesystem::path &data, const std::filesystem::path &refs) {
  const auto json = refs / "lenml" / "tokenizer-llama3" / "models" / "tokenizer.json";
  const auto lib = refs / "huggingface" / "tokenizers" / "dist" / "tokenizers.mjs";
  const auto text_path = data / "text" / "wiki.test.raw";
  if (!std::filesystem::exists(json) || !std::filesystem::exists(lib)) {
    std::printf("tokenizer.json: skipped, no reference cache at %s (scripts/fetch-references.sh)\n",
                refs.string().c_str());
    return true;
  }
  const std::string text = read_file(text_path);
  const auto t0 = std::chrono::steady_clock::now();
  const auto tok = nwc::runtime::load_tokenizer(json);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\ntokenizer %s (loaded in %.2f s), text %s\n", json.string().c_str(), load_s,
              text_path.string().c_str());
  std::vector<int32_t> ours;
  const Timing t = time_best(3, [&] {
    ours = tok->encode(text, false, false);
    return ours.size();
  });
  report("nwc, Llama 3", text.size(), t);
  const std::string script =
      std::string(NWC_BENCH_SOURCE_DIR) + "/tests/unit/tokenizer/hf_reference_encode.mjs";
  const std::string base = "node '" + script + "' '" + lib.string() + "' '" + json.string() + "' ";
  const std::string timing = capture(base + "--time --repeat 3 '" + text_path.string() + "'");
  const std::string ids = capture(base + "'" + text_path.string() + "'");
  const size_t at = timing.find("\"seconds\":");
  if (timing.empty() || ids.empty() || at == std::string::npos) {
    std::printf("reference: skipped (node failed or is missing)\n");
    return true;
  }
  const Timing ref{std::strtod(timing.c_str() + at + 10, nullptr), parse_ids(ids).size()};
  report("@huggingface/tokenizers (JS)", text.size(), ref);
  std::printf("nwc / reference speed: %.1fx\n", ref.seconds / t.seconds);
  if (parse_ids(ids) != ours) {
    std::fprintf(stderr, "MISMATCH: nwc and the reference disagree on %s\n",
                 text_path.string().c_str());
    return false;
  }
  std::printf("ids equal (%zu tokens)\n", ours.size());
  return true;
}

} // namespace

int main(int argc, char **argv) {
  std::filesystem::path data = NWC_BENCH_DATA_DIR;
  if (const char *env = std::getenv("NWC_DATA"); env && *env) data = env;
  if (argc > 1) data = argv[1];
  const size_t naive_bytes = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 16384;
  std::filesystem::path refs = std::string(NWC_BENCH_SOURCE_DIR) + "/.cache/references";
  if (const char *env = std::getenv("NWC_REFERENCES"); env && *env) refs = env;
  if (argc > 3) refs = argv[3];

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
    if (!bench_llama3(data, refs)) return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
