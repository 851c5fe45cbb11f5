// GGUF reader against small files written here (v2 and v3), and malformed variants; the writer
// keeping ggml blocks.
#include "ggml_blocks.hpp"
#include "ggml_quants.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/gguf.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>

#include <cstring>
#include <doctest/doctest.h>
#include <random>

using namespace nwc;
using nwc::test::TempDir;

namespace {

// A minimal GGUF writer: append little-endian values to a byte buffer.
struct Buf {
  std::vector<uint8_t> b;
  template <typename T> void put(T v) {
    const auto *p = reinterpret_cast<const uint8_t *>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void str(const std::string &s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void pad_to(size_t align) {
    while (b.size() % align) b.push_back(0);
  }
};

struct GTensor {
  std::string name;
  std::vector<uint64_t> ne; // GGUF order: ne[0] innermost
  uint32_t type;
  std::vector<uint8_t> data;
};

// Builds a file with the given tensors and a fixed set of kv pairs; hooks let tests corrupt it.
struct GgufSpec {
  uint32_t version = 3;
  std::vector<GTensor> tensors;
  bool with_alignment = false; // write general.alignment = 64
};

std::vector<uint8_t> build(const GgufSpec &s, size_t *kv_start = nullptr,
                           size_t *infos_start = nullptr) {
  Buf f;
  f.b = {'G', 'G', 'U', 'F'};
  f.put<uint32_t>(s.version);
  f.put<uint64_t>(s.tensors.size());
  const uint64_t n_kv = 10 + (s.with_alignment ? 1 : 0);
  f.put<uint64_t>(n_kv);
  if (kv_start) *kv_start = f.b.size();
  auto key = [&](const std::string &k, uint32_t type) {
    f.str(k);
    f.put<uint32_t>(type);
  };
  key("general.architecture", 8);
  f.str("llama");
  key("general.name", 8);
  f.str("tiny test");
  key("llama.embedding_length", 4);
  f.put<uint32_t>(64);
  key("llama.feed_forward_length", 4);
  f.put<uint32_t>(96);
  key("llama.block_count", 4);
  f.put<uint32_t>(1);
  key("llama.attention.head_count", 4);
  f.put<uint32_t>(4);
  key("llama.attention.head_count_kv", 4);
  f.put<uint32_t>(2);
  key("llama.attention.layer_norm_rms_epsilon", 6);
  f.put<float>(1e-6f);
  key("llama.rope.freq_base", 6);
  f.put<float>(500000.0f);
  key("tokenizer.ggml.tokens", 9); // array of 3 strings
  f.put<uint32_t>(8);
  f.put<uint64_t>(3);
  f.str("<s>");
  f.str("a");
  f.str("b");
  if (s.with_alignment) {
    key("general.alignment", 4);
    f.put<uint32_t>(64);
  }
  const size_t align = s.with_alignment ? 64 : 32;
  if (infos_start) *infos_start = f.b.size();
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto &t : s.tensors) {
    f.str(t.name);
    f.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) f.put<uint64_t>(d);
    f.put<uint32_t>(t.type);
    f.put<uint64_t>(offset);
    offsets.push_back(offset);
    offset += (t.data.size() + align - 1) / align * align;
  }
  f.pad_to(align);
  const size_t data_start = f.b.size();
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    f.b.resize(data_start + offsets[i], 0);
    f.b.insert(f.b.end(), s.tensors[i].data.begin(), s.tensors[i].data.end());
  }
  return f.b;
}

template <typename T> std::vector<uint8_t> bytes_of(const std::vector<T> &v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (static_cast<float>(i % 97) - 40.0f) * scale;
  return v;
}

// Q8_0 blocks for n values: scale per block, q = i-dependent pattern. Returns expected floats.
std::vector<uint8_t> q8_0(size_t n, std::vector<float> &expect) {
  std::vector<uint8_t> out;
  expect.clear();
  for (size_t b = 0; b < n / 32; ++b) {
    const float d = 0.01f * static_cast<float>(b + 1);
    const uint16_t d16 = f32_to_f16(d);
    out.push_back(static_cast<uint8_t>(d16 & 0xff));
    out.push_back(static_cast<uint8_t>(d16 >> 8));
    for (int k = 0; k < 32; ++k) {
      const auto q = static_cast<int8_t>((k * 9 + static_cast<int>(b) * 5) % 255 - 127);
      out.push_back(static_cast<uint8_t>(q));
      expect.push_back(f16_to_f32(d16) * static_cast<float>(q));
    }
  }
  return out;
}

