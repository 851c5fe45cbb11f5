// llama-quantize's per-tensor type choice (ggml_mixture.hpp) against llama.cpp itself: small
// Llama-shaped GGUF files (F32 tensors, architecture metadata, no vocabulary: llama.cpp's
// quantizer does not load one) written here, quantized with llama_model_quantize() from
// libllama.v0.5.0.so for every transcribed mixture, with and without an importance matrix; the
// tensor types of the output GGUF must be the ones ggml_mixture_type() chooses, and for several
// mixtures every quantized tensor's bytes must be nwc.quant.ggml's blocks, byte for byte.
#include "ggml_blocks.hpp"
#include "ggml_mixture.hpp"
#include "ggml_reference.hpp"
#include "ggml_types.hpp"
#include "nwc/testing/stage_harness.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>

using namespace nwc::test;
using nwc::ggml::Mixture;
using nwc::ggml::MixtureChoice;
using nwc::ggml::Type;

namespace {

// ---- llama.cpp's quantizer, declared by hand from llama.h ---------------------------------------

struct LlamaImatrixData { // struct llama_model_imatrix_data
  const char *name;
  const float *data;
  size_t size;
};

// llama_model_quantize_params. The fields up to prune_layers are llama.h's; this build's struct is
// 64 bytes (llama_model_quantize_default_params writes two more 32-bit fields after prune_layers),
// so the tail keeps whatever the defaults hold there. Only nthread, ftype and imatrix are changed;
// the imatrix offset (24) is confirmed by the "have importance matrix data" log line.
struct LlamaQuantizeParams {
  int32_t nthread;
  int32_t ftype;
  int32_t output_tensor_type;
  int32_t token_embedding_type;
  bool allow_requantize, quantize_output_tensor, only_copy, pure, keep_split, dry_run;
  const LlamaImatrixData *imatrix;
  const void *kv_overrides;
  const void *tt_overrides;
  const int32_t *prune_layers;
  unsigned char tail[72];
};
static_assert(offsetof(LlamaQuantizeParams, imatrix) == 24);
static_assert(offsetof(LlamaQuantizeParams, tail) == 56);

struct Llama {
  LlamaQuantizeParams (*default_params)();
  uint32_t (*quantize)(const char *in, const char *out, const LlamaQuantizeParams *p);
  void (*log_set)(void (*cb)(int level, const char *text, void *user), void *user);
  std::vector<std::string> log;

