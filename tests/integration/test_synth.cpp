// `nwc synth`: synthetic Llama checkpoints. What users rely on: the output loads like a downloaded
// HF checkpoint (single file or sharded), runs through the forward pass, is byte-for-byte
// reproducible from the seed whatever the thread count or machine, and has the weight statistics
// that make compression hard (heavy tails, outlier input channels, row-scale spread).
#include "cli_runner.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/tools/synth.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace nwc;
using namespace nwc::runtime;
using namespace nwc::tools;
using nwc::test::Result;
using nwc::test::run_nwc;
using nwc::test::TempDir;

namespace {

bool contains(const std::string &s, const std::string &sub) {
  return s.find(sub) != std::string::npos;
}

// The message of the nwc::Error f throws ("" if none).
template <class F> std::string error_of(F f) {
  try {
    f();
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

uint64_t fnv1a(const std::vector<uint8_t> &b) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t c : b) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

SynthSpec spec_of(const std::string &preset, DType dtype = DType::F32) {
  SynthSpec s = synth_preset(preset);
  s.dtype = dtype;
  s.threads = 2;
  return s;
}

// The HF Llama tensors of an architecture, in the order synth writes them.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const Architecture &a) {
  const int64_t kvd = a.n_kv_heads * (a.dim / a.n_heads);
  std::vector<std::pair<std::string, std::vector<int64_t>>> t = {
      {"model.embed_tokens.weight", {a.vocab_size, a.dim}}};
  for (int64_t l = 0; l < a.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {a.dim}});
    t.push_back({p + "self_attn.q_proj.weight", {a.dim, a.dim}});
    t.push_back({p + "self_attn.k_proj.weight", {kvd, a.dim}});
    t.push_back({p + "self_attn.v_proj.weight", {kvd, a.dim}});
    t.push_back({p + "self_attn.o_proj.weight", {a.dim, a.dim}});
    t.push_back({p + "post_attention_layernorm.weight", {a.dim}});
    t.push_back({p + "mlp.gate_proj.weight", {a.hidden_dim, a.dim}});
    t.push_back({p + "mlp.up_proj.weight", {a.hidden_dim, a.dim}});
    t.push_back({p + "mlp.down_proj.weight", {a.dim, a.hidden_dim}});
  }
  t.push_back({"model.norm.weight", {a.dim}});
  if (!a.tied_embeddings) t.push_back({"lm_head.weight", {a.vocab_size, a.dim}});
  return t;
}

struct Moments {
  double mean = 0, std = 0, excess_kurtosis = 0;
};
Moments moments(const std::vector<float> &v) {
  double s = 0;
  for (float x : v) s += x;
  const double n = static_cast<double>(v.size()), mean = s / n;
  double m2 = 0, m4 = 0;
  for (float x : v) {
    const double d = x - mean;
    m2 += d * d;
    m4 += d * d * d * d;
  }
  m2 /= n;
  m4 /= n;
  return {mean, std::sqrt(m2), m4 / (m2 * m2) - 3.0};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Column L2 norms of a row-major [rows, cols] matrix.
std::vector<double> column_norms(const std::vector<float> &w, int64_t rows, int64_t cols) {
  std::vector<double> n(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double x = w[static_cast<size_t>(r * cols + c)];
      n[static_cast<size_t>(c)] += x * x;
    }
  for (auto &x : n) x = std::sqrt(x);
  return n;
}

// Columns whose norm exceeds `factor` times the median column norm.
std::set<int64_t> outlier_columns(const std::vector<float> &w, int64_t rows, int64_t cols,
                                  double factor) {
  const auto n = column_norms(w, rows, cols);
  const double med = median(n);
  std::set<int64_t> out;
  for (int64_t c = 0; c < cols; ++c)
    if (n[static_cast<size_t>(c)] > factor * med) out.insert(c);
  return out;
}

// `nwc synth -o DIR/bad ARGS` is a usage error (exit 2) of one line naming `needle`, and writes
// nothing.
void check_usage_error(const fs::path &dir, const std::vector<std::string> &args,
                       const std::string &needle) {
  std::vector<std::string> full = {"synth", "-o", (dir / "bad").string()};
  full.insert(full.end(), args.begin(), args.end());
  Result b = run_nwc(full);
  INFO(b.err);
  CHECK(b.exit_code == 2);
  CHECK(contains(b.err, needle));
  CHECK(std::count(b.err.begin(), b.err.end(), '\n') == 1);
  CHECK_FALSE(fs::exists(dir / "bad"));
}

} // namespace

