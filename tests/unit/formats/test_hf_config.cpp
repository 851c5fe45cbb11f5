// The HF config.json writer: what transformers needs for LlamaForCausalLM, read back by our own
// reader (round trip), and refusals for what it cannot describe.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/formats/safetensors.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace nwc;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Llama-3.2-1B-like proportions, scaled down: grouped-query attention, tied embeddings.
Architecture gqa_arch() {
  Architecture a;
  a.family = "llama";
  a.dim = 64;
  a.hidden_dim = 172;
  a.n_layers = 3;
  a.n_heads = 8;
  a.n_kv_heads = 2;
  a.vocab_size = 300;
  a.max_seq_len = 2048;
  a.norm_eps = 1e-6;
  a.rope_theta = 500000.0;
  a.rope_style = "rotate_half";
  a.tied_embeddings = true;
  return a;
}

} // namespace

TEST_CASE("config.json has the keys transformers needs for LlamaForCausalLM") {
  const Architecture a = gqa_arch();
  const json c = hf_llama_config(a, DType::BF16);
  CHECK(c.at("architectures") == json::array({"LlamaForCausalLM"}));
  CHECK(c.at("model_type") == "llama");
  CHECK(c.at("hidden_act") == "silu");
  CHECK(c.at("hidden_size") == 64);
  CHECK(c.at("intermediate_size") == 172);
  CHECK(c.at("num_hidden_layers") == 3);
  CHECK(c.at("num_attention_heads") == 8);
  CHECK(c.at("num_key_value_heads") == 2);
  CHECK(c.at("vocab_size") == 300);
  CHECK(c.at("max_position_embeddings") == 2048);
  CHECK(c.at("rms_norm_eps").get<double>() == 1e-6);
  CHECK(c.at("rope_theta").get<double>() == 500000.0);
  CHECK(c.at("tie_word_embeddings") == true);
  CHECK(c.at("attention_bias") == false);
  CHECK(c.at("mlp_bias") == false);
  CHECK(c.at("torch_dtype") == "bfloat16");
  // The head size is hidden_size / num_attention_heads, transformers' default: not written.
  CHECK_FALSE(c.contains("head_dim"));
  CHECK(hf_llama_config(a, DType::F32).at("torch_dtype") == "float32");
  CHECK(hf_llama_config(a, DType::F16).at("torch_dtype") == "float16");
  // Integer sizes are JSON integers (transformers reads them as int).
  for (const char *k :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "vocab_size", "max_position_embeddings"})
    CHECK(c.at(k).is_number_integer());
}

TEST_CASE("config.json round trip: written, then read back by read_hf_config and load_model") {
  test::TempDir dir;
  const Architecture a = gqa_arch();
  write_hf_config(dir / "config.json", a, DType::F16, {{"nwc_note", "kept"}});
  CHECK(dir.entries() == std::vector<std::string>{"config.json"}); // no temporary left
  const std::vector<uint8_t> bytes = test::read_bytes(dir / "config.json");
  const json text = json::parse(bytes.begin(), bytes.end());
  CHECK(text.at("nwc_note") == "kept");
  CHECK(text.at("torch_dtype") == "float16");

  auto same = [&](const Architecture &b) {
    CHECK(b.family == a.family);
    CHECK(b.dim == a.dim);
    CHECK(b.hidden_dim == a.hidden_dim);
    CHECK(b.n_layers == a.n_layers);
    CHECK(b.n_heads == a.n_heads);
    CHECK(b.n_kv_heads == a.n_kv_heads);
    CHECK(b.vocab_size == a.vocab_size);
    CHECK(b.max_seq_len == a.max_seq_len);
    CHECK(b.norm_eps == a.norm_eps);
    CHECK(b.rope_theta == a.rope_theta);
    CHECK(b.rope_style == a.rope_style);
    CHECK(b.tied_embeddings == a.tied_embeddings);
  };
  same(read_hf_config(dir / "config.json"));

  // As a model directory: the config next to the weights describes the model.
  std::vector<float> emb(static_cast<size_t>(a.vocab_size * a.dim), 0.5f);
  {
    SafetensorsWriter w(
        dir / "model.safetensors",
        {TensorInfo{"model.embed_tokens.weight", DType::F16, {a.vocab_size, a.dim}}});
    w.write("model.embed_tokens.weight", emb.data());
    w.commit();
  }
  same(load_model(dir.path()).arch);

  // Untied, default epsilon: the other values of the booleans and numbers survive too.
  Architecture u = a;
  u.tied_embeddings = false;
  u.n_kv_heads = u.n_heads;
  u.norm_eps = 1e-5;
  write_hf_config(dir / "u.json", u, DType::F32);
  const Architecture back = read_hf_config(dir / "u.json");
  CHECK_FALSE(back.tied_embeddings);
  CHECK(back.n_kv_heads == 8);
  CHECK(back.norm_eps == 1e-5);
}

TEST_CASE("config.json: what it cannot describe is refused before anything is written") {
  test::TempDir dir;
  Architecture a = gqa_arch();
  a.rope_style = "interleaved";
  CHECK_THROWS_WITH_AS(write_hf_config(dir / "c.json", a, DType::F32),
                       doctest::Contains("permute_rope_rows"), nwc::Error);
  a = gqa_arch();
  a.vocab_size = 0;
  CHECK_THROWS_WITH_AS(hf_llama_config(a, DType::F32), doctest::Contains("vocabulary 0"),
                       nwc::Error);
  a = gqa_arch();
  a.n_kv_heads = 3;
  CHECK_THROWS_WITH_AS(hf_llama_config(a, DType::F32), doctest::Contains("do not divide"),
                       nwc::Error);
  CHECK_THROWS_WITH_AS(hf_llama_config(gqa_arch(), DType::I8), doctest::Contains("I8"), nwc::Error);
  CHECK_THROWS_WITH_AS(
      write_hf_config(dir / "c.json", gqa_arch(), DType::F32, {{"hidden_size", 1}}),
      doctest::Contains("would replace"), nwc::Error);
  CHECK(dir.entries().empty());
}
