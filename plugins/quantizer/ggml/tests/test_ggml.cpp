// nwc.quant.ggml through its C ABI against llama.cpp's libggml-base.so: every type's block bytes
// byte for byte as ggml_quantize_chunk() writes them, with and without an importance matrix, on
// random rows with outliers, real weights (stories260K and aidreams260K, as they are and
// concatenated into 256-column rows) and the diagonal of a Hessian; dequantized floats bit for bit
// as ggml's to_float; the fp16 conversions; the llama.cpp fallback option; the cost in bits with
// nwc.entropy.raw; rejection of corrupt side info and symbols.
#include "ggml_blocks.hpp"
#include "ggml_quants.hpp"
#include "ggml_reference.hpp"
#include "ggml_types.hpp"
#include "nwc/testing/stage_harness.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

using namespace nwc::test;
using nwc::ggml::Type;

namespace {

constexpr const char *kId = "nwc.quant.ggml";

std::vector<Type> quant_types() { // every type of the plugin but f16
  std::vector<Type> out;
  for (const auto &tt : nwc::ggml::kTypes)
    if (tt.type != Type::F16) out.push_back(tt.type);
  return out;
}

const nwc_quantizer_interface &quantizer(Instance &inst) {
  const auto *q = inst.iface<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  REQUIRE(q != nullptr);
  return *q;
}

// One tensor coded by the plugin as a whole-row column block, chunks of `group` columns (what
// nwc.chunk.group passes on: the row-major matrix seen as [rows·cols/group, group]).
struct Coded {
  nwc_status status = NWC_E_INTERNAL;
  std::string error;
  std::vector<int32_t> symbols;
  std::vector<float> dequantized;
  std::vector<uint8_t> side;
};

Coded encode(Instance &inst, const std::vector<float> &w, int64_t rows, int64_t cols, int64_t group,
             const std::vector<float> *imatrix = nullptr,
             const char *tensor = "blk.0.ffn_up.weight") {
  Coded out;
  const int64_t n = rows * cols / group;
  out.symbols.assign(w.size(), INT32_MIN);
  out.dequantized.assign(w.size(), NAN);
  std::vector<float> importance;
  Block block(tensor, rows, cols, 0, cols);
  if (imatrix) { // the per-column imatrix, one weight per latent element
    importance.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) importance[i] = (*imatrix)[i % static_cast<size_t>(cols)];
    block.info.importance = importance.data();
  }
  View in(w.data(), n, group), sym(out.symbols.data(), n, group),
      dq(out.dequantized.data(), n, group);
  VecSink side;
  out.status =
      quantizer(inst).quantize(inst.get(), block.get(), in.get(), sym.get(), dq.get(), side.get());
  out.side = side.bytes;
  if (out.status != NWC_OK) out.error = inst.last_error();
  return out;
}

nwc_status decode(Instance &inst, const std::vector<int32_t> &symbols,
                  const std::vector<uint8_t> &side, int64_t rows, int64_t cols, int64_t group,
                  std::vector<float> &out, const char *tensor = "blk.0.ffn_up.weight") {
  const int64_t n = rows * cols / group;
  out.assign(symbols.size(), NAN);
  Block block(tensor, rows, cols, 0, cols);
  View sym(symbols.data(), n, group), lat(out.data(), n, group);
  return quantizer(inst).dequantize(inst.get(), block.get(), sym.get(),
                                    nwc_bytes{side.data(), side.size()}, lat.get());
}

// The plugin's output as ggml bytes: every block's symbols and side bytes repacked, in order.
std::vector<uint8_t> packed(Type t, const Coded &c) {
  const auto &tt = nwc::ggml::traits(t);
  const size_t blocks = c.symbols.size() / static_cast<size_t>(tt.block);
  REQUIRE(c.side.size() == blocks * static_cast<size_t>(tt.side_bytes));
  std::vector<uint8_t> out(blocks * static_cast<size_t>(tt.block_bytes));
  for (size_t k = 0; k < blocks; ++k)
    nwc::ggml::pack_block(t, c.symbols.data() + k * static_cast<size_t>(tt.block),
                          c.side.data() + k * static_cast<size_t>(tt.side_bytes),
                          out.data() + k * static_cast<size_t>(tt.block_bytes));
  return out;
}

// The plugin's export_native (ABI 1.5) of a coded tensor: ggml's block bytes, row after row, with
// the layout named for the type.
std::vector<uint8_t> exported(Instance &inst, Type t, const Coded &c, int64_t rows, int64_t cols,
                              int64_t group, const char *tensor = "blk.0.ffn_up.weight") {
  const auto &q = quantizer(inst);
  REQUIRE(q.struct_size >= offsetof(nwc_quantizer_interface, export_native) + sizeof(void *));
  REQUIRE(static_cast<bool>(q.export_native));
  Block block(tensor, rows, cols, 0, cols);
  View sym(c.symbols.data(), rows * cols / group, group);
  nwc_native_layout layout{};
  layout.struct_size = sizeof(layout);
  VecSink out;
  const nwc_status s = q.export_native(inst.get(), block.get(), sym.get(),
                                       nwc_bytes{c.side.data(), c.side.size()}, &layout, out.get());
  INFO(inst.last_error());
  REQUIRE(s == NWC_OK);
  const auto &tt = nwc::ggml::traits(t);
  CHECK(std::string(layout.format) == "ggml");
  CHECK(std::string(layout.type) == tt.name);
  CHECK(layout.values_per_block == static_cast<uint64_t>(tt.block));
  CHECK(layout.bytes_per_block == static_cast<uint64_t>(tt.block_bytes));
  return out.bytes;
}