  static Llama &get() {
    static Llama lib = load();
    return lib;
  }

private:
  static Llama load() {
    GgmlBase::get(); // libggml-base.so first: libllama finds it by soname (RUNPATH $ORIGIN too)
    void *h = open_reference_library("libllama.v0.5.0.so");
    const char *n = "libllama.v0.5.0.so";
    Llama l{};
    l.default_params =
        reference_symbol<decltype(l.default_params)>(h, n, "llama_model_quantize_default_params");
    l.quantize = reference_symbol<decltype(l.quantize)>(h, n, "llama_model_quantize");
    l.log_set = reference_symbol<decltype(l.log_set)>(h, n, "llama_log_set");
    return l;
  }
};

// ---- GGUF (version 3) files: write F32 models, read tensor types and data
// -------------------------

class GgufWriter {
public:
  void kv_u32(const std::string &k, uint32_t v) {
    key(k, 4);
    put(v);
    ++n_kv_;
  }
  void kv_f32(const std::string &k, float v) {
    key(k, 6);
    put(v);
    ++n_kv_;
  }
  void kv_str(const std::string &k, const std::string &v) {
    key(k, 8);
    str(v);
    ++n_kv_;
  }
  // dims as ggml's ne: ne[0] = row length (columns)
  void tensor(const std::string &name, std::vector<uint64_t> ne, std::vector<float> data) {
    tensors_.push_back({name, std::move(ne), std::move(data)});
  }
  void write(const std::filesystem::path &p) {
    std::vector<uint8_t> out;
    auto raw = [&out](const void *d, size_t n) {
      const auto *b = static_cast<const uint8_t *>(d);
      out.insert(out.end(), b, b + n);
    };
    raw("GGUF", 4);
    const uint32_t version = 3;
    raw(&version, 4);
    const uint64_t nt = tensors_.size(), nk = n_kv_;
    raw(&nt, 8);
    raw(&nk, 8);
    raw(kv_.data(), kv_.size());
    uint64_t offset = 0;
    for (const auto &t : tensors_) {
      const uint64_t len = t.name.size();
      raw(&len, 8);
      raw(t.name.data(), t.name.size());
      const auto nd = static_cast<uint32_t>(t.ne.size());
      raw(&nd, 4);
      for (uint64_t d : t.ne) raw(&d, 8);
      const uint32_t type = 0; // F32
      raw(&type, 4);
      raw(&offset, 8);
      offset = (offset + t.data.size() * 4 + 31) / 32 * 32;
    }
    out.resize((out.size() + 31) / 32 * 32, 0);
    for (const auto &t : tensors_) {
      raw(t.data.data(), t.data.size() * 4);
      out.resize((out.size() + 31) / 32 * 32, 0);
    }
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char *>(out.data()), static_cast<std::streamsize>(out.size()));
    if (!f) throw std::runtime_error("cannot write " + p.string());
  }

private:
  struct T {
    std::string name;
    std::vector<uint64_t> ne;
    std::vector<float> data;
  };
  template <class V> void put(V v) {
    const auto *b = reinterpret_cast<const uint8_t *>(&v);
    kv_.insert(kv_.end(), b, b + sizeof(V));
  }
  void str(const std::string &s) {
    put(static_cast<uint64_t>(s.size()));
    kv_.insert(kv_.end(), s.begin(), s.end());
  }
  void key(const std::string &k, uint32_t type) {
    str(k);
    put(type);
  }
  std::vector<uint8_t> kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

struct GgufTensor {
  uint32_t type = 0;
  std::vector<uint64_t> ne;
  uint64_t offset = 0; // absolute, in the file
};

std::map<std::string, GgufTensor> read_gguf(const std::vector<uint8_t> &f) {
  size_t at = 0;
  auto need = [&](size_t n) {
    if (at + n > f.size()) throw std::runtime_error("truncated GGUF file");
  };
  auto u32 = [&] {
    need(4);
    uint32_t v;
    std::memcpy(&v, f.data() + at, 4);
    at += 4;
    return v;
  };
  auto u64 = [&] {
    need(8);
    uint64_t v;
    std::memcpy(&v, f.data() + at, 8);
    at += 8;
    return v;
  };
  auto str = [&] {
    const uint64_t n = u64();
    need(n);
    std::string s(reinterpret_cast<const char *>(f.data() + at), n);
    at += n;
    return s;
  };
  if (f.size() < 4 || std::memcmp(f.data(), "GGUF", 4) != 0) throw std::runtime_error("not GGUF");
  at = 4;
  if (u32() != 3) throw std::runtime_error("GGUF version is not 3");
  const uint64_t n_tensors = u64(), n_kv = u64();
  uint64_t alignment = 32;
  auto skip_value = [&](uint32_t type, auto &&self) -> void {
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8) {
      str();
    } else if (type == 9) {
      const uint32_t et = u32();
      const uint64_t n = u64();
      for (uint64_t i = 0; i < n; ++i) self(et, self);
    } else if (type < 13) {
      need(sizes[type]);
      at += sizes[type];
    } else {
      throw std::runtime_error("unknown GGUF value type");
    }
  };
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string k = str();
    const uint32_t type = u32();
    if (k == "general.alignment" && type == 4)
      alignment = u32();
    else
      skip_value(type, skip_value);
  }
  std::map<std::string, GgufTensor> out;
  std::vector<std::string> order;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const std::string name = str();
    GgufTensor t;
    const uint32_t nd = u32();
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(u64());
    t.type = u32();
    t.offset = u64();
    out[name] = t;
  }
  const uint64_t data = (at + alignment - 1) / alignment * alignment;
  for (auto &[name, t] : out) t.offset += data;
  return out;
}

// ---- the models --------------------------------------------------------------------------------

struct Shape {
  int layers, embd, ff, heads, heads_kv, vocab;
  bool tied;
};

struct Model {
  Shape shape;
  // GGUF name -> ne and data, in llama.cpp's order (by layer, then name)
  std::map<std::string, std::pair<std::vector<uint64_t>, std::vector<float>>> tensors;
};