TEST_CASE("synth: the tiny preset loads as an HF Llama checkpoint, every tensor as declared") {
  TempDir dir;
  const fs::path out = dir / "tiny";
  const SynthSpec spec = spec_of("tiny", DType::BF16);
  const SynthResult r = write_synthetic_model(spec, out);
  CHECK(r.files == std::vector<std::string>{"model.safetensors"});
  CHECK(fs::is_regular_file(out / "config.json"));
  CHECK_FALSE(fs::exists(out / "model.safetensors.index.json"));

  const Model m = load_model(out);
  CHECK(m.format == "safetensors");
  const Architecture &a = m.arch;
  CHECK(a.family == "llama");
  CHECK(a.dim == 64);
  CHECK(a.hidden_dim == 172);
  CHECK(a.n_layers == 2);
  CHECK(a.n_heads == 8);
  CHECK(a.n_kv_heads == 4);
  CHECK(a.vocab_size == 512);
  CHECK(a.max_seq_len == 256);
  CHECK(a.norm_eps == doctest::Approx(1e-5));
  CHECK(a.rope_theta == doctest::Approx(10000.0));
  CHECK(a.rope_style == "rotate_half");
  CHECK_FALSE(a.tied_embeddings);

  const auto want = expected_tensors(a);
  REQUIRE(m.tensors.size() == want.size());
  uint64_t params = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const ModelTensor *t = m.find(want[i].first);
    INFO(want[i].first);
    REQUIRE(t != nullptr);
    CHECK(t->info.shape == want[i].second);
    CHECK(t->info.dtype == DType::BF16);
    params += t->info.numel();
  }
  CHECK(r.tensors == want.size());
  CHECK(r.parameters == params);
  CHECK(r.data_bytes == params * 2);
  uint64_t on_disk = 0;
  for (const auto &e : fs::directory_iterator(out)) on_disk += fs::file_size(e.path());
  CHECK(r.file_bytes == on_disk);

  // config.json is an HF LlamaConfig plus the mark that lets a later run replace this output.
  const auto config = nlohmann::json::parse(nwc::test::slurp(out / "config.json"));
  CHECK(config["architectures"][0] == "LlamaForCausalLM");
  CHECK(config["torch_dtype"] == "bfloat16");
  CHECK(config["tie_word_embeddings"] == false);
  CHECK(config["nwc_synth"]["seed"] == 0);
  CHECK(config["nwc_synth"]["preset"] == "tiny");
}

TEST_CASE("synth: tied embeddings leave out lm_head") {
  TempDir dir;
  SynthSpec spec = spec_of("tiny");
  spec.arch.tied_embeddings = true;
  write_synthetic_model(spec, dir / "m");
  const Model m = load_model(dir / "m");
  CHECK(m.arch.tied_embeddings);
  CHECK(m.find("lm_head.weight") == nullptr);
  CHECK(m.tensors.size() == expected_tensors(m.arch).size());
}

TEST_CASE("synth: a sharded checkpoint holds the same tensors as a single file") {
  TempDir dir;
  SynthSpec spec = spec_of("tiny");
  write_synthetic_model(spec, dir / "one");
  spec.shard_bytes = 100000; // F32 tiny: ~626 KB of tensors -> several shards
  const SynthResult r = write_synthetic_model(spec, dir / "sharded");
  REQUIRE(r.files.size() > 2);
  for (size_t k = 0; k < r.files.size(); ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, r.files.size());
    CHECK(r.files[k] == name);
    CHECK(fs::is_regular_file(dir / "sharded" / name));
    // No shard exceeds the limit unless it holds a single larger tensor.
    CHECK(fs::file_size(dir / "sharded" / name) < 2 * spec.shard_bytes);
  }
  CHECK_FALSE(fs::exists(dir / "sharded" / "model.safetensors"));
  const auto index =
      nlohmann::json::parse(nwc::test::slurp(dir / "sharded" / "model.safetensors.index.json"));
  CHECK(index["metadata"]["total_size"] == r.data_bytes);

  const Model a = load_model(dir / "one"), b = load_model(dir / "sharded");
  CHECK(b.arch.to_json() == a.arch.to_json());
  REQUIRE(a.tensors.size() == b.tensors.size());
  CHECK(index["weight_map"].size() == a.tensors.size());
  for (const auto &t : a.tensors) {
    const ModelTensor *u = b.find(t.info.name);
    INFO(t.info.name);
    REQUIRE(u != nullptr);
    CHECK(u->info.shape == t.info.shape);
    CHECK(u->load() == t.load());
  }
}

