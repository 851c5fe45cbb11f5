// Decode throughput of the shipped methods on one Llama-3-8B decoder block, side by side in one run
// with two references on the same fp16 weights: memcpy of their bytes (the bound of reading them)
// and ZSTD_decompress of their zstd frames (a lossless codec's decode speed).
//
//   nwc_decode_throughput [--small] [--repeat N] [--threads T] [--methods a,b,...]
//                         [--pipeline P.toml]... [--gptq-max-cols C] [--tmp DIR]
//
// The model lives in memory: the seven linears of one decoder block (q/o 4096x4096, k/v 1024x4096,
// gate/up 14336x4096, down 4096x14336; --small divides every dimension by 8), fp16 values from a
// deterministic generator with heavy tails, per-row scale spread and a few outlier input columns.
// Each method compresses it with nwc::host::compress_model, then every coded tensor is decoded
// with ContainerDecoder::decode_tensor (a fresh float32 tensor per call, as a model loader gets it)
// on 1 and T threads, best of N runs (alternating between the thread counts). Throughput is counted
// in weights per second and in GB/s of fp16 output (2 bytes per weight); the references move the
// same fp16 bytes, their parts (memcpy) or 4 MiB frames (zstd, level 3) spread over the T threads.
// --pipeline adds a pipeline file of one's own (no Hessians; paths relative to the file) to the
// same run, named by its file stem.
// Every run's decoded values are hashed (outside the timed calls) to show that 1 and T threads give
// the same bits; the hash of each method is printed so that builds can be compared. Prints a
// Markdown table; asserts nothing.
//
// GPTQ (act order, synthetic SPD Hessians X^T X / m of activations with outlier channels) codes
// only tensors with at most --gptq-max-cols columns: by default every tensor with --small and the
// six 4096-column ones at full size (down_proj's 14336-column Hessian alone takes minutes to factor
// and invert on a small machine; --gptq-max-cols 0 leaves GPTQ out). GPTQ decodes through the same
// stages as RTN (group chunker, uniform quantizer, rANS).
#include "nwc/formats/container.hpp"
#include "nwc/formats/dtype.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>
#include <zstd.h>

namespace fs = std::filesystem;
using namespace nwc;
using namespace nwc::host;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- deterministic generator --------------------------------------------------------------------

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() { // splitmix64
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>((next() >> 11) + 1) * 0x1p-53; } // (0, 1]
  // Two independent standard normals (Box-Muller).
  std::pair<double, double> normals() {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double a = 6.283185307179586 * uniform();
    return {r * std::cos(a), r * std::sin(a)};
  }
};

struct Linear {
  std::string name;
  int64_t rows, cols;
  int input; // which activation the linear reads (linears with the same input share a Hessian)
};

// Heavy-tailed weights: a Gaussian scale mixture z * exp(0.45 u) (excess kurtosis ~ 3), each row
// scaled by a log-normal factor (spread ~ x1.3), and ~0.2% of the input columns (at least 2)
// multiplied by 5..10, as the outlier features of trained LLMs. Rounded to fp16.
std::vector<uint16_t> make_weights(const Linear &l, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> row_scale(static_cast<size_t>(l.rows)),
      col_scale(static_cast<size_t>(l.cols));
  const double base = 1.0 / std::sqrt(static_cast<double>(l.cols)) * 1.2;
  for (auto &s : row_scale) s = base * std::exp(0.25 * rng.normals().first);
  std::fill(col_scale.begin(), col_scale.end(), 1.0);
  const int64_t outliers = std::max<int64_t>(2, l.cols / 500);
  for (int64_t k = 0; k < outliers; ++k)
    col_scale[static_cast<size_t>(rng.next() % static_cast<uint64_t>(l.cols))] =
        5.0 + 5.0 * rng.uniform();
  std::vector<uint16_t> out(static_cast<size_t>(l.rows * l.cols));
  for (int64_t r = 0; r < l.rows; ++r)
    for (int64_t c = 0; c < l.cols; ++c) {
      const auto [z, u] = rng.normals();
      const double v = z * std::exp(0.45 * u) * row_scale[static_cast<size_t>(r)] *
                       col_scale[static_cast<size_t>(c)];
      out[static_cast<size_t>(r * l.cols + c)] = f32_to_f16(static_cast<float>(v));
    }
  return out;
}