std::vector<uint8_t> ggml_bytes(Type t, const std::vector<float> &w, int64_t rows, int64_t cols,
                                const std::vector<float> *imatrix) {
  const GgmlBase &g = GgmlBase::get();
  const int id = static_cast<int>(t);
  std::vector<uint8_t> out(g.row_size(id, cols) * static_cast<size_t>(rows));
  const size_t n = g.quantize_chunk(id, w.data(), out.data(), 0, rows, cols,
                                    imatrix ? imatrix->data() : nullptr);
  REQUIRE(n == out.size());
  return out;
}

std::vector<float> ggml_to_float(Type t, const std::vector<uint8_t> &bytes, size_t count) {
  const GgmlBase &g = GgmlBase::get();
  const int id = static_cast<int>(t);
  std::vector<float> out(count, NAN);
  if (t == Type::F16) {
    for (size_t i = 0; i < count; ++i)
      out[i] = g.fp16_to_fp32(static_cast<uint16_t>(bytes[2 * i] | bytes[2 * i + 1] << 8));
    return out;
  }
  g.get_type_traits(id)->to_float(bytes.data(), out.data(), static_cast<int64_t>(count));
  return out;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

size_t first_difference(const std::vector<uint8_t> &a, const std::vector<uint8_t> &b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return i;
  return n;
}

// Blocks compared byte for byte per type and setting, reported at the end of the run.
std::map<std::string, size_t> &tally() {
  static std::map<std::string, size_t> t;
  return t;
}

// Codes w with the plugin and with ggml and requires identical bytes and floats. Returns the
// number of blocks compared.
size_t check_against_ggml(Type t, const std::vector<float> &w, int64_t rows, int64_t cols,
                          const std::vector<float> *imatrix, const std::string &what) {
  const auto &tt = nwc::ggml::traits(t);
  CAPTURE(what);
  const std::string type_name = tt.name;
  CAPTURE(type_name);
  CAPTURE(imatrix != nullptr);
  Instance inst(kId, {opt_enum("type", tt.name)});
  REQUIRE(inst.ok());
  const Coded c = encode(inst, w, rows, cols, tt.block, imatrix);
  INFO(c.error);
  REQUIRE(c.status == NWC_OK);
  const std::vector<uint8_t> ours = packed(t, c);
  const std::vector<uint8_t> ref = ggml_bytes(t, w, rows, cols, imatrix);
  CHECK(exported(inst, t, c, rows, cols, tt.block) == ours); // what GGUF export writes
  const size_t at = first_difference(ours, ref);
  if (at < ref.size() || ours.size() != ref.size()) {
    const size_t blk = at / static_cast<size_t>(tt.block_bytes);
    CAPTURE(blk);
    CAPTURE(at % static_cast<size_t>(tt.block_bytes));
    FAIL_CHECK("block bytes differ from ggml");
    return 0;
  }
  // Dequantized output (the encoder's and the decoder's) equals ggml's to_float bit for bit.
  const std::vector<float> ref_f = ggml_to_float(t, ref, w.size());
  CHECK(same_bits(c.dequantized, ref_f));
  std::vector<float> dec;
  REQUIRE(decode(inst, c.symbols, c.side, rows, cols, tt.block, dec) == NWC_OK);
  CHECK(same_bits(dec, ref_f));
  const size_t blocks = w.size() / static_cast<size_t>(tt.block);
  tally()[std::string(tt.name) + (imatrix ? " imatrix" : " plain")] += blocks;
  return blocks;
}

// Prints and clears the tally (each test case runs in its own process under ctest).
void report_tally(const char *what) {
  for (const auto &[k, v] : tally())
    MESSAGE(std::string(what), ": ", k, ": ", v, " blocks identical to ggml");
  tally().clear();
}

// Random rows: Gaussian with per-row scales, outliers, and blocks that are zero, constant, tiny,
// huge, one-signed or a single spike.
std::vector<float> synthetic(std::mt19937_64 &rng, int64_t rows, int64_t cols) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const double scale = 0.02 * std::exp(normal(rng));
    for (int64_t c = 0; c < cols; ++c) {
      double v = scale * normal(rng);
      if (uni(rng) < 0.01) v *= 10.0 + 40.0 * uni(rng); // outlier
      w[static_cast<size_t>(r * cols + c)] = static_cast<float>(v);
    }
    // Special 32-blocks (every type's blocks contain whole 32-blocks).
    for (int64_t b0 = 0; b0 < cols; b0 += 32) {
      const double u = uni(rng);
      float *x = w.data() + r * cols + b0;
      if (u < 0.03)
        std::fill(x, x + 32, 0.0f);
      else if (u < 0.05)
        std::fill(x, x + 32, static_cast<float>(scale));
      else if (u < 0.07)
        for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(1e-20 * normal(rng));
      else if (u < 0.08)
        for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(300.0 * normal(rng));
      else if (u < 0.10)
        for (int j = 0; j < 32; ++j) x[j] = std::fabs(x[j]);
      else if (u < 0.12)
        for (int j = 0; j < 32; ++j) x[j] = -std::fabs(x[j]);
      else if (u < 0.13) {
        std::fill(x, x + 32, 0.0f);
        x[static_cast<int>(uni(rng) * 31.99)] = static_cast<float>(scale * 5);
      }
    }
  }
  return w;
}

