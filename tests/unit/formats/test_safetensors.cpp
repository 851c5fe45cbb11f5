// safetensors: writer/reader round trips, sharded directories, and crafted bad headers.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"
#include "test_support.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <random>

using namespace nwc;
using nwc::test::TempDir;

namespace {

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (static_cast<float>(i) - 7.3f) * scale;
  return v;
}

// A raw safetensors file: the given header text (length field = its size unless overridden).
void craft(const std::filesystem::path &p, const std::string &header, size_t data_bytes,
           uint64_t length_field = UINT64_MAX) {
  const uint64_t n = length_field == UINT64_MAX ? header.size() : length_field;
  std::vector<uint8_t> b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  nwc::test::write_bytes(p, b);
}

std::string error_of(const std::filesystem::path &p, nwc_status expect = NWC_E_CORRUPT_STREAM) {
  try {
    read_safetensors(p);
  } catch (const Error &e) {
    CHECK(e.code() == expect);
    const std::string msg = e.what();
    CHECK(msg.rfind(p.string() + ":", 0) == 0); // names the path first
    CHECK(msg.find('\n') == std::string::npos); // one line
    return msg;
  }
  return "(no error)";
}

bool contains(const std::string &s, const std::string &sub) {
  return s.find(sub) != std::string::npos;
}

} // namespace

TEST_CASE("safetensors: write F32/F16/BF16 and read back") {
  TempDir dir;
  const auto out = dir / "m.safetensors";
  const std::vector<TensorInfo> infos = {
      {"a.weight", DType::F32, {3, 5}},
      {"b.weight", DType::F16, {4, 2}},
      {"c.bias", DType::BF16, {7}},
      {"d.idx", DType::I32, {2}},
  };
  const auto a = ramp(15, 0.37f), b = ramp(8, 1.1f), c = ramp(7, -3.3f);
  const int32_t d[2] = {-3, 100000};
  {
    SafetensorsWriter w(out, infos, {{"format", "pt"}, {"note", "hello"}});
    w.write("a.weight", a.data());
    CHECK_THROWS_AS(w.write("c.bias", c.data()), Error); // out of order
    w.write("b.weight", b.data());
    w.write("c.bias", c.data());
    CHECK_THROWS_AS(w.write_raw("d.idx", d, 7), Error); // wrong byte count
    w.write_raw("d.idx", d, sizeof d);
    w.commit();
  }
  CHECK(dir.entries() == std::vector<std::string>{"m.safetensors"});
  // Header is padded so that the data area is 8-byte aligned.
  const auto bytes = nwc::test::read_bytes(out);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 15 * 4 + 8 * 2 + 7 * 2 + 2 * 4);

  const Model m = read_safetensors(out);
  CHECK(m.format == "safetensors");
  REQUIRE(m.tensors.size() == 4);
  CHECK(m.tensors[0].info.name == "a.weight"); // file order
  CHECK(m.tensors[3].info.name == "d.idx");
  CHECK(m.find("a.weight")->info.dtype == DType::F32);
  CHECK(m.find("b.weight")->info.dtype == DType::F16);
  CHECK(m.find("c.bias")->info.dtype == DType::BF16);
  CHECK(m.find("b.weight")->info.shape == std::vector<int64_t>{4, 2});
  CHECK(m.find("a.weight")->load() == a);
  const auto b2 = m.find("b.weight")->load();
  const auto c2 = m.find("c.bias")->load();
  for (size_t i = 0; i < b.size(); ++i) CHECK(b2[i] == f16_to_f32(f32_to_f16(b[i])));
  for (size_t i = 0; i < c.size(); ++i) CHECK(c2[i] == bf16_to_f32(f32_to_bf16(c[i])));
  CHECK(b2[1] != b[1]); // really was rounded: 1.1 * -6.3 is not a half
  CHECK(m.find("d.idx")->load() == std::vector<float>{-3.0f, 100000.0f});
  CHECK(m.metadata["__metadata__"]["note"] == "hello");
  CHECK(m.metadata["__metadata__"]["format"] == "pt");
  // No config.json and no embedding: nothing says the classifier is tied.
  CHECK_FALSE(m.arch.tied_embeddings);
}