Model make_model(const Shape &s, uint64_t seed) {
  Model m{s, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto add = [&](const std::string &name, std::vector<uint64_t> ne) {
    size_t n = 1;
    for (uint64_t d : ne) n *= static_cast<size_t>(d);
    std::vector<float> v(n);
    const double scale = ne.size() == 1 ? 1.0 : 0.02 * std::exp(0.5 * normal(rng));
    for (auto &x : v) {
      double y = normal(rng) * scale;
      if (ne.size() > 1 && (rng() % 200) == 0) y *= 12.0; // outliers
      x = static_cast<float>(ne.size() == 1 ? 1.0 + 0.1 * y : y);
    }
    m.tensors[name] = {std::move(ne), std::move(v)};
  };
  const auto E = static_cast<uint64_t>(s.embd), F = static_cast<uint64_t>(s.ff),
             V = static_cast<uint64_t>(s.vocab);
  const uint64_t kv = E / static_cast<uint64_t>(s.heads) * static_cast<uint64_t>(s.heads_kv);
  add("token_embd.weight", {E, V});
  add("output_norm.weight", {E});
  if (!s.tied) add("output.weight", {E, V});
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {E});
    add(p + "attn_q.weight", {E, E});
    add(p + "attn_k.weight", {E, kv});
    add(p + "attn_v.weight", {E, kv});
    add(p + "attn_output.weight", {E, E});
    add(p + "ffn_norm.weight", {E});
    add(p + "ffn_gate.weight", {E, F});
    add(p + "ffn_up.weight", {E, F});
    add(p + "ffn_down.weight", {F, E});
  }
  return m;
}

void write_model(const Model &m, const std::filesystem::path &p) {
  GgufWriter w;
  const Shape &s = m.shape;
  w.kv_str("general.architecture", "llama");
  w.kv_u32("llama.context_length", 128);
  w.kv_u32("llama.embedding_length", static_cast<uint32_t>(s.embd));
  w.kv_u32("llama.block_count", static_cast<uint32_t>(s.layers));
  w.kv_u32("llama.feed_forward_length", static_cast<uint32_t>(s.ff));
  w.kv_u32("llama.attention.head_count", static_cast<uint32_t>(s.heads));
  w.kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(s.heads_kv));
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.kv_u32("llama.vocab_size", static_cast<uint32_t>(s.vocab));
  for (const auto &[name, t] : m.tensors) w.tensor(name, t.first, t.second);
  w.write(p);
}

int layer_of(const std::string &name) {
  int n = -1;
  return std::sscanf(name.c_str(), "blk.%d.", &n) == 1 ? n : -1;
}

// A positive imatrix per 2-D weight (ne[0] entries), deterministic.
std::map<std::string, std::vector<float>> make_imatrix(const Model &m) {
  std::map<std::string, std::vector<float>> im;
  std::mt19937_64 rng(99);
  std::lognormal_distribution<double> ln(0.0, 1.0);
  for (const auto &[name, t] : m.tensors) {
    if (t.first.size() < 2) continue;
    std::vector<float> v(static_cast<size_t>(t.first[0]));
    for (auto &x : v) x = static_cast<float>(ln(rng));
    im[name] = std::move(v);
  }
  return im;
}

struct Quantized {
  uint32_t status = 1;
  std::vector<uint8_t> file;
  std::map<std::string, GgufTensor> tensors;
  std::vector<std::string> log;
};

Quantized llama_quantize(const std::filesystem::path &in, const std::filesystem::path &out,
                         int ftype, bool pure,
                         const std::map<std::string, std::vector<float>> *imatrix) {
  Llama &l = Llama::get();
  Quantized q;
  l.log_set(
      [](int, const char *text, void *user) {
        static_cast<std::vector<std::string> *>(user)->emplace_back(text ? text : "");
      },
      &q.log);
  LlamaQuantizeParams p;
  std::memset(&p, 0, sizeof p);
  p = l.default_params();
  p.nthread = 2;
  p.ftype = ftype;
  p.pure = pure;
  std::vector<LlamaImatrixData> entries;
  if (imatrix) {
    for (const auto &[name, v] : *imatrix) entries.push_back({name.c_str(), v.data(), v.size()});
    entries.push_back({nullptr, nullptr, 0});
    p.imatrix = entries.data();
  }
  q.status = l.quantize(in.c_str(), out.c_str(), &p);
  l.log_set(nullptr, nullptr);
  if (q.status == 0) {
    q.file = read_bytes(out);
    q.tensors = read_gguf(q.file);
  }
  return q;
}