// H = X^T X / m + 0.01 mean(diag) I for m activations x with unit-normal channels, 0.5% of them
// (at least 2) scaled by 20: symmetric positive definite, with the outlier channels of real LLM
// activations.
std::vector<float> make_hessian(int64_t n, uint64_t seed) {
  Rng rng(seed);
  const int64_t m = std::min<int64_t>(512, 2 * n);
  std::vector<double> chan(static_cast<size_t>(n), 1.0);
  for (int64_t k = 0; k < std::max<int64_t>(2, n / 200); ++k)
    chan[static_cast<size_t>(rng.next() % static_cast<uint64_t>(n))] = 20.0;
  std::vector<float> x(static_cast<size_t>(n));
  std::vector<double> h(static_cast<size_t>(n * n), 0.0);
  for (int64_t s = 0; s < m; ++s) {
    for (int64_t i = 0; i < n; ++i)
      x[static_cast<size_t>(i)] =
          static_cast<float>(rng.normals().first * chan[static_cast<size_t>(i)]);
    for (int64_t i = 0; i < n; ++i) {
      const double xi = x[static_cast<size_t>(i)];
      double *hr = h.data() + i * n;
      for (int64_t j = i; j < n; ++j) hr[j] += xi * x[static_cast<size_t>(j)];
    }
  }
  double trace = 0;
  for (int64_t i = 0; i < n; ++i) trace += h[static_cast<size_t>(i * n + i)];
  const double ridge = 0.01 * trace / static_cast<double>(n);
  std::vector<float> out(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) {
      const double v = h[static_cast<size_t>(i * n + j)] + (i == j ? ridge : 0.0);
      out[static_cast<size_t>(i * n + j)] = out[static_cast<size_t>(j * n + i)] =
          static_cast<float>(v / static_cast<double>(m));
    }
  return out;
}

// ---- references ---------------------------------------------------------------------------------

// Runs f(i) for i in [0, n) on `threads` threads (the calling thread is one of them).
template <class F> void parallel_for(size_t n, unsigned threads, F f) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) f(i);
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto &th : pool) th.join();
}

// memcpy of every tensor's fp16 bytes into a buffer touched beforehand: each tensor cut into
// `threads` parts, all parts of all tensors shared by one pool of threads.
double time_memcpy(const std::vector<std::vector<uint16_t>> &w, unsigned threads,
                   std::vector<uint8_t> &dst) {
  struct Part {
    const uint8_t *src;
    size_t at, len;
  };
  std::vector<Part> parts;
  size_t at = 0;
  for (const auto &t : w) {
    const size_t bytes = t.size() * 2, part = (bytes / threads + 63) / 64 * 64;
    for (size_t a = 0; a < bytes; a += part)
      parts.push_back(
          {reinterpret_cast<const uint8_t *>(t.data()) + a, at + a, std::min(part, bytes - a)});
    at += bytes;
  }
  auto t0 = Clock::now();
  parallel_for(parts.size(), threads, [&](size_t i) {
    std::memcpy(dst.data() + parts[i].at, parts[i].src, parts[i].len);
  });
  return seconds_since(t0);
}

// Every tensor's fp16 bytes as independent zstd frames of kFrame bytes (so T threads can share a
// tensor, as zstd -T does).
constexpr size_t kFrame = size_t{4} << 20;
struct ZstdFrame {
  std::vector<uint8_t> bytes;
  size_t at = 0, len = 0; // where its content goes in the output, and its size
};