TEST_CASE("safetensors: writer destroyed without commit leaves no file") {
  TempDir dir;
  const std::vector<TensorInfo> infos = {{"x", DType::F32, {2}}};
  {
    SafetensorsWriter w(dir / "x.safetensors", infos);
    const float v[2] = {1, 2};
    w.write("x", v);
  }
  CHECK(dir.entries().empty());
  {
    SafetensorsWriter w(dir / "y.safetensors", infos);
    CHECK_THROWS_AS(w.commit(), Error); // tensor missing
  }
  CHECK(dir.entries().empty());
  CHECK_THROWS_AS(
      SafetensorsWriter(dir / "z.safetensors", {{"x", DType::F32, {1}}, {"x", DType::F32, {1}}}),
      Error);
  CHECK(dir.entries().empty());
}

TEST_CASE("safetensors: a tensor written in parts equals one written whole") {
  TempDir dir;
  const std::vector<TensorInfo> infos = {{"a", DType::F32, {4, 3}}, {"b", DType::F32, {2}}};
  const auto a = ramp(12, 0.5f), b = ramp(2, 2.0f);
  {
    SafetensorsWriter w(dir / "whole.safetensors", infos);
    w.write("a", a.data());
    w.write("b", b.data());
    w.commit();
  }
  {
    SafetensorsWriter w(dir / "parts.safetensors", infos);
    w.write_raw_part("a", a.data(), 5 * sizeof(float));
    w.write_raw_part("a", a.data() + 5, 0);
    CHECK_THROWS_AS(w.write("a", a.data()), Error);             // a is half written
    CHECK_THROWS_AS(w.write_raw_part("b", b.data(), 4), Error); // a comes first
    CHECK_THROWS_AS(w.write_raw_part("a", a.data() + 5, 8 * sizeof(float)), Error); // past a's end
    CHECK_THROWS_AS(w.commit(), Error);
    w.write_raw_part("a", a.data() + 5, 7 * sizeof(float));
    w.write_raw_part("b", b.data(), 2 * sizeof(float));
    w.commit();
  }
  CHECK(nwc::test::read_bytes(dir / "whole.safetensors") ==
        nwc::test::read_bytes(dir / "parts.safetensors"));
}

TEST_CASE("safetensors: sharded directory with index and config.json") {
  TempDir dir;
  const auto e = ramp(6 * 4, 0.5f), q = ramp(4 * 4, 0.25f), h = ramp(6 * 4, -1.0f);
  {
    SafetensorsWriter w(dir / "model-00001-of-00002.safetensors",
                        {{"model.embed_tokens.weight", DType::F32, {6, 4}},
                         {"model.layers.0.self_attn.q_proj.weight", DType::F32, {4, 4}}});
    w.write("model.embed_tokens.weight", e.data());
    w.write("model.layers.0.self_attn.q_proj.weight", q.data());
    w.commit();
  }
  {
    SafetensorsWriter w(dir / "model-00002-of-00002.safetensors",
                        {{"lm_head.weight", DType::F16, {6, 4}}});
    w.write("lm_head.weight", h.data());
    w.commit();
  }
  const std::string index = R"({"metadata": {"total_size": 1}, "weight_map": {
      "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
      "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
      "lm_head.weight": "model-00002-of-00002.safetensors"}})";
  nwc::test::write_bytes(dir / "model.safetensors.index.json", index.data(), index.size());
  const std::string config = R"({"model_type": "llama", "hidden_size": 4,
      "intermediate_size": 11, "num_hidden_layers": 1, "num_attention_heads": 2,
      "num_key_value_heads": 1, "vocab_size": 6, "max_position_embeddings": 32,
      "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "tie_word_embeddings": false})";
  nwc::test::write_bytes(dir / "config.json", config.data(), config.size());

  const Model m = read_safetensors(dir.path());
  REQUIRE(m.tensors.size() == 3);
  CHECK(m.find("model.embed_tokens.weight")->load() == e);
  CHECK(m.find("model.layers.0.self_attn.q_proj.weight")->load() == q);
  CHECK(m.find("lm_head.weight")->info.dtype == DType::F16);
  CHECK(m.find("lm_head.weight")->load()[3] == f16_to_f32(f32_to_f16(h[3])));
  CHECK(m.arch.family == "llama");
  CHECK(m.arch.dim == 4);
  CHECK(m.arch.hidden_dim == 11);
  CHECK(m.arch.n_layers == 1);
  CHECK(m.arch.n_heads == 2);
  CHECK(m.arch.n_kv_heads == 1);
  CHECK(m.arch.vocab_size == 6);
  CHECK(m.arch.max_seq_len == 32);
  CHECK(m.arch.norm_eps == doctest::Approx(1e-6));
  CHECK(m.arch.rope_theta == 500000.0);
  CHECK(m.arch.rope_style == "rotate_half");
  CHECK_FALSE(m.arch.tied_embeddings);

  // An index naming a tensor that its shard lacks.
  const std::string bad_index = R"({"weight_map": {
      "model.embed_tokens.weight": "model-00002-of-00002.safetensors"}})";
  nwc::test::write_bytes(dir / "model.safetensors.index.json", bad_index.data(), bad_index.size());
  CHECK(contains(error_of(dir.path()), "does not contain it"));
  // An index naming a missing shard.
  const std::string missing = R"({"weight_map": {"x": "model-00009.safetensors"}})";
  nwc::test::write_bytes(dir / "model.safetensors.index.json", missing.data(), missing.size());
  try {
    read_safetensors(dir.path());
    FAIL("expected an error");
  } catch (const Error &err) {
    CHECK(contains(err.what(), "model-00009.safetensors"));
  }
  // Without an index, every *.safetensors file is read.
  std::filesystem::remove(dir / "model.safetensors.index.json");
  CHECK(read_safetensors(dir.path()).tensors.size() == 3);
  // A duplicate tensor across files is an error.
  {
    SafetensorsWriter w(dir / "model-00003.safetensors", {{"lm_head.weight", DType::F32, {1}}});
    const float one = 1;
    w.write("lm_head.weight", &one);
    w.commit();
  }
  CHECK(contains(error_of(dir.path()), "appears in both"));
}