// llama.cpp's RoPE frequency divisors (Llama 3's scaling as convert_hf_to_gguf.py writes it).
const std::vector<float> kFreqFactors = {1.0f, 1.0f, 1.5f, 2.0f, 4.0f, 8.0f, 8.0f, 8.0f};

GgufSpec tiny_llama(uint32_t version, std::vector<float> &q8_expect) {
  GgufSpec s;
  s.version = version;
  const auto emb = ramp(3 * 64, 0.01f);
  std::vector<uint16_t> norm16(64), q16(64 * 64);
  for (size_t i = 0; i < norm16.size(); ++i) norm16[i] = f32_to_f16(1.0f + 0.001f * float(i));
  for (size_t i = 0; i < q16.size(); ++i) q16[i] = f32_to_bf16(0.003f * float(i % 101) - 0.1f);
  s.tensors.push_back({"token_embd.weight", {64, 3}, 0, bytes_of(emb)});
  s.tensors.push_back({"blk.0.attn_norm.weight", {64}, 1, bytes_of(norm16)});
  s.tensors.push_back({"blk.0.attn_q.weight", {64, 64}, 30, bytes_of(q16)});
  s.tensors.push_back({"blk.0.ffn_down.weight", {96, 64}, 8, q8_0(96 * 64, q8_expect)});
  // Q4_K blocks of a ramp quantized by formats/ggml (as nwc.quant.ggml and ggml write them).
  std::vector<uint8_t> q4k(144 * 24);
  const auto up = ramp(256 * 24, 0.002f);
  for (size_t b = 0; b < 24; ++b)
    nwc::ggml::quantize_block(nwc::ggml::Type::Q4_K, up.data() + 256 * b, nullptr, 0.0f,
                              q4k.data() + 144 * b);
  s.tensors.push_back({"blk.0.ffn_up.weight", {256, 24}, 12, q4k});
  // IQ2_XXS (16): a ggml type nwc does not decode.
  s.tensors.push_back({"blk.0.ffn_gate.weight", {256, 24}, 16, std::vector<uint8_t>(66 * 24)});
  s.tensors.push_back({"output_norm.weight", {64}, 0, bytes_of(ramp(64, 0.5f))});
  s.tensors.push_back({"rope_freqs.weight", {8}, 0, bytes_of(kFreqFactors)});
  s.tensors.push_back({"custom.extra.weight", {4}, 0, bytes_of(ramp(4, 1.0f))});
  return s;
}

std::string error_of(const std::filesystem::path &p, nwc_status expect = NWC_E_CORRUPT_STREAM) {
  try {
    read_gguf(p);
  } catch (const Error &e) {
    CHECK(e.code() == expect);
    const std::string msg = e.what();
    CHECK(msg.rfind(p.string() + ":", 0) == 0);
    CHECK(msg.find('\n') == std::string::npos);
    return msg;
  }
  return "(no error)";
}

bool contains(const std::string &s, const std::string &sub) {
  return s.find(sub) != std::string::npos;
}

} // namespace