TEST_CASE("synth: BF16 and F16 files hold the F32 values rounded") {
  TempDir dir;
  SynthSpec spec = spec_of("tiny", DType::F32);
  write_synthetic_model(spec, dir / "f32");
  spec.dtype = DType::BF16;
  write_synthetic_model(spec, dir / "bf16");
  spec.dtype = DType::F16;
  write_synthetic_model(spec, dir / "f16");
  const Model a = load_model(dir / "f32"), b = load_model(dir / "bf16"),
              h = load_model(dir / "f16");
  for (const auto &t : a.tensors) {
    INFO(t.info.name);
    const auto x = t.load(), y = b.find(t.info.name)->load(), z = h.find(t.info.name)->load();
    size_t bad_bf16 = 0, bad_f16 = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      bad_bf16 += y[i] != bf16_to_f32(f32_to_bf16(x[i]));
      bad_f16 += z[i] != f16_to_f32(f32_to_f16(x[i]));
    }
    CHECK(bad_bf16 == 0);
    CHECK(bad_f16 == 0);
  }
}

TEST_CASE("synth: same seed, same bytes, whatever the thread count, and another seed differs") {
  TempDir dir;
  // "small" has tensors large enough to be split over several threads.
  SynthSpec spec = spec_of("small", DType::BF16);
  spec.arch.n_layers = 1;
  spec.seed = 7;
  spec.threads = 1;
  write_synthetic_model(spec, dir / "t1");
  spec.threads = 3;
  write_synthetic_model(spec, dir / "t3");
  const auto b1 = nwc::test::read_bytes(dir / "t1" / "model.safetensors");
  CHECK(!b1.empty());
  CHECK(b1 == nwc::test::read_bytes(dir / "t3" / "model.safetensors"));
  CHECK(nwc::test::read_bytes(dir / "t1" / "config.json") ==
        nwc::test::read_bytes(dir / "t3" / "config.json"));

  spec.seed = 8;
  write_synthetic_model(spec, dir / "s8");
  const Model a = load_model(dir / "t1"), b = load_model(dir / "s8");
  for (const auto &t : a.tensors) {
    INFO(t.info.name);
    const auto x = t.load(), y = b.find(t.info.name)->load();
    size_t same = 0;
    for (size_t i = 0; i < x.size(); ++i) same += x[i] == y[i];
    CHECK(same < x.size() / 10 + 1); // BF16 collisions aside, the values are unrelated
  }
}

TEST_CASE("synth: the bytes are the same on every machine (golden checksum)") {
  // Computed once; any compiler, optimisation level, vector width or CPU must reproduce it. A
  // deliberate change of the statistical model changes it (and config.json's "statistics").
  TempDir dir;
  SynthSpec spec = spec_of("tiny", DType::F32);
  spec.seed = 1234;
  write_synthetic_model(spec, dir / "m");
  CHECK(fnv1a(nwc::test::read_bytes(dir / "m" / "model.safetensors")) == 0xc939f199f90bfcfaull);
}

TEST_CASE("synth: a tensor depends on its name, not on the model around it") {
  TempDir dir;
  SynthSpec spec = spec_of("tiny");
  spec.arch.n_layers = 1;
  write_synthetic_model(spec, dir / "one");
  spec.arch.n_layers = 3;
  write_synthetic_model(spec, dir / "three");
  const Model a = load_model(dir / "one"), b = load_model(dir / "three");
  for (const auto &t : a.tensors) {
    INFO(t.info.name);
    CHECK(b.find(t.info.name)->load() == t.load());
  }
  CHECK(b.find("model.layers.1.self_attn.q_proj.weight")->load() !=
        b.find("model.layers.0.self_attn.q_proj.weight")->load());
}