TEST_CASE("safetensors: a tied embedding stored once as lm_head.weight") {
  // transformers / safetensors' save_model keep one name of a shared tensor; nwc's canonical form
  // of a tied model is the embedding alone, under model.embed_tokens.weight.
  TempDir dir;
  const auto head = ramp(6 * 4, 0.5f);
  auto write_head = [&](const std::map<std::string, std::string> &metadata) {
    SafetensorsWriter w(dir / "model.safetensors", {{"lm_head.weight", DType::F32, {6, 4}}},
                        metadata);
    w.write("lm_head.weight", head.data());
    w.commit();
  };
  const std::string alias = "model.embed_tokens.weight";
  SUBCASE("aliased in __metadata__") {
    write_head({{"format", "pt"}, {alias, "lm_head.weight"}});
    const Model m = read_safetensors(dir.path());
    CHECK(m.arch.tied_embeddings);
    CHECK(m.find("lm_head.weight") == nullptr);
    REQUIRE(m.find(alias) != nullptr);
    CHECK(m.find(alias)->load() == head);
    CHECK(m.find(alias)->info.name == alias);
    // The alias points at nothing now: it is not carried on.
    CHECK_FALSE(m.metadata["__metadata__"].contains(alias));
    CHECK(m.metadata["__metadata__"]["format"] == "pt");
  }
  SUBCASE("tie_word_embeddings in config.json") {
    write_head({});
    const std::string config = R"({"hidden_size": 4, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 6,
        "tie_word_embeddings": true})";
    nwc::test::write_bytes(dir / "config.json", config.data(), config.size());
    const Model m = read_safetensors(dir.path());
    CHECK(m.arch.tied_embeddings);
    REQUIRE(m.find(alias) != nullptr);
    CHECK(m.find("lm_head.weight") == nullptr);
  }
  SUBCASE("an untied head without an embedding stays what it is") {
    write_head({});
    const Model m = read_safetensors(dir.path());
    CHECK_FALSE(m.arch.tied_embeddings);
    CHECK(m.find("lm_head.weight") != nullptr);
    CHECK(m.find(alias) == nullptr);
  }
}

TEST_CASE("safetensors: a directory with no safetensors files") {
  TempDir dir;
  CHECK_THROWS_AS(read_safetensors(dir.path()), Error);
}