TEST_CASE("GGUF v3 and v2: metadata, architecture, names, shapes and values") {
  for (uint32_t version : {3u, 2u}) {
    CAPTURE(version);
    TempDir dir;
    std::vector<float> q8_expect;
    const GgufSpec spec = tiny_llama(version, q8_expect);
    nwc::test::write_bytes(dir / "m.gguf", build(spec));
    const Model m = read_gguf(dir / "m.gguf");
    CHECK(m.format == "gguf");
    CHECK(m.metadata["general.name"] == "tiny test");
    CHECK(m.metadata["tokenizer.ggml.tokens"] == nlohmann::json::array({"<s>", "a", "b"}));
    CHECK(m.metadata["llama.block_count"] == 1);
    CHECK(m.arch.family == "llama");
    CHECK(m.arch.dim == 64);
    CHECK(m.arch.hidden_dim == 96);
    CHECK(m.arch.n_layers == 1);
    CHECK(m.arch.n_heads == 4);
    CHECK(m.arch.n_kv_heads == 2);
    CHECK(m.arch.vocab_size == 3);
    CHECK(m.arch.norm_eps == doctest::Approx(1e-6));
    CHECK(m.arch.rope_theta == 500000.0);
    CHECK(m.arch.rope_style == "interleaved");
    CHECK(m.arch.tied_embeddings); // no output.weight

    REQUIRE(m.tensors.size() == 8);
    const ModelTensor *emb = m.find("model.embed_tokens.weight");
    REQUIRE(emb);
    CHECK(emb->info.shape == std::vector<int64_t>{3, 64}); // ne reversed
    CHECK(emb->load() == ramp(3 * 64, 0.01f));

    const ModelTensor *norm = m.find("model.layers.0.input_layernorm.weight");
    REQUIRE(norm);
    CHECK(norm->info.dtype == DType::F16);
    const auto nv = norm->load();
    for (size_t i = 0; i < nv.size(); ++i)
      CHECK(nv[i] == f16_to_f32(f32_to_f16(1.0f + 0.001f * float(i))));

    const ModelTensor *q = m.find("model.layers.0.self_attn.q_proj.weight");
    REQUIRE(q);
    CHECK(q->info.dtype == DType::BF16);
    CHECK(q->load()[100] == bf16_to_f32(f32_to_bf16(0.003f * float(100 % 101) - 0.1f)));

    const ModelTensor *down = m.find("model.layers.0.mlp.down_proj.weight");
    REQUIRE(down);
    CHECK(down->info.shape == std::vector<int64_t>{64, 96});
    CHECK(down->load() == q8_expect);

    // Q4_K decodes block by block as ggml's to_float (formats/ggml, checked against ggml itself
    // in nwc.quant.ggml's tests): within a quantization step of the ramp, in row order.
    const ModelTensor *upt = m.find("model.layers.0.mlp.up_proj.weight");
    REQUIRE(upt);
    CHECK(upt->info.shape == std::vector<int64_t>{24, 256});
    const auto uv = upt->load();
    REQUIRE(uv.size() == 256 * 24);
    const auto up = ramp(256 * 24, 0.002f);
    float worst = 0;
    for (size_t i = 0; i < uv.size(); ++i) worst = std::max(worst, std::abs(uv[i] - up[i]));
    CHECK(worst > 0);
    CHECK(worst < 0.02f);

    // An unsupported type is listed; loading it names the tensor and the type.
    const ModelTensor *gate = m.find("model.layers.0.mlp.gate_proj.weight");
    REQUIRE(gate);
    CHECK(gate->info.shape == std::vector<int64_t>{24, 256});
    try {
      gate->load();
      FAIL("expected an error");
    } catch (const Error &e) {
      CHECK(e.code() == NWC_E_UNSUPPORTED_DTYPE);
      CHECK(contains(e.what(), "blk.0.ffn_gate.weight"));
      CHECK(contains(e.what(), "IQ2_XXS"));
    }
    CHECK(m.find("model.norm.weight")->load() == ramp(64, 0.5f));
    CHECK(m.find("custom.extra.weight") != nullptr); // unknown names kept as is
    // rope_freqs is part of the architecture, not a weight
    CHECK(m.find("rope_freqs.weight") == nullptr);
    CHECK(m.arch.rope_freq_factors ==
          std::vector<double>(kFreqFactors.begin(), kFreqFactors.end()));
  }
}

