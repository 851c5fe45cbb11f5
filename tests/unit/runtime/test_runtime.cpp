// The Llama runtime against the reference values of ../shared/data/README.md: ppl-v1 NLL of
// stories260K on the whole evaluation text and on its first 20,480 tokens, greedy generation equal
// byte for byte to greedy_output.txt, the HF-layout export evaluating to the same NLL, and
// TinyStories-656K's HF directory against its reference NLL; the KL divergence to a reference model
// against its definition over the scored positions.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/gguf.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/runtime/awq.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "nwc/tools/convert.hpp"
#include "test_support.hpp"

#include <cmath>
#include <doctest/doctest.h>

using namespace nwc;
using namespace nwc::tools;
using namespace nwc::runtime;

namespace {
std::filesystem::path stories_dir() {
  return test::data_dir() / "models" / "stories260K";
}
std::unique_ptr<Tokenizer> tokenizer() {
  return load_tokenizer(stories_dir() / "tok512.bin", 512);
}
std::vector<int32_t> eval_stream(const Tokenizer &tok) {
  return ppl_token_stream(read_text_file(test::data_dir() / "text" / "tinystories-eval.txt"), tok);
}
} // namespace

TEST_CASE("ppl-v1 on the whole tinystories-eval.txt: NLL 1.5289 over 370 windows") {
  Model model = load_model(test::stories260k());
  LlamaModel llama(model, 1);
  auto tok = tokenizer();
  EvalResult r = evaluate_ppl(llama, eval_stream(*tok), {});
  CHECK(r.protocol == std::string("ppl-v1"));
  CHECK(r.tokens == 189798);
  CHECK(r.windows == 370);
  CHECK(r.seq_len == 512);
  CHECK(r.predicted_tokens == 189070);
  CHECK(std::abs(r.nll - 1.5289) <= 0.0005);
  CHECK(std::abs(r.ppl - 4.613) <= 0.003);
}

TEST_CASE("ppl-v1 with --max-tokens 20480: NLL 1.40716 over 40 windows") {
  Model model = load_model(test::stories260k());
  LlamaModel llama(model, 1);
  auto tok = tokenizer();
  EvalSettings s;
  s.max_tokens = 20480;
  s.batch = 3; // batching must not change the result
  EvalResult r = evaluate_ppl(llama, eval_stream(*tok), s);
  CHECK(r.windows == 40);
  CHECK(r.predicted_tokens == 20440);
  CHECK(std::abs(r.nll - 1.40716) <= 0.0005);
}

TEST_CASE("ppl-v1 KL to a reference: 0 for the model itself, the definition for a sharper one") {
  Model model = load_model(test::stories260k());
  LlamaModel llama(model, 1);
  const auto stream = eval_stream(*tokenizer());
  EvalSettings s;
  s.max_tokens = 2048; // 4 windows of 512
  s.threads = 2;
  const EvalResult plain = evaluate_ppl(llama, stream, s);
  CHECK_FALSE(plain.kl.has_value());
  s.reference = &llama;
  const EvalResult same = evaluate_ppl(llama, stream, s);
  REQUIRE(same.kl.has_value());
  CHECK(*same.kl == 0.0);
  CHECK(same.nll == plain.nll); // the NLL does not change with a reference

  // The final norm's weights times 1.5 multiply every logit by 1.5 (the head is linear): q =
  // softmax(1.5 z). The KL from p = softmax(z), computed here from the original's logits over
  // the 511 scored positions of each window, is what the evaluation reports.
  std::vector<float> gain = model.find("model.norm.weight")->load();
  for (float &g : gain) g *= 1.5f;
  LlamaModel sharper(with_replaced_tensors(model, {{"model.norm.weight", gain}}), 1);
  const EvalResult r = evaluate_ppl(sharper, stream, s);
  const int64_t vocab = model.arch.vocab_size, seq = 512, windows = 4;
  const std::vector<int32_t> ids(stream.begin(), stream.begin() + windows * seq);
  const std::vector<float> z = llama.logits(ids, windows, seq);
  double total = 0;
  for (int64_t w = 0; w < windows; ++w)
    for (int64_t t = 0; t + 1 < seq; ++t) {
      const float *row = z.data() + (w * seq + t) * vocab;
      double zp = 0, zq = 0, top = row[0];
      for (int64_t v = 0; v < vocab; ++v) top = std::max(top, static_cast<double>(row[v]));
      for (int64_t v = 0; v < vocab; ++v) {
        zp += std::exp(row[v] - top);
        zq += std::exp(1.5 * (row[v] - top));
      }
      for (int64_t v = 0; v < vocab; ++v) {
        const double lp = row[v] - top - std::log(zp), lq = 1.5 * (row[v] - top) - std::log(zq);
        total += std::exp(lp) * (lp - lq);
      }
    }
  REQUIRE(r.kl.has_value());
  CHECK(*r.kl > 0.01);
  CHECK(*r.kl == doctest::Approx(total / static_cast<double>(windows * (seq - 1))).epsilon(1e-4));
}