TEST_CASE("safetensors: crafted bad headers") {
  TempDir dir;
  const std::string good =
      R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"k":"v"}})";
  craft(dir / "good.safetensors", good, 16);
  CHECK(read_safetensors(dir / "good.safetensors").tensors.size() == 1);

  craft(dir / "len.safetensors", good, 16, 1000);
  CHECK(contains(error_of(dir / "len.safetensors"), "larger than the file"));

  craft(dir / "huge.safetensors", good, 16, 1ull << 62);
  CHECK(contains(error_of(dir / "huge.safetensors"), "exceeds the limit"));

  craft(dir / "outside.safetensors",
        R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[64,80]}})", 16);
  CHECK(contains(error_of(dir / "outside.safetensors"),
                 "tensor 'a' data [64, 80) lies outside the data area (size 16)"));

  craft(dir / "overlap.safetensors",
        R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},
            "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
        16);
  CHECK(contains(error_of(dir / "overlap.safetensors"), "overlap"));

  craft(dir / "count.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})",
        16);
  CHECK(contains(error_of(dir / "count.safetensors"), "expected 3 elements x 4 bytes"));

  craft(dir / "dtype.safetensors", R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})",
        16);
  CHECK(contains(error_of(dir / "dtype.safetensors", NWC_E_UNSUPPORTED_DTYPE), "F64"));
  craft(dir / "dtype2.safetensors", R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,16]}})",
        16);
  CHECK(contains(error_of(dir / "dtype2.safetensors", NWC_E_UNSUPPORTED_DTYPE), "'Q9'"));

  craft(dir / "json.safetensors", R"({"a":{"dtype":"F32",)", 16);
  CHECK(contains(error_of(dir / "json.safetensors"), "not valid JSON"));

  craft(dir / "trunc.safetensors", good, 10);
  CHECK(contains(error_of(dir / "trunc.safetensors"), "lies outside the data area (size 10)"));

  craft(dir / "shape.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0);
  CHECK(contains(error_of(dir / "shape.safetensors"), "non-negative"));

  craft(dir / "dims.safetensors",
        R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4);
  CHECK(contains(error_of(dir / "dims.safetensors"), "9 dimensions"));

  craft(dir / "overflow.safetensors",
        R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0);
  CHECK(contains(error_of(dir / "overflow.safetensors"), "overflows"));

  craft(dir / "meta.safetensors", R"({"__metadata__":{"k":1}})", 0);
  CHECK(contains(error_of(dir / "meta.safetensors"), "__metadata__"));

  const std::string text = "This is a plain text file, not a model at all.\n";
  nwc::test::write_bytes(dir / "text.safetensors", text.data(), text.size());
  CHECK(contains(error_of(dir / "text.safetensors"), "not a safetensors file"));
  nwc::test::write_bytes(dir / "short.safetensors", "abc", 3);
  CHECK(contains(error_of(dir / "short.safetensors"), "not a safetensors file"));
}

TEST_CASE("safetensors: random corruptions never crash") {
  TempDir dir;
  const auto path = dir / "m.safetensors";
  {
    SafetensorsWriter w(path, {{"a", DType::F32, {3, 5}}, {"b", DType::BF16, {4}}});
    const auto a = ramp(15, 1.0f), b = ramp(4, 2.0f);
    w.write("a", a.data());
    w.write("b", b.data());
    w.commit();
  }
  const auto good = nwc::test::read_bytes(path);
  std::mt19937 rng(777);
  int errors = 0, ok = 0;
  for (int iter = 0; iter < 400; ++iter) {
    auto b = good;
    const size_t limit = std::min<size_t>(b.size(), 140); // length field and JSON header
    b[rng() % limit] = static_cast<uint8_t>("0123456789{}[],:\"-x \x01\xff"[rng() % 22]);
    nwc::test::write_bytes(dir / "fuzz.safetensors", b);
    try {
      const Model m = read_safetensors(dir / "fuzz.safetensors");
      for (const auto &t : m.tensors) CHECK(t.load().size() == t.info.numel());
      ++ok;
    } catch (const Error &) {
      ++errors;
    }
  }
  CHECK(errors > 0);
  CHECK(ok > 0);
}