TEST_CASE("synth: Llama-like statistics: heavy tails, outlier input channels, row spread") {
  TempDir dir;
  SynthSpec spec = spec_of("small", DType::F32); // dim 256, hidden 688
  spec.arch.dim = 512;
  spec.arch.hidden_dim = 1536;
  spec.arch.n_layers = 1;
  spec.arch.vocab_size = 1024;
  write_synthetic_model(spec, dir / "m");
  const Model m = load_model(dir / "m");
  const int64_t D = 512, F = 1536;

  std::map<std::string, std::set<int64_t>> outliers;
  for (const auto &t : m.tensors) {
    INFO(t.info.name);
    const auto v = t.load();
    REQUIRE(std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }));
    const Moments mo = moments(v);
    if (t.info.shape.size() == 1) { // RMSNorm weights: positive, spread around a mean
      CHECK(*std::min_element(v.begin(), v.end()) > 0.0f);
      CHECK(mo.std > 0.05 * mo.mean);
      if (t.info.name == "model.norm.weight") CHECK(mo.mean == doctest::Approx(2.0).epsilon(0.1));
      continue;
    }
    const int64_t rows = t.info.shape[0], cols = t.info.shape[1];
    CHECK(std::abs(mo.mean) < 0.05 * mo.std);
    // Heavy tails: a Gaussian has excess kurtosis 0.
    CHECK(mo.excess_kurtosis > 2.0);
    // Row-scale spread: per-output-channel std varies (log-normal multipliers).
    std::vector<double> row_std;
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> row(v.begin() + r * cols, v.begin() + (r + 1) * cols);
      row_std.push_back(moments(row).std);
    }
    const auto [lo, hi] = std::minmax_element(row_std.begin(), row_std.end());
    CHECK(*hi / *lo > 2.5);
    if (t.info.name == "model.embed_tokens.weight") {
      CHECK(mo.std == doctest::Approx(0.02).epsilon(0.25));
      continue;
    }
    // Linears: bulk std ~ 1/sqrt(in) (Llama-like 0.01-0.03 at 4096 inputs), and a few input
    // columns far above the median column norm; none in between.
    const double bulk = median(column_norms(v, rows, cols)) / std::sqrt(static_cast<double>(rows));
    CHECK(bulk > 0.4 / std::sqrt(static_cast<double>(cols)));
    CHECK(bulk < 2.5 / std::sqrt(static_cast<double>(cols)));
    const auto out4 = outlier_columns(v, rows, cols, 4.0);
    CHECK(out4.size() >= 1);
    CHECK(out4.size() <= static_cast<size_t>(cols / 50)); // at most 2 % of the channels
    CHECK(outlier_columns(v, rows, cols, 2.5) == out4);   // outliers stand apart
    outliers[t.info.name] = out4;
  }
  // Linears reading the same activations share their outlier channels.
  const std::string l0 = "model.layers.0.";
  CHECK(outliers[l0 + "self_attn.q_proj.weight"] == outliers[l0 + "self_attn.k_proj.weight"]);
  CHECK(outliers[l0 + "self_attn.q_proj.weight"] == outliers[l0 + "self_attn.v_proj.weight"]);
  CHECK(outliers[l0 + "mlp.gate_proj.weight"] == outliers[l0 + "mlp.up_proj.weight"]);
  CHECK(outliers[l0 + "self_attn.q_proj.weight"] != outliers[l0 + "mlp.gate_proj.weight"]);
  CHECK(m.find(l0 + "mlp.down_proj.weight")->info.shape == std::vector<int64_t>{D, F});
}

TEST_CASE("synth: a synthetic model runs through the forward pass") {
  TempDir dir;
  write_synthetic_model(spec_of("tiny", DType::BF16), dir / "m");
  const Model m = load_model(dir / "m");
  LlamaModel llama(m, 1);
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < 2 * 64; ++i) tokens.push_back((i * 37 + 1) % 512);
  const auto nll = llama.window_nll(tokens, 2, 64);
  REQUIRE(nll.size() == 2);
  for (double x : nll) {
    CHECK(std::isfinite(x));
    // 63 predictions per window; random weights predict about uniformly (ln 512 = 6.2 nats).
    CHECK(x / 63 > 1.0);
    CHECK(x / 63 < 20.0);
  }
}