TEST_CASE("TinyStories-656K (HF directory, tied embeddings, GQA): NLL 4.13412 as the data README") {
  // The directory stores its tied embedding once, as lm_head.weight, with a safetensors metadata
  // alias; the reference NLL comes from an independent PyTorch forward pass.
  const auto dir = test::data_dir() / "models" / "tinystories656K";
  Model model = load_model(dir);
  CHECK(model.arch.tied_embeddings);
  CHECK(model.arch.n_kv_heads == 4);
  LlamaModel llama(model, 1);
  auto tok = load_tokenizer(dir, 2048);
  EvalResult r = evaluate_ppl(
      llama,
      ppl_token_stream(read_text_file(test::data_dir() / "text" / "tinystories-eval.txt"), *tok),
      {});
  CHECK(r.windows == 190);
  CHECK(r.predicted_tokens == 97090);
  CHECK(std::abs(r.nll - 4.13412) <= 0.0001);
}

TEST_CASE("greedy generation from BOS reproduces greedy_output.txt byte for byte") {
  Model model = load_model(test::stories260k());
  LlamaModel llama(model, 1);
  auto tok = tokenizer();
  std::vector<int32_t> ids;
  std::string text = generate_text(llama, *tok, "", 511, &ids);
  auto expected = test::read_bytes(stories_dir() / "greedy_output.txt");
  // llama2.c ends its output with a newline after the last piece.
  CHECK(text + "\n" == std::string(expected.begin(), expected.end()));
  CHECK(ids.back() == tok->bos_id()); // it stopped at BOS, not at the step limit
}

TEST_CASE("the HF-layout export (rotate-half RoPE, permuted q/k) evaluates to the same NLL") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  write_hf_directory(model, dir / "hf", DType::F32);
  Model hf = load_model(dir / "hf");
  CHECK(hf.arch.rope_style == "rotate_half");
  CHECK(hf.format == "safetensors");
  // The permutation really happened: q_proj rows differ from the llama2.c file.
  CHECK(hf.find("model.layers.0.self_attn.q_proj.weight")->load() !=
        model.find("model.layers.0.self_attn.q_proj.weight")->load());
  auto tok = tokenizer();
  EvalSettings s;
  s.max_tokens = 20480;
  LlamaModel a(model, 1), b(hf, 1);
  auto stream = eval_stream(*tok);
  double nll_a = evaluate_ppl(a, stream, s).nll, nll_b = evaluate_ppl(b, stream, s).nll;
  CHECK(std::abs(nll_a - nll_b) <= 1e-4);
  // Exporting into an existing directory is refused and leaves it alone.
  CHECK_THROWS_WITH_AS(write_hf_directory(model, dir / "hf", DType::F32),
                       doctest::Contains("already exists"), nwc::Error);
}

TEST_CASE(
    "the model written as GGUF (and the HF export written as GGUF) evaluates to the same NLL") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  write_gguf(model, dir / "s.gguf", DType::F32);
  write_hf_directory(model, dir / "hf", DType::F32);
  write_gguf(load_model(dir / "hf"), dir / "from-hf.gguf", DType::F32);
  Model g = load_model(dir / "s.gguf"), g2 = load_model(dir / "from-hf.gguf");
  CHECK(g.format == "gguf");
  CHECK(g.arch.n_kv_heads == 4);
  // Both routes give the llama2.c tensors back exactly (the HF route permutes and un-permutes).
  for (const auto &t : model.tensors) {
    INFO(t.info.name);
    REQUIRE(g.find(t.info.name) != nullptr);
    CHECK(g.find(t.info.name)->load() == t.load());
    CHECK(g2.find(t.info.name)->load() == t.load());
  }
  auto tok = tokenizer();
  EvalSettings s;
  s.max_tokens = 20480;
  LlamaModel a(model, 1), b(g, 1);
  auto stream = eval_stream(*tok);
  CHECK(std::abs(evaluate_ppl(a, stream, s).nll - evaluate_ppl(b, stream, s).nll) <= 1e-6);
}

TEST_CASE("runtime refuses models it cannot run, with the reason") {
  Model model = load_model(test::stories260k());
  Model broken = model;
  broken.tensors.erase(broken.tensors.begin() + 3);
  CHECK_THROWS_WITH_AS(LlamaModel(broken, 1), doctest::Contains("missing tensor"), nwc::Error);
  LlamaModel llama(model, 1);
  CHECK_THROWS_WITH_AS(llama.window_nll(std::vector<int32_t>(4, 600), 1, 4),
                       doctest::Contains("outside the vocabulary"), nwc::Error);
  EvalSettings s;
  s.seq_len = 1024;
  CHECK_THROWS_WITH_AS(evaluate_ppl(llama, std::vector<int32_t>(2048, 5), s),
                       doctest::Contains("exceeds the model's maximum"), nwc::Error);
}

TEST_CASE("ppl-v1 document splitting: CRLF, blank lines, stripping, empty documents") {
  auto tok = tokenizer();
  auto a = ppl_token_stream("Hello there.\r\n\r\n\r\n  Bye now.  \n\n\n\n", *tok);
  auto h = tok->encode("Hello there.", true, false), b = tok->encode("Bye now.", true, false);
  std::vector<int32_t> expected = h;
  expected.insert(expected.end(), b.begin(), b.end());
  CHECK(a == expected);
}
