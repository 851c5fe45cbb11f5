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

namespace {

// config.json with the given keys over a plain Llama one; read back by read_hf_config.
Architecture read_config(const test::TempDir &dir, const json &keys) {
  json c = hf_llama_config(gqa_arch(), DType::F32);
  for (auto it = keys.begin(); it != keys.end(); ++it) c[it.key()] = it.value();
  const std::string text = c.dump();
  test::write_bytes(dir / "config.json", text.data(), text.size());
  return read_hf_config(dir / "config.json");
}

// The error read_hf_config gives: one line that names the field.
std::string refusal(const test::TempDir &dir, const json &keys) {
  try {
    read_config(dir, keys);
  } catch (const nwc::Error &e) {
    return e.what();
  }
  return "(no error)";
}

} // namespace

TEST_CASE("config.json variants: each model type's biases and norms and head size and window") {
  test::TempDir dir;
  Architecture a =
      read_config(dir, {{"head_dim", 16}, {"attention_bias", true}, {"mlp_bias", true}});
  CHECK(a.family == "llama");
  CHECK(a.head_size() == 16);
  CHECK(a.attention_bias);
  CHECK(a.attention_out_bias); // Llama's attention_bias covers o_proj too
  CHECK(a.mlp_bias);
  CHECK_FALSE(a.qk_norm);
  CHECK(a.sliding_window == 0);

  a = read_config(dir, {{"model_type", "qwen2"}, {"attention_bias", false}, {"mlp_bias", true}});
  CHECK(a.attention_bias); // Qwen2Attention: q/k/v biases whatever the config says
  CHECK_FALSE(a.attention_out_bias);
  CHECK_FALSE(a.mlp_bias);

  a = read_config(dir, {{"model_type", "qwen3"}});
  CHECK(a.qk_norm);
  CHECK(a.head_dim == 128); // Qwen3Config's default
  CHECK_FALSE(a.attention_bias);
  a = read_config(dir, {{"model_type", "qwen3"}, {"head_dim", 8}, {"attention_bias", true}});
  CHECK(a.head_dim == 8);
  CHECK(a.attention_out_bias);
  CHECK(read_config(dir, {{"model_type", "qwen3"}, {"use_sliding_window", false}}).qk_norm);

  CHECK(read_config(dir, {{"model_type", "mistral"}}).sliding_window == 4096);
  CHECK(read_config(dir, {{"model_type", "mistral"}, {"sliding_window", nullptr}}).sliding_window ==
        0);
  CHECK(read_config(dir, {{"model_type", "mistral"}, {"sliding_window", 32}}).sliding_window == 32);
  CHECK_FALSE(
      read_config(dir, {{"model_type", "mistral"}, {"attention_bias", true}}).attention_bias);

  const json llama3 = {{"rope_type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  a = read_config(dir, {{"rope_scaling", llama3}});
  CHECK(a.rope_scaling.type == "llama3");
  CHECK(a.rope_scaling.factor == 32.0);
  CHECK(a.rope_scaling.original_max_position_embeddings == 8192);
  json legacy = llama3; // transformers < 4.45 wrote "type"
  legacy.erase("rope_type");
  legacy["type"] = "llama3";
  CHECK(read_config(dir, {{"rope_scaling", legacy}}).rope_scaling.type == "llama3");
  CHECK(read_config(dir, {{"rope_scaling", nullptr}}).rope_scaling.type.empty());
  CHECK(read_config(dir, {{"rope_scaling", {{"rope_type", "default"}}}}).rope_scaling.type.empty());
  // transformers 5: rope_parameters holds rope_theta and the type.
  json params = llama3;
  params["rope_theta"] = 123.0;
  a = read_config(dir, {{"rope_parameters", params}});
  CHECK(a.rope_theta == 123.0);
  CHECK(a.rope_scaling.factor == 32.0);
}

TEST_CASE("config.json: unsupported fields are refused with one line naming the field") {
  test::TempDir dir;
  const struct {
    json keys;
    const char *field;
  } cases[] = {
      {{{"model_type", "gemma"}}, "model_type 'gemma'"},
      {{{"model_type", "phi3"}}, "model_type 'phi3'"},
      {{{"hidden_act", "gelu_pytorch_tanh"}}, "hidden_act 'gelu_pytorch_tanh'"},
      {{{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}},
       "rope_scaling.rope_type 'yarn'"},
      {{{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}},
       "rope_scaling.rope_type 'linear'"},
      {{{"rope_parameters", {{"rope_type", "dynamic"}}}}, "rope_parameters.rope_type 'dynamic'"},
      {{{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}}},
       "rope_scaling.low_freq_factor is missing"},
      {{{"partial_rotary_factor", 0.5}}, "partial_rotary_factor"},
      {{{"model_type", "qwen2"}, {"use_sliding_window", true}}, "use_sliding_window"},
  };
  for (const auto &c : cases) {
    const std::string what = refusal(dir, c.keys);
    INFO(what);
    CHECK(what.find(c.field) != std::string::npos);
    CHECK(what.find('\n') == std::string::npos);
  }
}

TEST_CASE("config.json variants round trip through the writer that refuses what a type lacks") {
  test::TempDir dir;
  auto round_trip = [&](const Architecture &a) {
    write_hf_config(dir / "config.json", a, DType::BF16);
    const Architecture b = read_hf_config(dir / "config.json");
    CHECK(b.to_json() == a.to_json());
    const std::vector<uint8_t> bytes = test::read_bytes(dir / "config.json");
    return json::parse(bytes.begin(), bytes.end());
  };
  Architecture a = gqa_arch();
  a.head_dim = 16;
  a.attention_bias = a.attention_out_bias = a.mlp_bias = true;
  a.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  json c = round_trip(a);
  CHECK(c.at("head_dim") == 16);
  CHECK(c.at("rope_scaling").at("rope_type") == "llama3");

  a = gqa_arch();
  a.family = "qwen2";
  a.attention_bias = true;
  c = round_trip(a);
  CHECK(c.at("architectures") == json::array({"Qwen2ForCausalLM"}));
  CHECK_FALSE(c.contains("head_dim"));

  a = gqa_arch();
  a.family = "qwen3";
  a.qk_norm = true;
  a.head_dim = 128;
  c = round_trip(a);
  CHECK(c.at("architectures") == json::array({"Qwen3ForCausalLM"}));
  CHECK(c.at("head_dim") == 128);

  a = gqa_arch();
  a.family = "mistral";
  a.sliding_window = 4096;
  CHECK(round_trip(a).at("sliding_window") == 4096);
  a.sliding_window = 0;
  CHECK(round_trip(a).at("sliding_window").is_null()); // absent would mean 4096

  auto refused = [&](Architecture b, const char *field) {
    try {
      hf_llama_config(b, DType::F32);
      FAIL("expected a refusal naming " << field);
    } catch (const nwc::Error &e) {
      CHECK(std::string(e.what()).find(field) != std::string::npos);
    }
  };
  Architecture b = gqa_arch();
  b.family = "qwen2"; // without its q/k/v biases
  refused(b, "attention_bias");
  b.attention_bias = true;
  b.mlp_bias = true;
  refused(b, "mlp_bias");
  b = gqa_arch();
  b.attention_bias = true; // Llama cannot have q/k/v biases without o's
  refused(b, "attention_out_bias");
  b = gqa_arch();
  b.qk_norm = true;
  refused(b, "qk_norm");
  b = gqa_arch();
  b.sliding_window = 16;
  refused(b, "sliding_window");
  b = gqa_arch();
  b.family = "gemma";
  refused(b, "model_type 'gemma'");
}