std::string joined(const std::vector<std::string> &log) {
  std::string s;
  for (const auto &l : log) s += l;
  return s;
}

// Quantizes one tensor with nwc.quant.ggml and returns ggml's bytes for it.
std::vector<uint8_t> plugin_bytes(Type t, const std::vector<float> &w, int64_t rows, int64_t cols,
                                  const std::vector<float> *imatrix, const std::string &name) {
  const auto &tt = nwc::ggml::traits(t);
  const int64_t group = t == Type::F16 ? cols : tt.block;
  Instance inst("nwc.quant.ggml", {opt_enum("type", tt.name)});
  REQUIRE(inst.ok());
  const int64_t n = rows * cols / group;
  std::vector<int32_t> sym(w.size());
  std::vector<float> dq(w.size()), imp;
  Block block(name, rows, cols, 0, cols);
  if (imatrix) {
    imp.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) imp[i] = (*imatrix)[i % static_cast<size_t>(cols)];
    block.info.importance = imp.data();
  }
  View in(w.data(), n, group), s(sym.data(), n, group), d(dq.data(), n, group);
  VecSink side;
  const auto *q = inst.iface<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  REQUIRE(q->quantize(inst.get(), block.get(), in.get(), s.get(), d.get(), side.get()) == NWC_OK);
  const size_t blocks = w.size() / static_cast<size_t>(tt.block);
  std::vector<uint8_t> out(blocks * static_cast<size_t>(tt.block_bytes));
  for (size_t k = 0; k < blocks; ++k)
    nwc::ggml::pack_block(t, sym.data() + k * static_cast<size_t>(tt.block),
                          side.bytes.data() + k * static_cast<size_t>(tt.side_bytes),
                          out.data() + k * static_cast<size_t>(tt.block_bytes));
  return out;
}

constexpr Mixture kAllMixtures[] = {Mixture::Q3_K_S, Mixture::Q3_K_M, Mixture::Q3_K_L,
                                    Mixture::Q4_K_S, Mixture::Q4_K_M, Mixture::Q5_K_S,
                                    Mixture::Q5_K_M, Mixture::Q6_K,   Mixture::IQ4_XS};

struct Tally {
  size_t types = 0, tensors_bytes = 0;
};

// Quantizes the model with llama_model_quantize (ftype, pure, imatrix or not) and compares every
// tensor's type with `expect`; with `bytes`, also every quantized tensor's bytes with the plugin's.
void run_and_compare(const Model &m, const std::filesystem::path &in, const TempDir &dir, int ftype,
                     bool pure, const std::map<std::string, std::vector<float>> *imatrix,
                     const std::map<std::string, MixtureChoice> &expect, bool bytes, Tally &tally) {
  const Quantized q = llama_quantize(in, dir / "model-q.gguf", ftype, pure, imatrix);
  INFO(joined(q.log).substr(0, 4000));
  REQUIRE(q.status == 0);
  if (imatrix)
    CHECK(joined(q.log).find("have importance matrix data with " + std::to_string(imatrix->size()) +
                             " entries") != std::string::npos);
  REQUIRE(q.tensors.size() == m.tensors.size());
  for (const auto &[name, c] : expect) {
    const std::string tensor = name; // (clang < 16 cannot capture a structured binding)
    CAPTURE(tensor);
    const uint32_t want = c.kind == MixtureChoice::Kind::Kept ? static_cast<uint32_t>(GGML_F32)
                                                              : static_cast<uint32_t>(c.type);
    CHECK(q.tensors.at(name).type == want);
    ++tally.types;
  }
  if (!bytes) return;
  // The output's quantized tensors are the plugin's blocks, byte for byte.
  for (const auto &[name, c] : expect) {
    if (c.kind != MixtureChoice::Kind::Quantized) continue;
    const std::string tensor = name;
    CAPTURE(tensor);
    const auto &[ne, data] = m.tensors.at(name);
    const auto cols = static_cast<int64_t>(ne[0]), rows = static_cast<int64_t>(ne[1]);
    const std::vector<uint8_t> ours =
        plugin_bytes(c.type, data, rows, cols, imatrix ? &imatrix->at(name) : nullptr, name);
    const GgufTensor &gt = q.tensors.at(name);
    REQUIRE(gt.offset + ours.size() <= q.file.size());
    CHECK(std::memcmp(q.file.data() + gt.offset, ours.data(), ours.size()) == 0);
    ++tally.tensors_bytes;
  }
}