std::vector<float> random_imatrix(std::mt19937_64 &rng, int64_t cols) {
  std::lognormal_distribution<double> ln(0.0, 1.5);
  std::vector<float> im(static_cast<size_t>(cols));
  for (auto &v : im) v = static_cast<float>(ln(rng));
  return im;
}

// The diagonal of H = XᵀX / N for activations X with a few outlier features and correlated columns
// (what llama.cpp's imatrix holds: the mean squared activation of each input column).
std::vector<float> hessian_diagonal(std::mt19937_64 &rng, int64_t cols) {
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t samples = 512, rank = 16;
  std::vector<double> mix(static_cast<size_t>(rank * cols)), colscale(static_cast<size_t>(cols));
  for (auto &v : mix) v = normal(rng);
  for (int64_t c = 0; c < cols; ++c)
    colscale[static_cast<size_t>(c)] = (c % 97 == 3 ? 20.0 : 1.0) * std::exp(0.5 * normal(rng));
  std::vector<double> diag(static_cast<size_t>(cols), 0.0);
  std::vector<double> z(static_cast<size_t>(rank));
  for (int64_t s = 0; s < samples; ++s) {
    for (auto &v : z) v = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      double x = 0.3 * normal(rng);
      for (int64_t k = 0; k < rank; ++k)
        x += z[static_cast<size_t>(k)] * mix[static_cast<size_t>(k * cols + c)] / 4.0;
      x *= colscale[static_cast<size_t>(c)];
      diag[static_cast<size_t>(c)] += x * x;
    }
  }
  std::vector<float> out(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c)
    out[static_cast<size_t>(c)] =
        static_cast<float>(diag[static_cast<size_t>(c)] / static_cast<double>(samples));
  return out;
}

// ---- real weights: llama2.c checkpoints of the shared data --------------------------------------

struct Llama2c {
  int dim = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  std::vector<float> data;
  // [rows, cols] matrices of layer-stacked tensors, by offset in floats
  size_t wq = 0, wk = 0, wv = 0, wo = 0, w1 = 0, w2 = 0, w3 = 0, emb = 0;
};

Llama2c read_llama2c(const std::filesystem::path &p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  int32_t h[7];
  f.read(reinterpret_cast<char *>(h), sizeof h);
  Llama2c m;
  m.dim = h[0];
  m.hidden = h[1];
  m.layers = h[2];
  m.heads = h[3];
  m.kv_heads = h[4];
  m.vocab = std::abs(h[5]);
  const std::vector<uint8_t> rest((std::istreambuf_iterator<char>(f)), {});
  m.data.resize(rest.size() / 4);
  std::memcpy(m.data.data(), rest.data(), m.data.size() * 4);
  const auto D = static_cast<size_t>(m.dim), H = static_cast<size_t>(m.hidden),
             L = static_cast<size_t>(m.layers);
  const size_t kv = D * static_cast<size_t>(m.kv_heads) / static_cast<size_t>(m.heads);
  size_t at = 0;
  m.emb = at;
  at += static_cast<size_t>(m.vocab) * D;
  at += L * D; // rms_att
  m.wq = at;
  at += L * D * D;
  m.wk = at;
  at += L * D * kv;
  m.wv = at;
  at += L * D * kv;
  m.wo = at;
  at += L * D * D;
  at += L * D; // rms_ffn
  m.w1 = at;
  at += L * H * D;
  m.w2 = at;
  at += L * D * H;
  m.w3 = at;
  at += L * H * D;
  if (at > m.data.size()) throw std::runtime_error("truncated llama2.c file " + p.string());
  return m;
}

std::vector<float> slice(const Llama2c &m, size_t at, size_t count) {
  return std::vector<float>(m.data.begin() + static_cast<std::ptrdiff_t>(at),
                            m.data.begin() + static_cast<std::ptrdiff_t>(at + count));
}

std::vector<Llama2c> &real_models() {
  static std::vector<Llama2c> models = [] {
    std::vector<Llama2c> v;
    v.push_back(read_llama2c(stories260k()));
    v.push_back(read_llama2c(data_dir() / "models" / "aidreams260K" / "aidreams260K.bin"));
    return v;
  }();
  return models;
}

