// llama2.c reader against the real stories260K / aidreams260K checkpoints and damaged copies.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/llama2c.hpp"
#include "test_support.hpp"

#include <cstring>
#include <doctest/doctest.h>

using namespace nwc;
using nwc::test::TempDir;

namespace {

float raw_float(const std::vector<uint8_t> &file, uint64_t float_index) {
  float f;
  std::memcpy(&f, file.data() + 28 + 4 * float_index, 4);
  return f;
}

std::string error_of(const std::filesystem::path &p) {
  try {
    read_llama2c(p);
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_CORRUPT_STREAM);
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string &s, const std::string &sub) {
  return s.find(sub) != std::string::npos;
}

} // namespace

TEST_CASE("stories260K: architecture, names, shapes and parameter count") {
  const Model m = read_llama2c(nwc::test::stories260k());
  CHECK(m.format == "llama2c");
  CHECK(m.arch.family == "llama");
  CHECK(m.arch.n_layers == 5);
  CHECK(m.arch.dim == 64);
  CHECK(m.arch.hidden_dim == 172);
  CHECK(m.arch.vocab_size == 512);
  CHECK(m.arch.n_heads == 8);
  CHECK(m.arch.n_kv_heads == 4);
  CHECK(m.arch.max_seq_len == 512);
  CHECK(m.arch.tied_embeddings);
  CHECK(m.arch.rope_style == "interleaved");
  CHECK(m.arch.norm_eps == doctest::Approx(1e-5));
  CHECK(m.arch.rope_theta == 10000.0);
  // embedding + 9 per layer + final norm; no lm_head (shared), no freq_cis.
  CHECK(m.tensors.size() == 1 + 9 * 5 + 1);
  CHECK(m.find("lm_head.weight") == nullptr);
  CHECK(m.find("freq_cis_real") == nullptr);
  using Shape = std::vector<int64_t>;
  auto shape = [&](const std::string &n) {
    const ModelTensor *t = m.find(n);
    REQUIRE_MESSAGE(t != nullptr, n);
    return t->info.shape;
  };
  CHECK(shape("model.embed_tokens.weight") == Shape{512, 64});
  CHECK(shape("model.layers.0.input_layernorm.weight") == Shape{64});
  CHECK(shape("model.layers.4.self_attn.q_proj.weight") == Shape{64, 64});
  CHECK(shape("model.layers.0.self_attn.k_proj.weight") == Shape{32, 64});
  CHECK(shape("model.layers.0.self_attn.v_proj.weight") == Shape{32, 64});
  CHECK(shape("model.layers.0.self_attn.o_proj.weight") == Shape{64, 64});
  CHECK(shape("model.layers.3.post_attention_layernorm.weight") == Shape{64});
  CHECK(shape("model.layers.0.mlp.gate_proj.weight") == Shape{172, 64});
  CHECK(shape("model.layers.0.mlp.up_proj.weight") == Shape{172, 64});
  CHECK(shape("model.layers.0.mlp.down_proj.weight") == Shape{64, 172});
  CHECK(shape("model.norm.weight") == Shape{64});
  uint64_t params = 0;
  for (const auto &t : m.tensors) {
    CHECK(t.info.dtype == DType::F32);
    params += t.info.numel();
  }
  CHECK(params == 260032); // the README's count: every exposed tensor, norms included
}

TEST_CASE("stories260K: values come from the computed file offsets") {
  const auto bytes = nwc::test::read_bytes(nwc::test::stories260k());
  const Model m = read_llama2c(nwc::test::stories260k());
  const uint64_t dim = 64, hidden = 172, L = 5, vocab = 512, kv = 32;
  const uint64_t emb = 0, rms_att = emb + vocab * dim, wq = rms_att + L * dim;
  const uint64_t wk = wq + L * dim * dim, wv = wk + L * kv * dim, wo = wv + L * kv * dim;
  const uint64_t rms_ffn = wo + L * dim * dim, w1 = rms_ffn + L * dim, w2 = w1 + L * hidden * dim;
  const uint64_t w3 = w2 + L * dim * hidden, norm = w3 + L * hidden * dim;
  struct Probe {
    const char *name;
    uint64_t start;
  } probes[] = {
      {"model.embed_tokens.weight", emb},
      {"model.layers.1.input_layernorm.weight", rms_att + 1 * dim},
      {"model.layers.2.self_attn.q_proj.weight", wq + 2 * dim * dim},
      {"model.layers.3.self_attn.k_proj.weight", wk + 3 * kv * dim},
      {"model.layers.4.self_attn.v_proj.weight", wv + 4 * kv * dim},
      {"model.layers.0.self_attn.o_proj.weight", wo},
      {"model.layers.2.post_attention_layernorm.weight", rms_ffn + 2 * dim},
      {"model.layers.1.mlp.gate_proj.weight", w1 + 1 * hidden * dim},
      {"model.layers.3.mlp.down_proj.weight", w2 + 3 * dim * hidden},
      {"model.layers.4.mlp.up_proj.weight", w3 + 4 * hidden * dim},
      {"model.norm.weight", norm},
  };
  for (const auto &pr : probes) {
    const ModelTensor *t = m.find(pr.name);
    REQUIRE(t != nullptr);
    const auto v = t->load();
    REQUIRE(v.size() == t->info.numel());
    CAPTURE(pr.name);
    CHECK(v.front() == raw_float(bytes, pr.start));
    CHECK(v[v.size() / 2 + 1] == raw_float(bytes, pr.start + v.size() / 2 + 1));
    CHECK(v.back() == raw_float(bytes, pr.start + v.size() - 1));
  }
  // RMSNorm weights of a trained model are near 1, unlike the neighbouring matrices.
  const auto n = m.find("model.norm.weight")->load();
  float mean = 0;
  for (float x : n) mean += x / 64;
  CHECK(mean > 0.2f);
  CHECK(norm + dim == 260032);
}

