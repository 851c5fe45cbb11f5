// GGUF files written by `nwc convert --layout gguf --tokenizer T` run in llama.cpp itself
// (tests/support/llama_cpp_runtime.hpp): llama.cpp's tokenizer gives nwc's ids, and the ppl-v1
// NLL computed from llama.cpp's logits equals `nwc eval`'s, for the real models and for a
// compressed container. Vocabularies of real tokenizer.json files (Llama 2, Llama 3, Qwen 3,
// Gemma 3) tokenize in llama.cpp as in nwc.
#include "cli_runner.hpp"
#include "llama_cpp_runtime.hpp"
#include "test_support.hpp"

#include "nwc/formats/gguf.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <iomanip>

using namespace nwc;
using namespace nwc::test;

namespace {

std::filesystem::path models() { return data_dir() / "models"; }
std::filesystem::path eval_text() { return data_dir() / "text" / "tinystories-eval.txt"; }

// ppl-v1's documents (DESIGN.md §7 step 1): CRLF -> LF, split at blank lines, strip, drop empty.
std::vector<std::string> documents(const std::string &raw) {
  std::string text;
  for (size_t i = 0; i < raw.size(); ++i)
    if (!(raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n')) text += raw[i];
  std::vector<std::string> docs;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    size_t a = start, b = end;
    while (a < b && std::isspace(static_cast<unsigned char>(text[a]))) ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(text[b - 1]))) --b;
    if (b > a) docs.push_back(text.substr(a, b - a));
    start = end + 2;
  }
  return docs;
}

struct LlamaCppEval {
  int64_t mismatched_docs = 0, tokens = 0, windows = 0;
  int64_t refused_docs = 0; // llama_tokenize threw (characters it has no token for)
  int64_t docs_with_unk = 0; // nwc's ids hold the unknown token
  std::string first_mismatch;
  double nll = 0;
};

// Tokenizes every document with llama.cpp (BOS as the GGUF says) and with nwc's tokenizer,
// then takes ppl-v1's windows of llama.cpp's stream (max_tokens of it) and averages the NLL.
LlamaCppEval llama_cpp_eval(const std::filesystem::path &gguf,
                            const std::filesystem::path &tokenizer, int64_t seq_len,
                            int64_t max_tokens) {
  const LlamaCpp::Model m(LlamaCpp::get(), gguf, static_cast<uint32_t>(seq_len));
  const auto ours = runtime::load_tokenizer(tokenizer);
  LlamaCppEval r;
  std::vector<int32_t> stream;
  const int32_t unk = 0; // <unk> in every vocabulary tested here
  for (const std::string &doc : documents(slurp(eval_text()))) {
    const std::vector<int32_t> expected = ours->encode(doc, true, false);
    r.docs_with_unk += std::count(expected.begin(), expected.end(), unk) > 0;
    std::vector<int32_t> ids;
    try {
      ids = m.tokenize(doc, true);
    } catch (const std::exception &) {
      // llama.cpp's SentencePiece-style tokenizer throws for a character with neither a token
      // nor byte tokens; the forward pass is still compared, on nwc's ids for the document.
      ++r.refused_docs;
      ids = expected;
    }
    if (ids != expected && r.mismatched_docs++ == 0) r.first_mismatch = doc.substr(0, 80);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  r.tokens = static_cast<int64_t>(stream.size());
  r.windows = std::min<int64_t>(r.tokens, max_tokens) / seq_len;
  double sum = 0;
  for (int64_t w = 0; w < r.windows; ++w)
    sum += m.window_nll(std::vector<int32_t>(stream.begin() + w * seq_len,
                                             stream.begin() + (w + 1) * seq_len));
  r.nll = sum / static_cast<double>(r.windows * (seq_len - 1));
  return r;
}

double nwc_eval_nll(const std::string &model, const std::string &tokenizer, int64_t max_tokens) {
  const Result e = run_nwc({"eval", "--model", model, "--tokenizer", tokenizer, "--text",
                            eval_text().string(), "--max-tokens", std::to_string(max_tokens),
                            "--json"});
  REQUIRE_MESSAGE(e.exit_code == 0, e.err);
  return nlohmann::json::parse(e.out).at("nll").get<double>();
}

} // namespace

TEST_CASE("stories260K as GGUF runs in llama.cpp with nwc's token ids and NLL") {
  TempDir tmp;
  const std::string model = (models() / "stories260K" / "stories260K.bin").string();
  const std::string tok = (models() / "stories260K" / "tok512.bin").string();
  const Result c = run_nwc({"convert", "--model", model, "--layout", "gguf", "--tokenizer", tok,
                            "-o", (tmp / "s.gguf").string()});
  REQUIRE_MESSAGE(c.exit_code == 0, c.err);
  const LlamaCppEval l = llama_cpp_eval(tmp / "s.gguf", tok, 512, 20480);
  INFO("first document tokenized differently: " << l.first_mismatch);
  CHECK(l.mismatched_docs == 0);
  CHECK(l.refused_docs == 0); // byte tokens cover every character
  CHECK(l.tokens == 189798);  // ppl-v1's whole stream (data README)
  CHECK(l.windows == 40);
  const double ours = nwc_eval_nll(model, tok, 20480);
  MESSAGE("stories260K F32: llama.cpp NLL " << std::setprecision(7) << l.nll << ", nwc eval " << ours);
  CHECK(ours == doctest::Approx(1.40716).epsilon(2e-5));
  CHECK(std::abs(l.nll - ours) < 1e-3);
}

TEST_CASE("TinyStories-656K as GGUF from its tokenizer.json runs in llama.cpp") {
  TempDir tmp;
  const std::string dir = (models() / "tinystories656K").string();
  const Result c = run_nwc({"convert", "--model", dir, "--layout", "gguf", "--dtype", "F16",
                            "--tokenizer", dir, "-o", (tmp / "t.gguf").string()});
  REQUIRE_MESSAGE(c.exit_code == 0, c.err);
  const LlamaCppEval l = llama_cpp_eval(tmp / "t.gguf", dir, 512, 20480);
  INFO("first document tokenized differently: " << l.first_mismatch);
  CHECK(l.mismatched_docs == 0);
  // The vocabulary has byte_fallback but no byte tokens: HF gives <unk> for the mojibake
  // characters of 12 of the 2,105 documents, llama.cpp refuses exactly those documents.
  CHECK(l.docs_with_unk == 12);
  CHECK(l.refused_docs == l.docs_with_unk);
  CHECK(l.tokens == 97534);
  // F16 weights against nwc's F32 evaluation of the same checkpoint.
  const double ours = nwc_eval_nll(dir, dir, 20480);
  MESSAGE("TinyStories-656K F16 GGUF: llama.cpp NLL " << std::setprecision(7) << l.nll << ", nwc eval (F32) " << ours);
  CHECK(std::abs(l.nll - ours) < 2e-3);
}