// ---- nwc.entropy.raw, loaded from the built plugin ----------------------------------------------

struct RawCoder {
  const nwc_plugin_vtable *vtable = nullptr;
  nwc_instance *inst = nullptr;
  const nwc_entropy_interface *iface = nullptr;
  RawCoder() {
    const auto path = plugin_dir() / "nwc-raw.so";
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) throw std::runtime_error("cannot load " + path.string() + ": " + dlerror());
    auto entry =
        reference_symbol<const nwc_module *(*)(uint32_t)>(h, "nwc-raw.so", "nwc_module_entry");
    const nwc_module *m = entry(NWC_ABI_VERSION);
    if (!m) throw std::runtime_error("nwc-raw.so refused the ABI version");
    for (uint32_t i = 0; i < m->plugin_count(); ++i)
      if (std::string(m->descriptor(i)->id) == "nwc.entropy.raw") vtable = m->vtable(i);
    if (!vtable) throw std::runtime_error("nwc-raw.so has no nwc.entropy.raw");
    static TestHost host;
    nwc_options o{sizeof(nwc_options), 0, nullptr};
    if (vtable->create(&host.host, &o, &inst) != NWC_OK)
      throw std::runtime_error("cannot create nwc.entropy.raw");
    iface = static_cast<const nwc_entropy_interface *>(
        vtable->get_interface(inst, NWC_ENTROPY_INTERFACE));
  }
  ~RawCoder() {
    if (inst) vtable->destroy(inst);
  }
  size_t encoded_size(const std::vector<int32_t> &symbols) {
    View in(symbols.data(), 1, static_cast<int64_t>(symbols.size()));
    VecSink out;
    REQUIRE(iface->encode(inst, in.get(), nullptr, out.get()) == NWC_OK);
    return out.bytes.size();
  }
};

} // namespace

TEST_CASE("ggml: descriptor and options") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_QUANTIZER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 7);
  CHECK(std::string(d.options[0].key) == "type");
  CHECK(d.options[0].type == NWC_OPT_ENUM);
  CHECK(d.options[0].choice_count == 13);
  CHECK(std::string(d.options[0].default_value.u.s) == "q8_0"); // llama-quantize's default
  CHECK(std::string(d.options[1].key) == "fallback");
  CHECK(std::string(d.options[2].key) == "mixture");
  CHECK(d.options[2].choice_count == 10);
  CHECK(std::string(d.options[2].default_value.u.s) == "none");
  for (uint32_t i = 0; i < d.option_count; ++i)
    CHECK((d.options[i].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0);
  Instance bad(kId, {opt_enum("type", "q4_k")}); // ggml's spelling is q4_K
  CHECK(bad.status == NWC_E_INVALID_OPTION);
  // A mixture needs the model's block count.
  Instance no_layers(kId, {opt_enum("mixture", "Q4_K_M")});
  CHECK(no_layers.status == NWC_E_INVALID_ARG);
}

TEST_CASE("ggml: the reference library's types are the plugin's") {
  const GgmlBase &g = GgmlBase::get();
  MESSAGE("reference: ggml ", std::string(g.version()), " commit ", std::string(g.commit()));
  for (const auto &tt : nwc::ggml::kTypes) {
    const std::string type_name = tt.name;
    CAPTURE(type_name);
    const int id = static_cast<int>(tt.type);
    CHECK(std::string(g.type_name(id)) == tt.name);
    CHECK(g.blck_size(id) == tt.block);
    CHECK(g.type_size(id) == static_cast<size_t>(tt.block_bytes));
    const GgmlTypeTraits *t = g.get_type_traits(id);
    REQUIRE(t != nullptr);
    CHECK(std::string(t->type_name) == tt.name); // the hand-declared struct matches
    CHECK(t->blck_size == tt.block);
    CHECK(t->type_size == static_cast<size_t>(tt.block_bytes));
    const bool has_to_float = t->to_float != nullptr;
    CHECK(has_to_float);
    // None of these types needs an importance matrix in ggml (only iq2_xxs, iq2_xs, iq1_s do):
    // every one is tested without and with one.
    CHECK_FALSE(g.quantize_requires_imatrix(id));
  }
}