TEST_CASE("synth: an earlier synth output is replaced, anything else is refused") {
  TempDir dir;
  const fs::path out = dir / "m";
  SynthSpec spec = spec_of("tiny");
  spec.shard_bytes = 100000;
  write_synthetic_model(spec, out);
  CHECK(fs::exists(out / "model.safetensors.index.json"));
  // Over an earlier output, as a single file now: no stale shards or index remain.
  spec.shard_bytes = 0;
  spec.seed = 5;
  write_synthetic_model(spec, out);
  std::vector<std::string> names;
  for (const auto &e : fs::directory_iterator(out)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"config.json", "model.safetensors"});
  CHECK(load_model(out).tensors.size() == expected_tensors(spec.arch).size());
  // Nothing left beside it either (temporary or moved-aside directories).
  CHECK(dir.entries() == std::vector<std::string>{"m"});

  // An empty directory is fine.
  fs::create_directory(dir / "empty");
  write_synthetic_model(spec, dir / "empty");
  CHECK(fs::is_regular_file(dir / "empty" / "model.safetensors"));

  // A directory with other files, or a real model's config, or a file: refused, untouched.
  fs::create_directory(dir / "other");
  nwc::test::write_bytes(dir / "other" / "notes.txt", "keep", 4);
  std::string msg = error_of([&] { write_synthetic_model(spec, dir / "other"); });
  CHECK(contains(msg, (dir / "other").string()));
  CHECK(contains(msg, "notes.txt"));
  CHECK(msg.find('\n') == std::string::npos);
  fs::create_directory(dir / "real");
  nwc::test::write_bytes(dir / "real" / "config.json", "{}", 2);
  msg = error_of([&] { write_synthetic_model(spec, dir / "real"); });
  CHECK(contains(msg, (dir / "real").string()));
  CHECK(nwc::test::slurp(dir / "real" / "config.json") == "{}");
  nwc::test::write_bytes(dir / "file", "x", 1);
  CHECK(contains(error_of([&] { write_synthetic_model(spec, dir / "file"); }), "not a directory"));
  std::vector<std::string> left = dir.entries();
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"empty", "file", "m", "other", "real"});
}

TEST_CASE("synth: bad spec values are refused with a one-line error naming the field") {
  auto refused = [](const std::function<void(SynthSpec &)> &edit, const std::string &field) {
    SynthSpec s = synth_preset("tiny");
    edit(s);
    const std::string msg = error_of([&] { plan_synthetic_model(s); });
    INFO(msg);
    CHECK(contains(msg, field));
    CHECK(msg.find('\n') == std::string::npos);
  };
  refused([](SynthSpec &s) { s.arch.dim = 0; }, "dim (--dim)");
  refused([](SynthSpec &s) { s.arch.dim = 100; }, "divisible by n_heads");
  refused([](SynthSpec &s) { s.arch.n_kv_heads = 3; }, "n_kv_heads (--kv-heads)");
  refused([](SynthSpec &s) { s.arch.n_layers = -1; }, "n_layers (--layers)");
  refused([](SynthSpec &s) { s.arch.vocab_size = 0; }, "vocab_size (--vocab)");
  refused([](SynthSpec &s) { s.arch.hidden_dim = 0; }, "hidden_dim (--hidden-dim)");
  refused([](SynthSpec &s) { s.dtype = DType::I8; }, "dtype (--dtype)");
  refused(
      [](SynthSpec &s) {
        s.arch.n_layers = 12000; // 108003 tensors, one shard each: more than 99999 shards
        s.shard_bytes = 1;
      },
      "shard_bytes (--shard-size)");
  refused([](SynthSpec &s) { s.arch.dim = 72; }, "head dimension"); // 72 / 8 = 9, odd
  CHECK(contains(error_of([] { synth_preset("llama9-400b"); }), "llama3-8b"));

  CHECK(parse_byte_size("5GB") == 5000000000ull);
  CHECK(parse_byte_size("2GiB") == 2147483648ull);
  CHECK(parse_byte_size("1.5gb") == 1500000000ull);
  CHECK(parse_byte_size("500 MiB") == 524288000ull);
  CHECK(parse_byte_size("123") == 123ull);
  CHECK(contains(error_of([] { parse_byte_size("5XB"); }), "'5XB'"));
  CHECK(contains(error_of([] { parse_byte_size("GB"); }), "'GB'"));
  CHECK(contains(error_of([] { parse_byte_size("-5GB"); }), "'-5GB'"));
}