// Every transcribed mixture, without and with an imatrix: tensor types as ggml_mixture_type()
// chooses them; for the mixtures in `bytes_for` also the bytes.
void compare_mixtures(const Shape &shape, std::initializer_list<Mixture> bytes_for) {
  TempDir dir;
  const Model m = make_model(shape, 1234);
  const auto in = dir / "model-f32.gguf";
  write_model(m, in);
  const auto imatrix = make_imatrix(m);
  nwc::ggml::MixtureModel mm;
  mm.n_layers = shape.layers;
  mm.n_head = shape.heads;
  mm.n_head_kv = shape.heads_kv;
  mm.tied_embeddings = shape.tied;
  Tally tally;
  for (Mixture mix : kAllMixtures) {
    for (bool with_im : {false, true}) {
      const std::string mixture = nwc::ggml::mixture_name(mix);
      CAPTURE(mixture);
      CAPTURE(with_im);
      mm.has_imatrix = with_im;
      std::map<std::string, MixtureChoice> expect;
      for (const auto &[name, t] : m.tensors)
        expect[name] = nwc::ggml::ggml_mixture_type(mix, name, std::max(0, layer_of(name)),
                                                    static_cast<int64_t>(t.first[0]),
                                                    static_cast<int>(t.first.size()), mm);
      const bool bytes = std::find(bytes_for.begin(), bytes_for.end(), mix) != bytes_for.end();
      run_and_compare(m, in, dir, nwc::ggml::mixture_ftype(mix), false,
                      with_im ? &imatrix : nullptr, expect, bytes, tally);
    }
  }
  MESSAGE("llama_model_quantize, ", shape.layers, " layers, embd ", shape.embd, ", ff ", shape.ff,
          ", 9 mixtures x (no imatrix, imatrix): ", tally.types, " tensor types as transcribed, ",
          tally.tensors_bytes, " quantized tensors byte for byte the plugin's");
}

// llama-quantize --pure with each type of the plugin: every weight gets the type or its fallback
// (llama_fallback_type), and its bytes are the plugin's.
void compare_pure(const Shape &shape) {
  TempDir dir;
  const Model m = make_model(shape, 4321);
  const auto in = dir / "model-f32.gguf";
  write_model(m, in);
  const auto imatrix = make_imatrix(m);
  // llama_ftype of each type as the default type of a file type
  const std::pair<int, Type> ftypes[] = {{2, Type::Q4_0},  {3, Type::Q4_1},    {8, Type::Q5_0},
                                         {9, Type::Q5_1},  {7, Type::Q8_0},    {10, Type::Q2_K},
                                         {11, Type::Q3_K}, {14, Type::Q4_K},   {16, Type::Q5_K},
                                         {18, Type::Q6_K}, {25, Type::IQ4_NL}, {30, Type::IQ4_XS}};
  Tally tally;
  for (const auto &[ftype, type] : ftypes) {
    for (bool with_im : {false, true}) {
      const std::string type_name = nwc::ggml::traits(type).name;
      CAPTURE(type_name);
      CAPTURE(with_im);
      std::map<std::string, MixtureChoice> expect;
      for (const auto &[name, t] : m.tensors) {
        MixtureChoice c;
        if (t.first.size() >= 2) {
          c.kind = MixtureChoice::Kind::Quantized;
          c.type = nwc::ggml::llama_fallback_type(type, static_cast<int64_t>(t.first[0]));
        }
        expect[name] = c;
      }
      run_and_compare(m, in, dir, ftype, true, with_im ? &imatrix : nullptr, expect, true, tally);
    }
  }
  MESSAGE("llama_model_quantize --pure, embd ", shape.embd, ", ff ", shape.ff,
          ", 12 types x (no imatrix, imatrix): ", tally.types, " tensor types, ",
          tally.tensors_bytes, " quantized tensors byte for byte the plugin's");
}

} // namespace