TEST_CASE("GGUF: custom alignment, long arrays summarised, separate output") {
  TempDir dir;
  GgufSpec s;
  s.with_alignment = true;
  s.tensors.push_back({"token_embd.weight", {2, 3}, 0, bytes_of(ramp(6, 1.0f))});
  s.tensors.push_back({"output.weight", {2, 3}, 0, bytes_of(ramp(6, 2.0f))});
  auto b = build(s);
  nwc::test::write_bytes(dir / "a.gguf", b);
  const Model m = read_gguf(dir / "a.gguf");
  CHECK(m.find("lm_head.weight")->load() == ramp(6, 2.0f));
  CHECK(m.find("model.embed_tokens.weight")->load() == ramp(6, 1.0f));
  CHECK_FALSE(m.arch.tied_embeddings);

  // A 100-element array is summarised in the metadata.
  Buf f;
  f.b = {'G', 'G', 'U', 'F'};
  f.put<uint32_t>(3);
  f.put<uint64_t>(0);
  f.put<uint64_t>(1);
  f.str("tokenizer.ggml.scores");
  f.put<uint32_t>(9);
  f.put<uint32_t>(6);
  f.put<uint64_t>(100);
  for (int i = 0; i < 100; ++i) f.put<float>(float(i));
  nwc::test::write_bytes(dir / "long.gguf", f.b);
  const Model l = read_gguf(dir / "long.gguf");
  CHECK(l.metadata["tokenizer.ggml.scores"]["length"] == 100);
  CHECK(l.metadata["tokenizer.ggml.scores"]["element_type"] == "f32");
  CHECK(l.tensors.empty());
}

TEST_CASE("GGUF: malformed files give clear errors") {
  TempDir dir;
  std::vector<float> q8;
  const GgufSpec spec = tiny_llama(3, q8);
  size_t kv_start = 0, infos_start = 0;
  const auto good = build(spec, &kv_start, &infos_start);
  auto write = [&](const std::string &name, const std::vector<uint8_t> &b) {
    nwc::test::write_bytes(dir / name, b);
    return dir / name;
  };

  auto bad = good;
  bad[0] = 'X';
  CHECK(contains(error_of(write("magic.gguf", bad)), "not a GGUF file (bad magic)"));
  CHECK(contains(error_of(write("empty.gguf", {})), "not a GGUF file (bad magic)"));

  bad = good;
  bad[4] = 1;
  CHECK(contains(error_of(write("v1.gguf", bad), NWC_E_VERSION), "GGUF version 1"));

  // Truncated in the middle of the kv section.
  bad.assign(good.begin(), good.begin() + static_cast<long>(kv_start + 200));
  CHECK(contains(error_of(write("cut.gguf", bad)), "truncated"));
  bad.assign(good.begin(), good.begin() + static_cast<long>(infos_start - 3));
  CHECK(contains(error_of(write("cutkv.gguf", bad)), "truncated GGUF file: value of"));

  // Truncated inside the data: the last tensor's data runs past the end.
  bad.assign(good.begin(), good.end() - 8);
  CHECK(contains(error_of(write("cutdata.gguf", bad)), "lies outside the data section"));

  // Tensor offset past the end: patch the first tensor's offset field.
  // Layout of the first info: u64 len, name, u32 n_dims, 2 x u64 dims, u32 type, u64 offset.
  const size_t first_offset = infos_start + 8 + 17 + 4 + 16 + 4;
  bad = good;
  const uint64_t far = 1ull << 40;
  std::memcpy(bad.data() + first_offset, &far, 8);
  CHECK(contains(error_of(write("offset.gguf", bad)),
                 "tensor 'token_embd.weight' data [1099511627776"));

  bad = good;
  const uint32_t dims99 = 99;
  std::memcpy(bad.data() + infos_start + 8 + 17, &dims99, 4);
  CHECK(contains(error_of(write("ndims.gguf", bad)), "n_dims 99"));

  // String length 2^60 in the first key.
  bad = good;
  const uint64_t huge = 1ull << 60;
  std::memcpy(bad.data() + kv_start, &huge, 8);
  CHECK(contains(error_of(write("strlen.gguf", bad)), "has length 1152921504606846976"));

  // Same in a string value: the first value ("llama") starts after key + type.
  bad = good;
  std::memcpy(bad.data() + kv_start + 8 + 20 + 4, &huge, 8);
  CHECK(contains(error_of(write("strval.gguf", bad)), "has length 1152921504606846976"));

  // Absurd counts.
  bad = good;
  std::memcpy(bad.data() + 8, &huge, 8);
  CHECK(contains(error_of(write("ntensors.gguf", bad)), "tensors, more than the file"));
  bad = good;
  std::memcpy(bad.data() + 16, &huge, 8);
  CHECK(contains(error_of(write("nkv.gguf", bad)), "key-value pairs, more than the file"));

  // Unknown kv type.
  bad = good;
  const uint32_t type77 = 77;
  std::memcpy(bad.data() + kv_start + 8 + 20, &type77, 4);
  CHECK(contains(error_of(write("kvtype.gguf", bad)), "unknown value type 77"));

  // Q8_0 with ne[0] not a multiple of 32.
  GgufSpec odd;
  odd.tensors.push_back({"blk.0.attn_k.weight", {33, 1}, 8, std::vector<uint8_t>(34)});
  CHECK(contains(error_of(write("q8odd.gguf", build(odd))), "not a multiple of its block"));

  // Every prefix of a valid file fails cleanly (never reads out of bounds).
  for (size_t n = 0; n < good.size(); n += 7) {
    std::vector<uint8_t> prefix(good.begin(), good.begin() + static_cast<long>(n));
    const auto p = write("prefix.gguf", prefix);
    CHECK_THROWS_AS(read_gguf(p), Error);
  }
}