TEST_CASE("ggml: fp16 conversions equal ggml's") {
  const GgmlBase &g = GgmlBase::get();
  for (uint32_t h = 0; h < 0x10000u; ++h) { // every half: to float, and back
    const auto hh = static_cast<uint16_t>(h);
    if (!nwc::ggml::half_is_finite(hh)) continue;
    const float a = nwc::ggml::fp16_to_fp32(hh), b = g.fp16_to_fp32(hh);
    REQUIRE(std::memcmp(&a, &b, 4) == 0);
    REQUIRE(nwc::ggml::fp32_to_fp16(a) == g.fp32_to_fp16(a));
  }
  // Floats from every exponent with random mantissas, halfway cases and their neighbours.
  std::mt19937_64 rng(11);
  size_t checked = 0;
  for (uint32_t e = 0; e < 255; ++e)
    for (int k = 0; k < 4000; ++k) {
      uint32_t u = (e << 23) | static_cast<uint32_t>(rng() & 0x7fffff);
      if (k % 4 == 1) u = (u & ~0x1fffu) | 0x1000u; // a tie for normal halves
      if (k % 4 == 2) u = (u & ~0x1fffu) | 0x0fffu;
      if (k % 2 == 1) u |= 0x80000000u;
      float f;
      std::memcpy(&f, &u, 4);
      REQUIRE(nwc::ggml::fp32_to_fp16(f) == g.fp32_to_fp16(f));
      ++checked;
    }
  for (float f : {65504.0f, 65519.996f, 65520.0f, 1e10f, 5.96e-8f, 2.98e-8f, 2.9802322e-8f,
                  INFINITY, -INFINITY, 0.0f, -0.0f})
    CHECK(nwc::ggml::fp32_to_fp16(f) == g.fp32_to_fp16(f));
  MESSAGE("fp16: all 63488 finite halves and ", checked, " floats agree with ggml");
}

TEST_CASE("ggml: block packing round-trips every byte string") {
  std::mt19937_64 rng(5);
  for (const auto &tt : nwc::ggml::kTypes) {
    const std::string type_name = tt.name;
    CAPTURE(type_name);
    for (int it = 0; it < 500; ++it) {
      std::vector<uint8_t> b(static_cast<size_t>(tt.block_bytes));
      for (auto &v : b) v = static_cast<uint8_t>(rng());
      std::vector<int32_t> s(static_cast<size_t>(tt.block), INT32_MIN);
      std::vector<uint8_t> side(static_cast<size_t>(tt.side_bytes) + 1, 0xee);
      nwc::ggml::unpack_block(tt.type, b.data(), s.data(), side.data());
      CHECK(side.back() == 0xee); // writes exactly side_bytes
      REQUIRE(nwc::ggml::symbols_in_range(tt.type, s.data()));
      std::vector<uint8_t> again(b.size(), 0);
      nwc::ggml::pack_block(tt.type, s.data(), side.data(), again.data());
      REQUIRE(again == b);
    }
  }
}

TEST_CASE("ggml: byte for byte on random rows with outliers, with and without imatrix") {
  std::mt19937_64 rng(20261204);
  for (Type t : quant_types()) {
    const auto &tt = nwc::ggml::traits(t);
    for (int64_t cols : {256, 512, 1024, 2304}) {
      const int64_t rows = tt.block == 256 ? 192 : 48;
      const std::vector<float> w = synthetic(rng, rows, cols);
      const std::vector<float> im = random_imatrix(rng, cols);
      const std::vector<float> hd = hessian_diagonal(rng, cols);
      const std::string what = "gaussian " + std::to_string(rows) + "x" + std::to_string(cols);
      check_against_ggml(t, w, rows, cols, nullptr, what);
      check_against_ggml(t, w, rows, cols, &im, what + ", random imatrix");
      check_against_ggml(t, w, rows, cols, &hd, what + ", Hessian diagonal");
    }
    if (tt.block == 32) { // rows that are no multiple of 256
      const std::vector<float> w = synthetic(rng, 64, 96);
      const std::vector<float> im = random_imatrix(rng, 96);
      check_against_ggml(t, w, 64, 96, nullptr, "gaussian 64x96");
      check_against_ggml(t, w, 64, 96, &im, "gaussian 64x96, random imatrix");
    }
  }
  report_tally("random rows");
}

TEST_CASE("ggml: byte for byte on real weights") {
  std::mt19937_64 rng(77);
  for (const Llama2c &m : real_models()) {
    const auto D = static_cast<int64_t>(m.dim), H = static_cast<int64_t>(m.hidden);
    const auto L = static_cast<int64_t>(m.layers);
    // As they are: q/k/v/o and w1/w3 rows of `dim` columns (64: the 32-weight types).
    const std::vector<float> wq = slice(m, m.wq, static_cast<size_t>(L * D * D));
    const std::vector<float> w1 = slice(m, m.w1, static_cast<size_t>(L * H * D));
    // Concatenated: the projections' floats in file order as rows of 256 and 512 columns.
    const size_t span = m.w3 + static_cast<size_t>(L * H * D) - m.wq;
    const std::vector<float> all = slice(m, m.wq, span / 512 * 512);
    const std::vector<float> imD = hessian_diagonal(rng, D);
    const std::vector<float> im256 = hessian_diagonal(rng, 256);
    const std::vector<float> im512 = random_imatrix(rng, 512);
    for (Type t : quant_types()) {
      const auto &tt = nwc::ggml::traits(t);
      if (D % tt.block == 0) {
        check_against_ggml(t, wq, L * D, D, nullptr, "real wq");
        check_against_ggml(t, wq, L * D, D, &imD, "real wq, Hessian diagonal");
        check_against_ggml(t, w1, L * H, D, nullptr, "real w1");
        check_against_ggml(t, w1, L * H, D, &imD, "real w1, Hessian diagonal");
      }
      const auto n = static_cast<int64_t>(all.size());
      check_against_ggml(t, all, n / 256, 256, nullptr, "real, 256-column rows");
      check_against_ggml(t, all, n / 256, 256, &im256, "real, 256-column rows, Hessian diagonal");
      check_against_ggml(t, all, n / 512, 512, &im512, "real, 512-column rows, random imatrix");
    }
  }
  report_tally("real weights");
}