TEST_CASE("ggml mixture: llama.cpp's fallback types") {
  using nwc::ggml::llama_fallback_type;
  CHECK(llama_fallback_type(Type::Q4_K, 4096) == Type::Q4_K);
  CHECK(llama_fallback_type(Type::Q4_K, 64) == Type::Q5_0);
  CHECK(llama_fallback_type(Type::Q4_K, 96) == Type::Q5_0);
  CHECK(llama_fallback_type(Type::Q4_K, 172) == Type::F16);
  CHECK(llama_fallback_type(Type::Q5_K, 384) == Type::Q5_1);
  CHECK(llama_fallback_type(Type::Q6_K, 64) == Type::Q8_0);
  CHECK(llama_fallback_type(Type::Q2_K, 64) == Type::Q4_0);
  CHECK(llama_fallback_type(Type::Q3_K, 128) == Type::Q4_0);
  CHECK(llama_fallback_type(Type::IQ4_XS, 64) == Type::IQ4_NL);
  CHECK(llama_fallback_type(Type::IQ4_XS, 172) == Type::F16);
  CHECK(llama_fallback_type(Type::Q4_0, 64) == Type::Q4_0);
  for (Type t : {Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1, Type::Q8_0, Type::IQ4_NL}) {
    CHECK(llama_fallback_type(t, 96) == t);
    CHECK(llama_fallback_type(t, 172) == Type::F16);
  }
  CHECK(llama_fallback_type(Type::F16, 172) == Type::F16);
}