TEST_CASE("aidreams260K loads") {
  const Model m =
      read_llama2c(nwc::test::data_dir() / "models" / "aidreams260K" / "aidreams260K.bin");
  CHECK(m.arch.n_layers == 4);
  CHECK(m.arch.n_heads == 4);
  CHECK(m.arch.n_kv_heads == 4);
  CHECK(m.arch.max_seq_len == 128);
  CHECK(m.find("model.layers.3.self_attn.k_proj.weight")->info.shape ==
        std::vector<int64_t>{64, 64});
  uint64_t params = 0;
  for (const auto &t : m.tensors) params += t.info.numel();
  CHECK(params == 230976);
  CHECK(m.find("model.layers.3.mlp.down_proj.weight")->load().size() == 64 * 172);
}

TEST_CASE("llama2.c: files without freq_cis and with a separate classifier") {
  TempDir dir;
  auto bytes = nwc::test::read_bytes(nwc::test::stories260k());
  const size_t freq_bytes = 512 * 4 * 2 * 4;
  // Without freq_cis: same tensors.
  std::vector<uint8_t> nofreq(bytes.begin(), bytes.end() - static_cast<long>(freq_bytes));
  nwc::test::write_bytes(dir / "nofreq.bin", nofreq);
  const Model a = read_llama2c(dir / "nofreq.bin");
  CHECK(a.find("model.norm.weight")->load() ==
        read_llama2c(nwc::test::stories260k()).find("model.norm.weight")->load());
  // Negative vocab: a classifier follows freq_cis.
  std::vector<uint8_t> cls = bytes;
  const int32_t neg = -512;
  std::memcpy(cls.data() + 20, &neg, 4);
  std::vector<float> wcls(512 * 64);
  for (size_t i = 0; i < wcls.size(); ++i) wcls[i] = static_cast<float>(i) * 0.5f;
  const auto *wb = reinterpret_cast<const uint8_t *>(wcls.data());
  cls.insert(cls.end(), wb, wb + wcls.size() * 4);
  nwc::test::write_bytes(dir / "cls.bin", cls);
  const Model b = read_llama2c(dir / "cls.bin");
  CHECK_FALSE(b.arch.tied_embeddings);
  CHECK(b.arch.vocab_size == 512);
  const ModelTensor *head = b.find("lm_head.weight");
  REQUIRE(head != nullptr);
  CHECK(head->info.shape == std::vector<int64_t>{512, 64});
  CHECK(head->load() == wcls);
}

TEST_CASE("llama2.c: damaged files are rejected with clear errors") {
  TempDir dir;
  const auto bytes = nwc::test::read_bytes(nwc::test::stories260k());

  std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 40000);
  nwc::test::write_bytes(dir / "cut.bin", cut);
  std::string e = error_of(dir / "cut.bin");
  CHECK(contains(e, (dir / "cut.bin").string() + ": truncated llama2.c file"));
  CHECK(contains(e, "1056540"));

  nwc::test::write_bytes(dir / "tiny.bin", bytes.data(), 10);
  CHECK(contains(error_of(dir / "tiny.bin"), "truncated"));

  auto extra = bytes;
  extra.insert(extra.end(), {0, 0, 0, 0});
  nwc::test::write_bytes(dir / "extra.bin", extra);
  e = error_of(dir / "extra.bin");
  CHECK(contains(e, "does not match the header"));
  CHECK(contains(e, "1056544"));

  auto set_field = [&](int index, int32_t value, const char *name) {
    auto b = bytes;
    std::memcpy(b.data() + 4 * index, &value, 4);
    const auto p = dir / (std::string(name) + ".bin");
    nwc::test::write_bytes(p, b);
    return error_of(p);
  };
  CHECK(contains(set_field(0, 0, "dim0"), "dim = 0"));
  CHECK(contains(set_field(0, -64, "dimneg"), "dim = -64"));
  CHECK(contains(set_field(2, 1 << 30, "layers"), "n_layers"));
  CHECK(contains(set_field(3, 7, "heads"), "not a multiple of n_heads"));
  CHECK(contains(set_field(4, 3, "kv"), "not a multiple of n_kv_heads"));
  CHECK(contains(set_field(5, 0, "vocab"), "vocab_size = 0"));
  CHECK(contains(set_field(6, 0x7fffffff, "seq"), "seq_len"));
  CHECK(contains(set_field(1, 200, "hidden"), "truncated"));
}