TEST_CASE("ggml: f16 and the llama.cpp fallback on 64-, 96- and 172-column rows") {
  std::mt19937_64 rng(3);
  const Llama2c &m = real_models()[0];
  const auto D = static_cast<int64_t>(m.dim), H = static_cast<int64_t>(m.hidden);
  const auto L = static_cast<int64_t>(m.layers);
  const std::vector<float> w2 = slice(m, m.w2, static_cast<size_t>(L * D * H)); // 172 columns
  const std::vector<float> wq = slice(m, m.wq, static_cast<size_t>(L * D * D)); // 64 columns
  const std::vector<float> g96 = synthetic(rng, 32, 96);

  // f16 directly: any chunk length (here the whole row).
  {
    Instance inst(kId, {opt_enum("type", "f16")});
    REQUIRE(inst.ok());
    const Coded c = encode(inst, w2, L * D, H, H, nullptr, "blk.0.ffn_down.weight");
    REQUIRE(c.status == NWC_OK);
    CHECK(c.side.empty());
    const std::vector<uint8_t> ref = ggml_bytes(Type::F16, w2, L * D, H, nullptr);
    CHECK(packed(Type::F16, c) == ref);
    CHECK(exported(inst, Type::F16, c, L * D, H, H, "blk.0.ffn_down.weight") == ref);
    CHECK(same_bits(c.dequantized, ggml_to_float(Type::F16, ref, w2.size())));
    tally()["f16 plain"] += w2.size();
  }
  // fallback = "llama.cpp": the type llama-quantize would store, byte for byte.
  struct Case {
    const char *type;
    const std::vector<float> *w;
    int64_t rows, cols, group;
    Type expect;
  };
  const Case cases[] = {
      {"q4_K", &wq, L * D, D, D, Type::Q5_0},  {"q5_K", &wq, L * D, D, D, Type::Q5_1},
      {"q6_K", &wq, L * D, D, D, Type::Q8_0},  {"q2_K", &wq, L * D, D, D, Type::Q4_0},
      {"q3_K", &wq, L * D, D, D, Type::Q4_0},  {"iq4_xs", &wq, L * D, D, D, Type::IQ4_NL},
      {"q4_K", &g96, 32, 96, 96, Type::Q5_0},  {"q4_K", &w2, L * D, H, H, Type::F16},
      {"q6_K", &w2, L * D, H, H, Type::F16},   {"q4_0", &wq, L * D, D, 32, Type::Q4_0},
      {"q4_K", &wq, L * D, D, 32, Type::Q5_0}, // group 32 works as well as the whole row
  };
  for (const Case &k : cases) {
    const std::string type_name = k.type;
    CAPTURE(type_name);
    CAPTURE(k.cols);
    for (bool with_im : {false, true}) {
      const std::vector<float> im = random_imatrix(rng, k.cols);
      Instance inst(kId, {opt_enum("type", k.type), opt_enum("fallback", "llama.cpp")});
      REQUIRE(inst.ok());
      const Coded c = encode(inst, *k.w, k.rows, k.cols, k.group, with_im ? &im : nullptr);
      INFO(c.error);
      REQUIRE(c.status == NWC_OK);
      const std::vector<uint8_t> ref =
          ggml_bytes(k.expect, *k.w, k.rows, k.cols, with_im ? &im : nullptr);
      CHECK(packed(k.expect, c) == ref);
      CHECK(exported(inst, k.expect, c, k.rows, k.cols, k.group) == ref); // the fallback's type
      CHECK(same_bits(c.dequantized, ggml_to_float(k.expect, ref, k.w->size())));
      std::vector<float> dec;
      REQUIRE(decode(inst, c.symbols, c.side, k.rows, k.cols, k.group, dec) == NWC_OK);
      CHECK(same_bits(dec, c.dequantized));
    }
  }
  // The 32-weight types have no other type to go to: f16 where cols % 32 != 0.
  for (const char *type : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"}) {
    const std::string type_name = type;
    CAPTURE(type_name);
    Instance inst(kId, {opt_enum("type", type), opt_enum("fallback", "llama.cpp")});
    REQUIRE(inst.ok());
    const Coded c = encode(inst, w2, L * D, H, H);
    REQUIRE(c.status == NWC_OK);
    CHECK(c.side.empty());
    CHECK(packed(Type::F16, c) == ggml_bytes(Type::F16, w2, L * D, H, nullptr));
  }
  // Without the fallback the type must fit, and the error names the option.
  Instance strict(kId, {opt_enum("type", "q4_K")});
  const Coded c = encode(strict, wq, L * D, D, D);
  CHECK(c.status == NWC_E_UNSUPPORTED_SHAPE);
  CHECK(c.error.find("option type = \"q4_K\" needs rows of a multiple of 256") !=
        std::string::npos);
  report_tally("f16");
}