std::vector<ZstdFrame> zstd_compress(const std::vector<std::vector<uint16_t>> &w, int level,
                                     size_t &total) {
  std::vector<ZstdFrame> out;
  total = 0;
  size_t at = 0;
  for (const auto &t : w) {
    const size_t bytes = t.size() * 2;
    const auto *src = reinterpret_cast<const uint8_t *>(t.data());
    for (size_t a = 0; a < bytes; a += kFrame) {
      ZstdFrame f;
      f.at = at + a;
      f.len = std::min(kFrame, bytes - a);
      f.bytes.resize(ZSTD_compressBound(f.len));
      const size_t got = ZSTD_compress(f.bytes.data(), f.bytes.size(), src + a, f.len, level);
      if (ZSTD_isError(got)) throw std::runtime_error("zstd compression failed");
      f.bytes.resize(got);
      total += got;
      out.push_back(std::move(f));
    }
    at += bytes;
  }
  return out;
}

// ZSTD_decompress of every frame into the buffer, frames shared by one pool of threads.
double time_zstd(const std::vector<ZstdFrame> &frames, unsigned threads,
                 std::vector<uint8_t> &dst) {
  std::vector<ZSTD_DCtx *> ctx(threads);
  for (auto &c : ctx) c = ZSTD_createDCtx();
  std::atomic<unsigned> slot{0};
  auto t0 = Clock::now();
  std::atomic<size_t> next{0};
  auto work = [&] {
    ZSTD_DCtx *c = ctx[slot.fetch_add(1)];
    for (size_t i; (i = next.fetch_add(1)) < frames.size();) {
      const ZstdFrame &f = frames[i];
      const size_t got =
          ZSTD_decompressDCtx(c, dst.data() + f.at, f.len, f.bytes.data(), f.bytes.size());
      if (ZSTD_isError(got) || got != f.len) std::abort();
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto &th : pool) th.join();
  const double secs = seconds_since(t0);
  for (auto *c : ctx) ZSTD_freeDCtx(c);
  return secs;
}

// ---- methods ------------------------------------------------------------------------------------

struct Method {
  std::string name;
  std::string pipeline; // TOML text, parsed as if it were `file`
  bool needs_hessians = false;
  fs::path file = {}; // empty: <source>/pipelines/<name>.toml
};

std::string group_pipeline(const std::string &name, int group, int bits,
                           const std::string &quantizer, const std::string &entropy,
                           const std::string &compensator) {
  std::ostringstream s;
  s << "[pipeline]\nname = \"" << name << "\"\nselect = [\"model.layers.*_proj.weight\"]\n\n"
    << "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = " << group << "\n\n"
    << "[quantizer]\nplugin = \"" << quantizer << "\"\n";
  if (quantizer == "nwc.quant.uniform") s << "bits = " << bits << "\n";
  s << "\n[entropy]\nplugin = \"" << entropy << "\"\n";
  if (entropy == "nwc.entropy.zstd") s << "level = 3\n";
  s << "\n[compensator]\nplugin = \"" << compensator << "\"\nblock = 128\n";
  if (compensator == "nwc.comp.gptq") s << "group = " << group << "\nact_order = true\n";
  return s.str();
}

std::string read_text(const fs::path &p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<Method> all_methods(const fs::path &source) {
  return {
      {"rtn-g128-4b-rans", group_pipeline("rtn-g128-4b-rans", 128, 4, "nwc.quant.uniform",
                                          "nwc.entropy.rans", "nwc.comp.none")},
      {"rtn-g128-4b-zstd", group_pipeline("rtn-g128-4b-zstd", 128, 4, "nwc.quant.uniform",
                                          "nwc.entropy.zstd", "nwc.comp.none")},
      {"rtn-g128-4b-raw", group_pipeline("rtn-g128-4b-raw", 128, 4, "nwc.quant.uniform",
                                         "nwc.entropy.raw", "nwc.comp.none")},
      {"nf4-g64-rans",
       group_pipeline("nf4-g64-rans", 64, 4, "nwc.quant.nf4", "nwc.entropy.rans", "nwc.comp.none")},
      {"gptq-g128-4b-rans",
       group_pipeline("gptq-g128-4b-rans", 128, 4, "nwc.quant.uniform", "nwc.entropy.rans",
                      "nwc.comp.gptq"),
       true},
      {"nwc-datafree-l300", read_text(source / "pipelines" / "nwc-datafree-l300.toml")},
      {"nwc-fast-datafree-l300", read_text(source / "pipelines" / "nwc-fast-datafree-l300.toml")},
  };
}

// ---- output -------------------------------------------------------------------------------------

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  return "unknown";
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string fmt(const char *f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

struct Row {
  std::string name;
  double bits = 0;
  double weights = 0;
  std::vector<double> secs; // best decode time per thread count
  std::string same = "";    // "yes"/"NO" (decoded bits equal for every thread count)
  std::string note;
};

} // namespace

int main(int argc, char **argv) {
  bool small = false;
  int repeat = 3;
  unsigned max_threads = 2;
  int64_t gptq_max_cols = -2; // -2: unlimited with --small, 4096 otherwise
  std::string only;
  std::vector<fs::path> extra; // --pipeline files, measured after the built-in methods
  fs::path tmp = fs::temp_directory_path();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--small")
        small = true;
      else if (a == "--repeat")
        repeat = std::stoi(value());
      else if (a == "--threads")
        max_threads = static_cast<unsigned>(std::stoul(value()));
      else if (a == "--methods")
        only = "," + value() + ",";
      else if (a == "--pipeline")
        extra.emplace_back(value());
      else if (a == "--gptq-max-cols")
        gptq_max_cols = std::stoll(value());
      else if (a == "--tmp")
        tmp = value();
      else
        throw std::invalid_argument("unknown argument " + a);
    } catch (const std::exception &e) {
      std::cerr << "nwc_decode_throughput: " << e.what()
                << "\nusage: nwc_decode_throughput [--small] [--repeat N] [--threads T] "
                   "[--methods a,b,...] [--pipeline P.toml]... [--gptq-max-cols C] "
                   "[--tmp DIR]\n";
      return 2;
    }
  }
  if (gptq_max_cols == -2) gptq_max_cols = small ? -1 : 4096;
  if (repeat < 1 || max_threads < 1) {
    std::cerr << "nwc_decode_throughput: --repeat and --threads must be at least 1\n";
    return 2;
  }
  try {
    set_log_level(NWC_LOG_ERROR);
    const fs::path source = NWC_BENCH_SOURCE_DIR;
    Registry registry;
    registry.scan(Registry::search_path({}, true));

    // One Llama-3-8B decoder block (or its 1/8 scale).
    const int64_t div = small ? 8 : 1;
    const int64_t d = 4096 / div, kv = 1024 / div, ff = 14336 / div;
    const std::string p = "model.layers.0.";
    const std::vector<Linear> linears = {
        {p + "self_attn.q_proj.weight", d, d, 0},  {p + "self_attn.k_proj.weight", kv, d, 0},
        {p + "self_attn.v_proj.weight", kv, d, 0}, {p + "self_attn.o_proj.weight", d, d, 1},
        {p + "mlp.gate_proj.weight", ff, d, 2},    {p + "mlp.up_proj.weight", ff, d, 2},
        {p + "mlp.down_proj.weight", d, ff, 3},
    };
    std::cout << "# Decode throughput, one Llama-3-8B decoder block"
              << (small ? " at 1/8 scale" : "") << "\n\nmachine: " << cpu_model() << ", nproc "
              << sysconf(_SC_NPROCESSORS_ONLN) << " (hardware_concurrency "
              << std::thread::hardware_concurrency() << "); load average at start " << loadavg()
              << "\n";
    std::cout << "tensors:";
    double total_weights = 0;
    for (const auto &l : linears) {
      const size_t a = l.name.find('.', p.size()) + 1; // past "self_attn." / "mlp."
      std::cout << " " << l.name.substr(a, l.name.rfind(".weight") - a) << " " << l.rows << "x"
                << l.cols;
      total_weights += static_cast<double>(l.rows * l.cols);
    }
    std::cout << " (" << fmt("%.1f", total_weights / 1e6) << " M weights, fp16)\n" << std::flush;

    auto t0 = Clock::now();
    std::vector<std::vector<uint16_t>> weights;
    for (size_t i = 0; i < linears.size(); ++i)
      weights.push_back(make_weights(linears[i], 1000 + i));
    Model model;
    model.format = "memory";
    model.arch.family = "llama";
    model.arch.dim = d;
    model.arch.hidden_dim = ff;
    model.arch.n_layers = 1;
    model.arch.n_heads = 32 / div;
    model.arch.n_kv_heads = 8 / div;
    model.arch.vocab_size = 128256;
    model.arch.max_seq_len = 8192;
    model.arch.rope_theta = 500000.0;
    model.arch.rope_style = "rotate_half";
    for (size_t i = 0; i < linears.size(); ++i) {
      ModelTensor t;
      t.info = {linears[i].name, DType::F16, {linears[i].rows, linears[i].cols}};
      const std::vector<uint16_t> *w = &weights[i];
      t.load = [w] {
        std::vector<float> v(w->size());
        to_float(DType::F16, w->data(), w->size(), v.data());
        return v;
      };
      model.tensors.push_back(std::move(t));
    }
    std::cout << "generated in " << fmt("%.1f", seconds_since(t0)) << " s\n" << std::flush;

    size_t all_bytes = 0;
    for (const auto &w : weights) all_bytes += w.size() * 2;
    std::vector<uint8_t> dst(all_bytes, 1); // the references' output, touched once here
    std::vector<unsigned> counts{1};
    if (max_threads > 1) counts.push_back(max_threads);

    std::vector<Row> rows;
    { // references
      Row mc{"memcpy fp16 (reference)", 16.0, total_weights, {}, "", ""};
      size_t zbytes = 0;
      const auto z = zstd_compress(weights, 3, zbytes);
      Row zs{"zstd-3 fp16 (reference)",
             8.0 * static_cast<double>(zbytes) / total_weights,
             total_weights,
             {},
             "",
             "frames of 4 MiB"};
      // Runs alternate between the thread counts, so that other load on the machine affects all
      // counts alike.
      mc.secs.assign(counts.size(), 1e300);
      zs.secs.assign(counts.size(), 1e300);
      time_memcpy(weights, 1, dst);
      time_zstd(z, 1, dst);
      for (int r = 0; r < repeat; ++r)
        for (size_t i = 0; i < counts.size(); ++i) {
          mc.secs[i] = std::min(mc.secs[i], time_memcpy(weights, counts[i], dst));
          zs.secs[i] = std::min(zs.secs[i], time_zstd(z, counts[i], dst));
        }
      rows.push_back(mc);
      rows.push_back(zs);
    }

    std::map<int, std::shared_ptr<const std::vector<float>>> hessians;
    std::vector<Method> methods;
    for (auto &m : all_methods(source))
      if (only.empty() || only.find("," + m.name + ",") != std::string::npos)
        methods.push_back(std::move(m));
    for (const auto &f : extra) // a pipeline of one's own: needs no Hessians
      methods.push_back({f.stem().string(), read_text(f), false, f});
    for (const auto &m : methods) {
      Row row;
      row.name = m.name;
      CompressSettings settings;
      settings.threads = max_threads;
      std::string text = m.pipeline;
      if (m.needs_hessians) {
        // Tensors wider than --gptq-max-cols are left out of this method (GPTQ's cost grows with
        // cols^3 and its memory with cols^2).
        std::string select;
        for (const auto &l : linears) {
          if (gptq_max_cols >= 0 && l.cols > gptq_max_cols) continue;
          select += (select.empty() ? "\"" : ", \"") + l.name + "\"";
          auto &h = hessians[l.input];
          if (!h)
            h = std::make_shared<const std::vector<float>>(make_hessian(l.cols, 77 + l.input));
          settings.hessians[l.name] = h;
        }
        if (select.empty()) {
          std::cout << "skipped: " << m.name
                    << " (no tensor has at most --gptq-max-cols columns)\n";
          continue;
        }
        const std::string from = "select = [\"model.layers.*_proj.weight\"]";
        text.replace(text.find(from), from.size(), "select = [" + select + "]");
        if (gptq_max_cols >= 0) row.note = "tensors with cols <= " + std::to_string(gptq_max_cols);
      }
      Pipeline pipeline = parse_pipeline(
          text, m.file.empty() ? source / "pipelines" / (m.name + ".toml") : m.file, registry);
      const fs::path out = tmp / ("nwc-decode-" + std::to_string(getpid()) + "-" + m.name + ".nwc");
      t0 = Clock::now();
      CompressResult res = compress_model(model, pipeline, registry, out, settings);
      const double enc = seconds_since(t0);
      std::cout << "compressed: " << m.name << ", decoding\n" << std::flush;
      double bits = 0;
      for (const auto &ct : res.tensors)
        if (ct.storage == "pipeline") {
          bits += 8.0 * static_cast<double>(ct.stream_bytes);
          row.weights += static_cast<double>(ct.numel);
        }
      row.bits = row.weights > 0 ? bits / row.weights : 0;
      row.note += (row.note.empty() ? "" : "; ") + std::string("encode ") + fmt("%.1f", enc) +
                  " s on " + std::to_string(max_threads) + " threads";
      {
        ContainerReader reader(out);
        ContainerDecoder decoder(reader, registry);
        std::vector<const TensorRecord *> coded;
        for (const auto &t : reader.manifest().tensors)
          if (t.storage == "pipeline") coded.push_back(&t);
        // One pass: seconds spent inside decode_tensor, and a hash of everything decoded.
        auto pass = [&](unsigned threads, uint64_t &hash) {
          double secs = 0;
          hash = 0;
          for (const TensorRecord *t : coded) {
            auto s0 = Clock::now();
            std::vector<float> v = decoder.decode_tensor(*t, threads);
            secs += seconds_since(s0);
            hash = hash * 0x100000001b3ull ^ container_checksum(v.data(), v.size() * 4);
          }
          return secs;
        };
        uint64_t first = 0, h = 0;
        pass(1, first); // warm: plugin instances created, codec loaded, pages mapped
        bool same = true;
        row.secs.assign(counts.size(), 1e300);
        for (int r = 0; r < repeat; ++r) // alternating thread counts, as for the references
          for (size_t i = 0; i < counts.size(); ++i) {
            row.secs[i] = std::min(row.secs[i], pass(counts[i], h));
            same = same && h == first;
          }
        row.same = same ? "yes" : "NO";
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(first));
        row.note += std::string("; decoded values hash ") + hex;
      }
      fs::remove(out);
      std::cout << "done: " << m.name << "\n" << std::flush;
      rows.push_back(row);
    }

    // The table: throughput per thread count, ratios to memcpy at the same thread count.
    std::cout << "\nrepeat " << repeat << " (best run), load average at end " << loadavg()
              << "\n\n";
    std::cout << "| method | bits/w |";
    for (unsigned t : counts)
      std::cout << " " << t << "T Mw/s | " << t << "T GB/s fp16 | " << t << "T / memcpy |";
    if (counts.size() > 1) std::cout << " " << counts.back() << "T / 1T |";
    std::cout << " same bits |\n|---|---:|";
    for (size_t i = 0; i < counts.size(); ++i) std::cout << "---:|---:|---:|";
    if (counts.size() > 1) std::cout << "---:|";
    std::cout << ":---:|\n";
    for (const auto &r : rows) {
      std::cout << "| " << r.name << " | " << fmt("%.3f", r.bits) << " |";
      for (size_t i = 0; i < counts.size(); ++i) {
        const double wps = r.weights / r.secs[i];
        const double ref = rows[0].weights / rows[0].secs[i];
        std::cout << " " << fmt("%.1f", wps / 1e6) << " | " << fmt("%.3f", wps * 2 / 1e9) << " | "
                  << fmt(wps / ref < 0.1 ? "%.4f" : "%.3f", wps / ref) << " |";
      }
      if (counts.size() > 1) std::cout << " " << fmt("%.2f", r.secs[0] / r.secs.back()) << " |";
      std::cout << " " << (r.same.empty() ? "-" : r.same) << " |\n";
    }
    std::cout << "\n";
    for (const auto &r : rows)
      if (!r.note.empty()) std::cout << "- " << r.name << ": " << r.note << "\n";
  } catch (const std::exception &e) {
    std::cerr << "nwc_decode_throughput: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
