// load_model: the reader is chosen by content, an extension that names a format is a claim that
// is checked, and Architecture survives a JSON round trip.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/formats/safetensors.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

using namespace nwc;
using nwc::test::TempDir;

namespace {

std::string error_of(const std::filesystem::path &p) {
  try {
    load_model(p);
  } catch (const Error &e) {
    const std::string msg = e.what();
    CHECK(msg.rfind(p.string() + ":", 0) == 0);
    return msg;
  }
  return "(no error)";
}

void write_small_safetensors(const std::filesystem::path &p) {
  SafetensorsWriter w(p, {{"model.embed_tokens.weight", DType::F32, {2, 2}}});
  const float v[4] = {1, 2, 3, 4};
  w.write("model.embed_tokens.weight", v);
  w.commit();
}

} // namespace

TEST_CASE("load_model picks the reader by content") {
  TempDir dir;
  CHECK(load_model(nwc::test::stories260k()).format == "llama2c");

  write_small_safetensors(dir / "m.safetensors");
  CHECK(load_model(dir / "m.safetensors").format == "safetensors");
  // Safetensors content under an unrelated extension is still recognised.
  std::filesystem::copy_file(dir / "m.safetensors", dir / "weights.dat");
  CHECK(load_model(dir / "weights.dat").format == "safetensors");
  std::filesystem::remove(dir / "weights.dat");
  // A directory is a safetensors checkpoint.
  const Model d = load_model(dir.path());
  CHECK(d.format == "safetensors");
  CHECK(d.find("model.embed_tokens.weight")->load() == std::vector<float>{1, 2, 3, 4});

  // GGUF magic is recognised whatever the extension.
  std::vector<uint8_t> gguf = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  gguf.resize(24, 0); // zero tensors, zero kv pairs
  nwc::test::write_bytes(dir / "model.bin", gguf);
  CHECK(load_model(dir / "model.bin").format == "gguf");
  nwc::test::write_bytes(dir / "model.gguf", gguf);
  CHECK(load_model(dir / "model.gguf").format == "gguf");
}

TEST_CASE("load_model: wrong content for the claimed format, unknown files, missing paths") {
  TempDir dir;
  const std::string text = "just some text, long enough to have a header\n";
  nwc::test::write_bytes(dir / "x.gguf", text.data(), text.size());
  CHECK(error_of(dir / "x.gguf") == (dir / "x.gguf").string() + ": not a GGUF file (bad magic)");

  nwc::test::write_bytes(dir / "x.safetensors", text.data(), text.size());
  CHECK(error_of(dir / "x.safetensors").find("not a safetensors file") != std::string::npos);

  // Safetensors content in a .gguf file is not silently read as safetensors.
  write_small_safetensors(dir / "real.safetensors");
  std::filesystem::copy_file(dir / "real.safetensors", dir / "fake.gguf");
  CHECK(error_of(dir / "fake.gguf").find("not a GGUF file (bad magic)") != std::string::npos);

  nwc::test::write_bytes(dir / "notes.txt", text.data(), text.size());
  CHECK(error_of(dir / "notes.txt") ==
        (dir / "notes.txt").string() +
            ": unrecognized model format (expected a llama2.c .bin, a .safetensors file or "
            "directory, or a .gguf file)");

  nwc::test::write_bytes(dir / "text.bin", text.data(), text.size());
  CHECK(error_of(dir / "text.bin").find("llama2.c") != std::string::npos);

  const auto missing = dir / "nope" / "model.bin";
  try {
    load_model(missing);
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()) == missing.string() + ": no such file or directory");
  }
}

TEST_CASE("Architecture JSON round trip and type checks") {
  Architecture a;
  a.family = "llama";
  a.dim = 64;
  a.hidden_dim = 172;
  a.n_layers = 5;
  a.n_heads = 8;
  a.n_kv_heads = 4;
  a.vocab_size = 512;
  a.max_seq_len = 512;
  a.norm_eps = 1e-6;
  a.rope_theta = 5e5;
  a.rope_style = "interleaved";
  a.tied_embeddings = true;
  const nlohmann::json j = a.to_json();
  CHECK(j.size() == 12);
  CHECK(j["hidden_dim"] == 172);
  CHECK(j["tied_embeddings"] == true);
  CHECK(j["rope_style"] == "interleaved");
  const Architecture b = Architecture::from_json(j);
  CHECK(b.to_json() == j);
  CHECK(b.n_kv_heads == 4);
  CHECK(b.norm_eps == 1e-6);

  nlohmann::json bad = j;
  bad["dim"] = "64";
  CHECK_THROWS_AS(Architecture::from_json(bad), Error);
  bad = j;
  bad["tied_embeddings"] = 1;
  CHECK_THROWS_AS(Architecture::from_json(bad), Error);
  CHECK_THROWS_AS(Architecture::from_json(nlohmann::json::array()), Error);
  // Missing keys keep their defaults.
  const Architecture c = Architecture::from_json(nlohmann::json{{"dim", 8}});
  CHECK(c.dim == 8);
  CHECK(c.n_layers == 0);
  CHECK(c.norm_eps == 1e-5);

  // The variant fields: written only when they differ from plain Llama (the 12 keys above),
  // read back, and absent keys (JSON written before they existed) leave plain Llama.
  Architecture v = a;
  v.family = "qwen3";
  v.head_dim = 16;
  v.attention_bias = v.attention_out_bias = v.mlp_bias = v.qk_norm = true;
  v.sliding_window = 4096;
  v.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  const nlohmann::json vj = v.to_json();
  CHECK(vj.size() == 19);
  CHECK(vj["rope_scaling"]["original_max_position_embeddings"] == 8192);
  const Architecture w = Architecture::from_json(vj);
  CHECK(w.to_json() == vj);
  CHECK(w.head_size() == 16);
  CHECK(w.attention_dim() == 128);
  CHECK(w.rope_scaling.factor == 8.0);
  CHECK(w.qk_norm);
  CHECK(llama_variant_fields(w) ==
        std::vector<std::string>{"head_dim", "attention_bias", "attention_out_bias", "mlp_bias",
                                 "qk_norm", "sliding_window", "rope_scaling"});
  CHECK(llama_variant_fields(b).empty());
  CHECK(b.head_size() == 8);
  CHECK_FALSE(b.qk_norm);
  CHECK(b.rope_scaling.type.empty());
  bad = vj;
  bad["qk_norm"] = "yes";
  CHECK_THROWS_WITH_AS(Architecture::from_json(bad), doctest::Contains("qk_norm"), Error);
  bad = vj;
  bad["rope_scaling"]["factor"] = "8";
  CHECK_THROWS_WITH_AS(Architecture::from_json(bad), doctest::Contains("rope_scaling.factor"),
                       Error);

  TensorInfo t{"x", DType::F16, {3, 4, 5}};
  CHECK(t.numel() == 60);
  TensorInfo scalar{"s", DType::F32, {}};
  CHECK(scalar.numel() == 1);
}