TEST_CASE("ggml: chunks that are not whole blocks of one row are refused with the option named") {
  std::mt19937_64 rng(8);
  const std::vector<float> w = synthetic(rng, 4, 512);
  Instance inst(kId, {opt_enum("type", "q4_K")});
  REQUIRE(inst.ok());
  Coded c = encode(inst, w, 4, 512, 128); // group 128 < 256
  CHECK(c.status == NWC_E_UNSUPPORTED_SHAPE);
  CHECK(c.error.find("not whole q4_K blocks of 256 (option type = \"q4_K\"): use nwc.chunk.group "
                     "with group = 256") != std::string::npos);
  c = encode(inst, w, 4, 512, 512); // two blocks per chunk are fine
  CHECK(c.status == NWC_OK);

  // A column block that does not start on a block boundary.
  std::vector<int32_t> sym(256 * 4);
  std::vector<float> dq(256 * 4);
  Block block("t", 4, 512, 128, 384);
  View in(w.data(), 4, 256), s(sym.data(), 4, 256), d(dq.data(), 4, 256);
  VecSink side;
  CHECK(quantizer(inst).quantize(inst.get(), block.get(), in.get(), s.get(), d.get(), side.get()) ==
        NWC_E_UNSUPPORTED_SHAPE);
  CHECK(inst.last_error().find("not at a q4_K block boundary") != std::string::npos);

  // Latents that are not the block's rows cut into chunks (e.g. padded chunks).
  Block padded("t", 3, 512, 0, 512);
  View in2(w.data(), 4, 256), s2(sym.data(), 4, 256), d2(dq.data(), 4, 256);
  CHECK(quantizer(inst).quantize(inst.get(), padded.get(), in2.get(), s2.get(), d2.get(),
                                 side.get()) == NWC_E_UNSUPPORTED_SHAPE);
}

TEST_CASE("ggml: non-finite values and importance weights are refused") {
  std::mt19937_64 rng(9);
  std::vector<float> w = synthetic(rng, 2, 256);
  Instance inst(kId, {opt_enum("type", "q4_K")});
  REQUIRE(inst.ok());
  std::vector<float> im(256, 1.0f);
  im[17] = -1.0f;
  Coded c = encode(inst, w, 2, 256, 256, &im);
  CHECK(c.status == NWC_E_INVALID_ARG);
  CHECK(c.error.find("importance weight") != std::string::npos);
  im[17] = NAN;
  CHECK(encode(inst, w, 2, 256, 256, &im).status == NWC_E_INVALID_ARG);
  w[300] = INFINITY;
  c = encode(inst, w, 2, 256, 256);
  CHECK(c.status == NWC_E_INVALID_ARG);
  CHECK(c.error.find("non-finite value at chunk 1, element 44") != std::string::npos);
  // Scales beyond fp16: ggml would store an infinite d; the plugin refuses.
  std::vector<float> big(32, 1e9f);
  Instance q8(kId, {opt_enum("type", "q8_0")});
  c = encode(q8, big, 1, 32, 32);
  CHECK(c.status == NWC_E_INVALID_ARG);
  CHECK(c.error.find("overflows fp16") != std::string::npos);
}

TEST_CASE("ggml: importance is read only when struct_size covers it (ABI 1.3)") {
  std::mt19937_64 rng(10);
  const std::vector<float> w = synthetic(rng, 8, 256);
  const std::vector<float> im = random_imatrix(rng, 256);
  std::vector<float> imp(w.size());
  for (size_t i = 0; i < w.size(); ++i) imp[i] = im[i % 256];
  Instance inst(kId, {opt_enum("type", "q4_K")});
  REQUIRE(inst.ok());
  auto run = [&](uint32_t struct_size) {
    std::vector<int32_t> sym(w.size());
    std::vector<float> dq(w.size());
    Block block("t", 8, 256, 0, 256);
    block.info.importance = imp.data();
    block.info.struct_size = struct_size;
    View in(w.data(), 8, 256), s(sym.data(), 8, 256), d(dq.data(), 8, 256);
    VecSink side;
    REQUIRE(quantizer(inst).quantize(inst.get(), block.get(), in.get(), s.get(), d.get(),
                                     side.get()) == NWC_OK);
    Coded c;
    c.symbols = sym;
    c.side = side.bytes;
    return packed(Type::Q4_K, c);
  };
  CHECK(run(sizeof(nwc_block_info)) == ggml_bytes(Type::Q4_K, w, 8, 256, &im));
  CHECK(run(static_cast<uint32_t>(offsetof(nwc_block_info, importance))) ==
        ggml_bytes(Type::Q4_K, w, 8, 256, nullptr));
}