TEST_CASE("synth: presets have the shapes of the models they are named after") {
  const SynthSpec l3 = synth_preset("llama3-8b");
  CHECK(l3.arch.dim == 4096);
  CHECK(l3.arch.hidden_dim == 14336);
  CHECK(l3.arch.n_layers == 32);
  CHECK(l3.arch.n_heads == 32);
  CHECK(l3.arch.n_kv_heads == 8);
  CHECK(l3.arch.vocab_size == 128256);
  CHECK(l3.arch.max_seq_len == 8192);
  CHECK(l3.arch.rope_theta == 500000.0);
  CHECK(l3.dtype == DType::BF16);
  uint64_t params = 0;
  for (const auto &t : plan_synthetic_model(l3)) params += t.info.numel();
  CHECK(params == 8030261248ull); // Llama-3-8B's parameter count
  const SynthSpec block = synth_preset("llama3-8b-block");
  CHECK(block.arch.n_layers == 1);
  CHECK(block.arch.dim == 4096);
  for (const auto &name : synth_preset_names())
    CHECK_NOTHROW(plan_synthetic_model(synth_preset(name)));
}

TEST_CASE("nwc synth: writes a checkpoint that nwc eval reads, and bad values are usage errors") {
  TempDir dir;
  const std::string out = (dir / "synth").string();
  Result r = run_nwc(
      {"synth", "-o", out, "--preset", "tiny", "--seed", "3", "--shard-size", "100KB", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["tensors"] == 21);
  CHECK(j["parameters"] == 156480);
  CHECK(j["dtype"] == "BF16");
  CHECK(j["files"].size() > 1);
  CHECK(j["architecture"]["dim"] == 64);
  CHECK(j["bytes"].get<uint64_t>() > j["data_bytes"].get<uint64_t>());

  const fs::path tok = nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
  const fs::path text = nwc::test::data_dir() / "text" / "tinystories-eval.txt";
  Result e = run_nwc({"eval", "--model", out, "--tokenizer", tok.string(), "--text", text.string(),
                      "--max-tokens", "512", "--seq-len", "128", "--json"});
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  const auto ej = nlohmann::json::parse(e.out);
  CHECK(std::isfinite(ej["nll"].get<double>()));

  // The plain summary: one line with the counts and the speed. Rerunning over the output is fine.
  Result s = run_nwc({"synth", "-o", out, "--layers", "1", "--dtype", "f16", "--threads", "2"});
  INFO(s.err);
  REQUIRE(s.exit_code == 0);
  CHECK(contains(s.out, "12 tensors"));
  CHECK(contains(s.out, "MB/s"));
  CHECK(std::count(s.out.begin(), s.out.end(), '\n') == 1);
  CHECK(load_model(out).arch.n_layers == 1);

  auto usage = [&](const std::vector<std::string> &args, const std::string &needle) {
    check_usage_error(dir.path(), args, needle);
  };
  usage({"--kv-heads", "3"}, "--kv-heads");
  usage({"--dim", "0"}, "--dim");
  usage({"--dtype", "I8"}, "--dtype");
  usage({"--preset", "gpt5"}, "--preset");
  usage({"--shard-size", "lots"}, "--shard-size");
  usage({"--tied-embeddings", "maybe"}, "--tied-embeddings");
  // Runtime refusal: a foreign non-empty directory.
  fs::create_directory(dir / "foreign");
  nwc::test::write_bytes(dir / "foreign" / "weights.bin", "w", 1);
  Result f = run_nwc({"synth", "-o", (dir / "foreign").string()});
  CHECK(f.exit_code == 1);
  CHECK(contains(f.err, "not empty and not an earlier `nwc synth` output"));
  CHECK(std::count(f.err.begin(), f.err.end(), '\n') == 1);
}

TEST_CASE("nwc synth: an interrupted run leaves nothing behind") {
  TempDir dir;
  const fs::path out = dir / "big";
  const std::string exe = (nwc::test::binary_dir() / "bin" / "nwc").string();
  // ~0.9 GB of F32 on one thread: seconds of work, so the signal lands mid-run.
  std::vector<std::string> argv_s = {
      exe,       "synth", "-o",        out.string(), "--preset", "llama3-8b-block",
      "--dtype", "F32",   "--threads", "1",          "--quiet"};
  std::vector<char *> argv;
  for (auto &s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGINT, SIG_DFL);
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  // Wait until the temporary directory holds the first shard's temporary file, then interrupt.
  bool started = false;
  for (int i = 0; i < 6000 && !started; ++i) {
    for (const auto &e : fs::directory_iterator(dir.path())) {
      std::error_code ec;
      if (fs::is_directory(e.path(), ec) && !fs::is_empty(e.path(), ec)) started = true;
    }
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(started);
  ::kill(pid, SIGINT);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGINT);
  CHECK(dir.entries().empty());
}

TEST_CASE("synth: variant presets have the parameter counts of the real models") {
  auto params = [](const std::string &name) {
    uint64_t n = 0;
    for (const auto &t : plan_synthetic_model(synth_preset(name))) n += t.info.numel();
    return n;
  };
  CHECK(params("llama3.1-8b") == 8030261248ull);
  CHECK(params("mistral-7b") == 7248023552ull);  // Mistral-7B-v0.3
  CHECK(params("qwen2.5-0.5b") == 494032768ull); // Qwen2.5-0.5B
  CHECK(params("qwen3-0.6b") == 596049920ull);   // Qwen3-0.6B
  const SynthSpec q3 = synth_preset("qwen3-0.6b");
  CHECK(q3.arch.qk_norm);
  CHECK(q3.arch.head_size() == 128);
  CHECK(synth_preset("qwen2.5-0.5b").arch.attention_bias);
  CHECK(synth_preset("llama3.1-8b").arch.rope_scaling.factor == 8.0);
  CHECK(synth_preset("llama3.2-1b").arch.rope_scaling.factor == 32.0);
  // A variant adds tensors; those of plain Llama keep their bytes (the name decides the values).
  SynthSpec s = spec_of("tiny");
  s.arch.n_layers = 1;
  const size_t plain = plan_synthetic_model(s).size();
  set_synth_model_type(s.arch, "qwen3");
  s.arch.attention_bias = s.arch.attention_out_bias = true;
  CHECK(plan_synthetic_model(s).size() == plain + 6); // 4 biases, q_norm, k_norm
  CHECK(parse_rope_scaling("llama3:factor=32,original_max_position_embeddings=4096").factor ==
        32.0);
  CHECK(parse_rope_scaling("none").type.empty());
  CHECK(contains(error_of([] { parse_rope_scaling("yarn"); }), "unknown type"));
  CHECK(contains(error_of([] { parse_rope_scaling("llama3:factor=x"); }), "'x' is not a number"));
}

TEST_CASE("nwc synth: each model-config variant is read back as written") {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::function<void(const Architecture &)> check;
  };
  const Case cases[] = {
      {{"--head-dim", "16", "--attention-bias", "on", "--mlp-bias", "on"},
       [](const Architecture &a) {
         CHECK(a.family == "llama");
         CHECK(a.head_dim == 16);
         CHECK(a.attention_bias);
         CHECK(a.attention_out_bias);
         CHECK(a.mlp_bias);
       }},
      {{"--rope-scaling", "llama3:factor=16,original_max_position_embeddings=128"},
       [](const Architecture &a) {
         CHECK(a.rope_scaling.type == "llama3");
         CHECK(a.rope_scaling.factor == 16.0);
         CHECK(a.rope_scaling.high_freq_factor == 4.0);
         CHECK(a.rope_scaling.original_max_position_embeddings == 128);
       }},
      {{"--model-type", "mistral", "--sliding-window", "32"},
       [](const Architecture &a) {
         CHECK(a.family == "mistral");
         CHECK(a.sliding_window == 32);
       }},
      {{"--model-type", "qwen2", "--tied-embeddings", "on"},
       [](const Architecture &a) {
         CHECK(a.family == "qwen2");
         CHECK(a.attention_bias);
         CHECK_FALSE(a.attention_out_bias);
         CHECK(a.tied_embeddings);
       }},
      {{"--model-type", "qwen3", "--head-dim", "16"},
       [](const Architecture &a) {
         CHECK(a.family == "qwen3");
         CHECK(a.qk_norm);
         CHECK(a.head_dim == 16);
         CHECK_FALSE(a.attention_bias);
       }},
  };
  int k = 0;
  for (const auto &c : cases) {
    const std::string out = (dir / ("v" + std::to_string(k++))).string();
    std::vector<std::string> args = {"synth", "-o", out, "--layers", "1", "--quiet"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    Result r = run_nwc(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const Model m = load_model(out);
    c.check(m.arch);
    // Every tensor the architecture has, at its shape: the forward pass loads them all.
    CHECK_NOTHROW(LlamaModel(m, 1));
  }
  auto usage = [&](const std::vector<std::string> &args, const std::string &needle) {
    check_usage_error(dir.path(), args, needle);
  };
  usage({"--model-type", "gemma"}, "--model-type");
  usage({"--head-dim", "7"}, "--head-dim");
  usage({"--model-type", "qwen2", "--mlp-bias", "on"}, "mlp_bias");
  usage({"--model-type", "mistral", "--attention-bias", "on"}, "attention_bias");
  usage({"--sliding-window", "8"}, "sliding_window");
  usage({"--rope-scaling", "yarn"}, "--rope-scaling");
  usage({"--attention-bias", "maybe"}, "--attention-bias");
}

TEST_CASE("nwc compress keeps biases and q/k norms of a variant as they are") {
  // Biases and norms are not decoder linears: the pipeline codes the linears, the rest is stored
  // raw and comes back bit for bit through decompress.
  TempDir dir;
  SynthSpec s = spec_of("tiny");
  set_synth_model_type(s.arch, "qwen3");
  s.arch.attention_bias = s.arch.attention_out_bias = true;
  s.arch.head_dim = 16;
  write_synthetic_model(s, dir / "m");
  const fs::path pipeline = nwc::test::source_dir() / "pipelines" / "rtn-4bit-g32.toml";
  Result c = run_nwc({"compress", (dir / "m").string(), "--pipeline", pipeline.string(), "-o",
                      (dir / "m.nwc").string(), "--quiet"});
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  Result d = run_nwc({"decompress", (dir / "m.nwc").string(), "-o", (dir / "back").string(),
                      "--layout", "hf", "--quiet"});
  INFO(d.err);
  REQUIRE(d.exit_code == 0);
  const Model a = load_model(dir / "m"), b = load_model(dir / "back");
  CHECK(b.arch.to_json() == a.arch.to_json());
  CHECK(b.tensors.size() == a.tensors.size());
  int raw = 0;
  for (const auto &t : a.tensors) {
    INFO(t.info.name);
    const ModelTensor *u = b.find(t.info.name);
    REQUIRE(u != nullptr);
    if (is_decoder_linear(t.info.name)) continue;
    CHECK(u->load() == t.load());
    raw += t.info.name.find("bias") != std::string::npos ||
           t.info.name.find("_norm.weight") != std::string::npos;
  }
  CHECK(raw == 2 * (4 + 2)); // per layer: 4 biases, q_norm and k_norm
  // The container runs as the variant, and GGUF (llama.cpp's qwen3: no biases) refuses it naming
  // the field.
  CHECK_NOTHROW(LlamaModel(b, 1));
  Result g = run_nwc({"convert", "--model", (dir / "m.nwc").string(), "-o",
                      (dir / "m.gguf").string(), "--layout", "gguf"});
  CHECK(g.exit_code == 1);
  CHECK(contains(g.err, "has no attention_bias"));
  CHECK(std::count(g.err.begin(), g.err.end(), '\n') == 1);
}