TEST_CASE("GGUF: random corruptions never crash") {
  TempDir dir;
  std::vector<float> q8;
  const auto good = build(tiny_llama(3, q8));
  std::mt19937 rng(12345);
  int errors = 0, loaded = 0;
  for (int iter = 0; iter < 400; ++iter) {
    auto b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Bias towards the header, kv and info sections where sizes and counts live.
      const size_t limit = (rng() % 2) ? std::min<size_t>(b.size(), 400) : b.size();
      b[rng() % limit] = static_cast<uint8_t>(rng());
    }
    nwc::test::write_bytes(dir / "fuzz.gguf", b);
    try {
      const Model m = read_gguf(dir / "fuzz.gguf");
      for (const auto &t : m.tensors) {
        try {
          const auto v = t.load(); // throws for the unsupported type, and that is fine
          CHECK(v.size() == t.info.numel());
          ++loaded;
        } catch (const Error &) {
          ++errors;
        }
      }
    } catch (const Error &) {
      ++errors;
    }
  }
  CHECK(errors > 0);
  CHECK(loaded > 0);
}

namespace {

// q4_K blocks of values (rows x 256 k) and what they decode to.
NativeBlocks q4k_blocks(const std::vector<float> &values, std::vector<float> &decoded) {
  NativeBlocks nb{"ggml", "q4_K", 256, 144, std::vector<uint8_t>(values.size() / 256 * 144)};
  decoded.resize(values.size());
  std::vector<int32_t> symbols(256);
  std::vector<uint8_t> side(16);
  for (size_t b = 0; b < values.size() / 256; ++b) {
    nwc::ggml::quantize_block(nwc::ggml::Type::Q4_K, values.data() + 256 * b, nullptr, 0.0f,
                              nb.bytes.data() + 144 * b);
    nwc::ggml::unpack_block(nwc::ggml::Type::Q4_K, nb.bytes.data() + 144 * b, symbols.data(),
                            side.data());
    nwc::ggml::dequantize_block(nwc::ggml::Type::Q4_K, symbols.data(), side.data(),
                                decoded.data() + 256 * b);
  }
  return nb;
}

ModelTensor matrix(const std::string &name, int64_t rows, int64_t cols, std::vector<float> v) {
  ModelTensor t;
  t.info.name = name;
  t.info.shape = {rows, cols};
  t.load = [v] { return v; };
  return t;
}

} // namespace