TEST_CASE("ggml mixture: names and rules") {
  using nwc::ggml::ggml_mixture_type;
  using nwc::ggml::gguf_tensor_name;
  CHECK(nwc::ggml::mixture_from_name("Q4_K_M") == Mixture::Q4_K_M);
  CHECK_FALSE(nwc::ggml::mixture_from_name("q4_k_m").has_value());
  CHECK(nwc::ggml::mixture_ftype(Mixture::Q4_K_M) == 15);
  CHECK(nwc::ggml::mixture_ftype(Mixture::IQ4_XS) == 30);
  int layer = 0;
  CHECK(gguf_tensor_name("model.layers.12.self_attn.v_proj.weight", &layer) ==
        "blk.12.attn_v.weight");
  CHECK(layer == 12);
  CHECK(gguf_tensor_name("model.layers.3.mlp.down_proj.weight") == "blk.3.ffn_down.weight");
  CHECK(gguf_tensor_name("model.embed_tokens.weight") == "token_embd.weight");
  CHECK(gguf_tensor_name("lm_head.weight", &layer) == "output.weight");
  CHECK(layer == -1);
  CHECK(gguf_tensor_name("something.else") == "something.else");

  // Q4_K_M on a 32-layer Llama: attn_v and ffn_down of layers 0-3, 6, 9, …, 27 and 28-31 get q6_K
  // (use_more_bits), the rest q4_K; the output q6_K; norms are kept.
  nwc::ggml::MixtureModel m;
  m.n_layers = 32;
  m.n_head = 32;
  m.n_head_kv = 8;
  std::string q6;
  for (int i = 0; i < 32; ++i) {
    const auto c = ggml_mixture_type(Mixture::Q4_K_M, "blk." + std::to_string(i) + ".attn_v.weight",
                                     i, 4096, 2, m);
    REQUIRE(c.kind == MixtureChoice::Kind::Quantized);
    if (c.type == Type::Q6_K) q6 += std::to_string(i) + " ";
    const auto d = ggml_mixture_type(
        Mixture::Q4_K_M, "blk." + std::to_string(i) + ".ffn_down.weight", i, 14336, 2, m);
    CHECK(d.type == c.type);
    CHECK(ggml_mixture_type(Mixture::Q4_K_M, "blk." + std::to_string(i) + ".attn_q.weight", i, 4096,
                            2, m)
              .type == Type::Q4_K);
  }
  CHECK(q6 == "0 1 2 3 6 9 12 15 18 21 24 27 28 29 30 31 ");
  CHECK(ggml_mixture_type(Mixture::Q4_K_M, "output.weight", 0, 4096, 2, m).type == Type::Q6_K);
  CHECK(ggml_mixture_type(Mixture::Q4_K_M, "token_embd.weight", 0, 4096, 2, m).type == Type::Q4_K);
  CHECK(ggml_mixture_type(Mixture::Q4_K_M, "blk.0.attn_norm.weight", 0, 4096, 1, m).kind ==
        MixtureChoice::Kind::Kept);
  // Q3_K_M: the first two attn_v q5_K, attn_output q4_K, ffn_down q5_K below n/16.
  CHECK(ggml_mixture_type(Mixture::Q3_K_M, "blk.1.attn_v.weight", 1, 4096, 2, m).type ==
        Type::Q5_K);
  CHECK(ggml_mixture_type(Mixture::Q3_K_M, "blk.2.attn_v.weight", 2, 4096, 2, m).type ==
        Type::Q4_K);
  CHECK(ggml_mixture_type(Mixture::Q3_K_M, "blk.5.attn_output.weight", 5, 4096, 2, m).type ==
        Type::Q4_K);
  CHECK(ggml_mixture_type(Mixture::Q3_K_M, "blk.1.ffn_down.weight", 1, 14336, 2, m).type ==
        Type::Q5_K);
  CHECK(ggml_mixture_type(Mixture::Q3_K_M, "blk.2.ffn_down.weight", 2, 14336, 2, m).type ==
        Type::Q4_K);
  // IQ4_XS: GQA >= 4 lifts attn_v to q5_K; ffn_down of the first n/8 layers q5_K without imatrix.
  CHECK(ggml_mixture_type(Mixture::IQ4_XS, "blk.9.attn_v.weight", 9, 4096, 2, m).type ==
        Type::Q5_K);
  CHECK(ggml_mixture_type(Mixture::IQ4_XS, "blk.3.ffn_down.weight", 3, 14336, 2, m).type ==
        Type::Q5_K);
  m.has_imatrix = true;
  CHECK(ggml_mixture_type(Mixture::IQ4_XS, "blk.3.ffn_down.weight", 3, 14336, 2, m).type ==
        Type::IQ4_XS);
  // Shapes: the fallback applies after the rules (an output of 80 columns: q8_0, then f16).
  CHECK(ggml_mixture_type(Mixture::Q4_K_M, "blk.0.ffn_down.weight", 0, 172, 2, m).type ==
        Type::F16);
  CHECK(ggml_mixture_type(Mixture::Q4_K_M, "output.weight", 0, 64, 2, m).type == Type::Q8_0);
  CHECK(ggml_mixture_type(Mixture::Q4_K_M, "output.weight", 0, 80, 2, m).type == Type::F16);
}

TEST_CASE("ggml mixture: llama_model_quantize, 16 layers, GQA 4, rows of 256 and 512") {
  compare_mixtures({16, 256, 512, 8, 2, 256, false},
                   {Mixture::Q3_K_M, Mixture::Q4_K_M, Mixture::IQ4_XS});
}

TEST_CASE("ggml mixture: llama_model_quantize, 8 layers, no GQA, tied embeddings") {
  compare_mixtures({8, 256, 256, 4, 4, 256, true}, {Mixture::Q5_K_M, Mixture::Q6_K});
}

TEST_CASE("ggml mixture: llama_model_quantize, rows of 96 and 172 columns (fallbacks)") {
  compare_mixtures({4, 96, 172, 3, 1, 128, false}, {Mixture::Q4_K_M, Mixture::Q3_K_S});
}

TEST_CASE("ggml mixture: llama_model_quantize, rows of 80 and 172 columns (f16)") {
  compare_mixtures({2, 80, 172, 5, 5, 64, false}, {Mixture::Q4_K_S});
}

TEST_CASE("ggml mixture: llama-quantize --pure, every type and its fallback, rows of 256 and 320") {
  compare_pure({2, 256, 320, 4, 2, 128, false});
}

TEST_CASE("ggml mixture: llama-quantize --pure, every type and its fallback, rows of 96 and 172") {
  compare_pure({2, 96, 172, 3, 3, 64, true});
}