TEST_CASE("ggml: corrupt side info and symbols are rejected") {
  std::mt19937_64 rng(12);
  const std::vector<float> w = synthetic(rng, 4, 256);
  for (const auto &tt : nwc::ggml::kTypes) {
    const std::string type_name = tt.name;
    CAPTURE(type_name);
    const int64_t group = tt.type == Type::F16 ? 64 : tt.block;
    Instance inst(kId, {opt_enum("type", tt.name)});
    REQUIRE(inst.ok());
    const Coded c = encode(inst, w, 4, 256, group);
    REQUIRE(c.status == NWC_OK);
    std::vector<float> out;
    REQUIRE(decode(inst, c.symbols, c.side, 4, 256, group, out) == NWC_OK);
    CHECK(same_bits(out, c.dequantized));
    // side info one byte short, one byte long
    if (!c.side.empty()) {
      std::vector<uint8_t> s = c.side;
      s.pop_back();
      CHECK(decode(inst, c.symbols, s, 4, 256, group, out) == NWC_E_CORRUPT_STREAM);
    }
    std::vector<uint8_t> longer = c.side;
    longer.push_back(0);
    CHECK(decode(inst, c.symbols, longer, 4, 256, group, out) == NWC_E_CORRUPT_STREAM);
    // a symbol out of range on either side
    for (int32_t bad : {tt.symbol_max + 1, tt.symbol_min - 1}) {
      std::vector<int32_t> sym = c.symbols;
      sym[100] = bad;
      CHECK(decode(inst, sym, c.side, 4, 256, group, out) == NWC_E_CORRUPT_STREAM);
      CHECK(inst.last_error().find("symbol " + std::to_string(bad)) != std::string::npos);
    }
    // export_native validates the same untrusted input before repacking it
    auto export_status = [&](const std::vector<int32_t> &sym, const std::vector<uint8_t> &side) {
      Block block("blk.0.ffn_up.weight", 4, 256, 0, 256);
      View sv(sym.data(), 4 * 256 / group, group);
      nwc_native_layout layout{};
      layout.struct_size = sizeof(layout);
      VecSink sink;
      return quantizer(inst).export_native(inst.get(), block.get(), sv.get(),
                                           nwc_bytes{side.data(), side.size()}, &layout,
                                           sink.get());
    };
    CHECK(export_status(c.symbols, c.side) == NWC_OK);
    CHECK(export_status(c.symbols, longer) == NWC_E_CORRUPT_STREAM);
    std::vector<int32_t> out_of_range = c.symbols;
    out_of_range[3] = tt.symbol_max + 1;
    CHECK(export_status(out_of_range, c.side) == NWC_E_CORRUPT_STREAM);
    // an infinite or NaN fp16 scale (for f16, an infinite value)
    int nf = 0;
    const int *fields = nwc::ggml::half_fields(tt.type, &nf);
    for (uint16_t h : {uint16_t{0x7c00}, uint16_t{0xfe00}}) {
      if (tt.type == Type::F16) {
        std::vector<int32_t> sym = c.symbols;
        sym[7] = h;
        CHECK(decode(inst, sym, c.side, 4, 256, group, out) == NWC_E_CORRUPT_STREAM);
        continue;
      }
      for (int f = 0; f < nf; ++f) {
        std::vector<uint8_t> s = c.side;
        const size_t at = static_cast<size_t>(tt.side_bytes) + static_cast<size_t>(fields[f]);
        s[at] = static_cast<uint8_t>(h & 0xff);
        s[at + 1] = static_cast<uint8_t>(h >> 8);
        CHECK(decode(inst, c.symbols, s, 4, 256, group, out) == NWC_E_CORRUPT_STREAM);
        CHECK(inst.last_error().find("fp16 scale is not finite") != std::string::npos);
      }
    }
  }
}

TEST_CASE("ggml: with nwc.entropy.raw every type costs ggml's bits per weight") {
  RawCoder raw;
  std::mt19937_64 rng(13);
  const int64_t rows = 64, cols = 1024;
  const std::vector<float> w = synthetic(rng, rows, cols);
  for (const auto &tt : nwc::ggml::kTypes) {
    const std::string type_name = tt.name;
    CAPTURE(type_name);
    const int64_t group = tt.type == Type::F16 ? cols : tt.block;
    Instance inst(kId, {opt_enum("type", tt.name)});
    REQUIRE(inst.ok());
    const Coded c = encode(inst, w, rows, cols, group);
    REQUIRE(c.status == NWC_OK);
    const size_t entropy = raw.encoded_size(c.symbols);
    const size_t weights = w.size();
    const size_t ggml =
        weights / static_cast<size_t>(tt.block) * static_cast<size_t>(tt.block_bytes);
    // raw writes a 5-byte header (width, min) per stream, then the symbols at the natural width.
    CHECK(c.side.size() + entropy - 5 == ggml);
    MESSAGE(std::string(tt.name), ": ", c.side.size() + entropy, " stream bytes for ", weights,
            " weights = ",
            8.0 * static_cast<double>(c.side.size() + entropy - 5) / static_cast<double>(weights),
            " bits/weight + the 5-byte raw header (ggml: ", tt.block_bytes, " bytes / ", tt.block,
            " weights)");
  }
}