TEST_CASE("GGUF writer keeps ggml blocks that decode to the tensor, permuting q/k rows") {
  // An HF-layout (rotate-half) model written as llama.cpp's "llama": q/k rows move to adjacent
  // RoPE pairs, whole rows of blocks at a time for kept blocks.
  TempDir dir;
  Model m;
  m.path = dir / "m";
  m.arch.dim = 256;
  m.arch.hidden_dim = 256;
  m.arch.n_layers = 1;
  m.arch.n_heads = 4;
  m.arch.n_kv_heads = 4;
  m.arch.vocab_size = 8;
  m.arch.max_seq_len = 64;
  m.arch.rope_style = "rotate_half";
  std::vector<float> q_decoded, up_decoded, stale;
  const std::vector<float> q_values = ramp(256 * 256, 0.0001f);
  const NativeBlocks q_blocks = q4k_blocks(q_values, q_decoded);
  ModelTensor q = matrix("model.layers.0.self_attn.q_proj.weight", 256, 256, q_decoded);
  q.load_native = [q_blocks] { return std::optional<NativeBlocks>(q_blocks); };
  // Blocks that are not the tensor's values (as when a stage after the quantizer scales them).
  const NativeBlocks up_blocks = q4k_blocks(ramp(256 * 256, 0.0003f), stale);
  q4k_blocks(ramp(256 * 256, 0.0002f), up_decoded);
  ModelTensor up = matrix("model.layers.0.mlp.up_proj.weight", 256, 256, up_decoded);
  up.load_native = [up_blocks] { return std::optional<NativeBlocks>(up_blocks); };
  ModelTensor none = matrix("model.layers.0.mlp.down_proj.weight", 256, 256, ramp(256 * 256, 0.f));
  none.load_native = [] { return std::optional<NativeBlocks>(); };
  m.tensors = {q, up, none, matrix("model.embed_tokens.weight", 8, 256, ramp(8 * 256, 0.01f))};

  const GgufWriteReport r = write_gguf(m, dir / "kept.gguf", DType::F16);
  REQUIRE(r.tensor_types.size() == 4);
  CHECK(r.tensor_types[0].second == "q4_K");
  CHECK(r.tensor_types[1].second == "f16");
  CHECK(r.tensor_types[2].second == "f16");
  REQUIRE(r.notes.size() == 1);
  CHECK(contains(r.notes[0], "up_proj.weight': its q4_K blocks do not decode to its values"));

  const Model g = read_gguf(dir / "kept.gguf");
  CHECK(g.metadata["general.file_type"] == 15); // llama.cpp's guess: mostly Q4_K -> Q4_K_M
  const ModelTensor &gq = *g.find("model.layers.0.self_attn.q_proj.weight");
  REQUIRE(gq.load_native);
  CHECK(gq.load() == permute_rope_rows(q_decoded, 4, 64, 256, false));
  // Kept, not re-quantized: the rows of the very blocks given, in the new order.
  const std::optional<NativeBlocks> back = gq.load_native();
  REQUIRE(back);
  CHECK(back->type == "q4_K");
  CHECK(back->bytes != q_blocks.bytes); // rows moved ...
  std::vector<uint8_t> sorted_back = back->bytes, sorted_given = q_blocks.bytes;
  std::sort(sorted_back.begin(), sorted_back.end());
  std::sort(sorted_given.begin(), sorted_given.end());
  CHECK(sorted_back == sorted_given); // ... none changed
  CHECK(!g.find("model.layers.0.mlp.up_proj.weight")->load_native);

  // keep_blocks = false: every matrix in the dtype, file type F16.
  const GgufWriteReport f = write_gguf(m, dir / "f16.gguf", DType::F16, {}, false);
  CHECK(f.tensor_types[0].second == "f16");
  CHECK(f.notes.empty());
  CHECK(read_gguf(dir / "f16.gguf").metadata["general.file_type"] == 1);

  // Blocks that cannot hold the shape are an error naming the tensor; nothing is written.
  NativeBlocks short_blocks = q_blocks;
  short_blocks.bytes.resize(144);
  m.tensors[0].load_native = [short_blocks] { return std::optional<NativeBlocks>(short_blocks); };
  try {
    write_gguf(m, dir / "bad.gguf", DType::F32);
    FAIL("no error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_CORRUPT_STREAM);
    CHECK(contains(e.what(), "q_proj.weight': 144 bytes of q4_K blocks do not hold its shape"));
  }
  CHECK(!std::filesystem::exists(dir / "bad.gguf"));
}
