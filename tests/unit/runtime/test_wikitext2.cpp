// Protocol wikitext2 (GPTQ's WikiText-2 perplexity) checked against its rules, independently of
// the code under test: the joined text built by hand, one BOS for the whole text, floor(tokens /
// seq_len) windows, the default window min(2048, model maximum), and the reference's aggregation
// exp(mean over windows of each window's mean NLL) recomputed from single-window ppl-v1 runs.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>

using namespace nwc;
using namespace nwc::runtime;

namespace {
std::unique_ptr<Tokenizer> stories_tokenizer() {
  return load_tokenizer(test::data_dir() / "models" / "stories260K" / "tok512.bin", 512);
}
std::string wiki_bytes() {
  return read_text_file(test::data_dir() / "text" / "wiki.test.raw");
}
} // namespace

TEST_CASE("wikitext2 text: Hugging Face wikitext rows joined with blank lines") {
  // Lines keep their "\n" (after CRLF and lone CR become LF); whitespace-only lines (including
  // NBSP and U+3000, as Python's str.strip) are empty rows; the last line may lack its "\n".
  const std::string raw = " = A = \r\n \r\n B one\r\n\r\nC\rD\n\t\xC2\xA0\xE3\x80\x80\nlast";
  const std::string expected = std::string(" = A = \n") + "\n\n" + "" + "\n\n" + " B one\n" +
                               "\n\n" + "" + "\n\n" + "C\n" + "\n\n" + "D\n" + "\n\n" + "" +
                               "\n\n" + "last";
  CHECK(wikitext2_text(raw) == expected);
  CHECK(wikitext2_text("") == "");
  CHECK(wikitext2_text("x\n") == "x\n");
  CHECK(wikitext2_text("\n") == "");
  CHECK(wikitext2_text("\n\n") == "\n\n");
  // U+200B is not whitespace to Python, so its line is kept.
  CHECK(wikitext2_text("\xE2\x80\x8B\n \n") == "\xE2\x80\x8B\n\n\n");
}

TEST_CASE("wikitext2 text of wiki.test.raw: 2891 rows with LF line ends joined") {
  const std::string raw = wiki_bytes();
  const auto lines = std::count(raw.begin(), raw.end(), '\n');
  const auto crs = std::count(raw.begin(), raw.end(), '\r');
  CHECK(lines == 2891);
  CHECK(crs == 2891); // every line ends in CRLF and none is blank: the file dropped empty rows
  const std::string text = wikitext2_text(raw);
  CHECK(text.size() == raw.size() - static_cast<size_t>(crs) + 2 * (lines - 1));
  CHECK(text.starts_with(" = Robert Boulter = \n\n\n Robert Boulter is an English film"));
  CHECK(text.find("\r") == std::string::npos);
}

TEST_CASE("wikitext2 tokenizes the joined text once: one BOS at the start") {
  auto tok = stories_tokenizer();
  const std::string raw = " = Title = \n\n First paragraph .\n Second one .\n \n\n = = Sub = = \n";
  auto ids = wikitext2_token_stream(raw, *tok);
  CHECK(ids == tok->encode(wikitext2_text(raw), true, false));
  REQUIRE(!ids.empty());
  CHECK(ids.front() == tok->bos_id());
  CHECK(std::count(ids.begin(), ids.end(), tok->bos_id()) == 1);
  // ppl-v1 on the same bytes starts a document, with its BOS, at each blank line.
  auto v1 = ppl_token_stream(raw, *tok);
  CHECK(std::count(v1.begin(), v1.end(), tok->bos_id()) == 3);
  CHECK(protocol_token_stream(Protocol::Wikitext2, raw, *tok) == ids);
  CHECK(protocol_token_stream(Protocol::PplV1, raw, *tok) == v1);
  // The whole file with tok512.bin (byte fallback for most of it): 812,136 ids.
  auto all = wikitext2_token_stream(wiki_bytes(), *tok);
  CHECK(all.size() == 812136);
  CHECK(std::count(all.begin(), all.end(), tok->bos_id()) == 1);
}

TEST_CASE("wikitext2 windows and aggregation against single-window ppl-v1 runs") {
  Model model = load_model(test::stories260k());
  LlamaModel llama(model, 1);
  auto tok = stories_tokenizer();
  auto stream = wikitext2_token_stream(wiki_bytes(), *tok);
  const int64_t seq = 512, cap = 5 * seq + 300; // a partial window at the end, to be dropped
  EvalSettings s;
  s.protocol = Protocol::Wikitext2;
  s.max_tokens = cap;
  s.threads = 2;
  EvalResult r = evaluate_ppl(llama, stream, s);
  CHECK(r.protocol == std::string("wikitext2"));
  CHECK(r.seq_len == seq); // min(2048, 512)
  CHECK(r.tokens == cap);
  CHECK(r.windows == cap / seq);
  CHECK(r.predicted_tokens == 5 * (seq - 1));
  // Each window on its own: ppl-v1 of a one-window stream is that window's mean NLL.
  double sum_of_means = 0, sum_of_nll = 0;
  EvalSettings one;
  one.seq_len = seq;
  for (int64_t w = 0; w < r.windows; ++w) {
    std::vector<int32_t> win(stream.begin() + w * seq, stream.begin() + (w + 1) * seq);
    EvalResult rw = evaluate_ppl(llama, win, one);
    REQUIRE(rw.windows == 1);
    sum_of_means += rw.nll;
    sum_of_nll += rw.nll * static_cast<double>(seq - 1);
  }
  // GPTQ: nlls.append(loss * seqlen); ppl = exp(sum(nlls) / (nsamples * seqlen)).
  const double reference = sum_of_means * static_cast<double>(seq) / (5.0 * seq);
  CHECK(std::abs(r.nll - reference) <= 1e-12);
  CHECK(std::abs(r.ppl - std::exp(reference)) <= 1e-9 * r.ppl);
  // Not the per-token mean over seq_len positions (a misreading of the formula), which would be
  // lower by a factor (seq - 1) / seq.
  CHECK(std::abs(r.nll - sum_of_nll / (5.0 * seq)) > 1e-4);
  // Equal windows: the same number as ppl-v1's aggregation over the same stream.
  EvalSettings v1 = s;
  v1.protocol = Protocol::PplV1;
  EvalResult r1 = evaluate_ppl(llama, stream, v1);
  CHECK(r1.protocol == std::string("ppl-v1"));
  CHECK(r1.windows == r.windows);
  CHECK(std::abs(r1.nll - r.nll) <= 1e-12);
  // An explicit window length overrides the default; the remainder is dropped again.
  s.seq_len = 200;
  EvalResult r200 = evaluate_ppl(llama, stream, s);
  CHECK(r200.seq_len == 200);
  CHECK(r200.windows == cap / 200);
  CHECK(r200.predicted_tokens == (cap / 200) * 199);
  MESSAGE("wikitext2, stories260K, first " << cap << " tokens of wiki.test.raw: NLL " << r.nll
                                           << ", ppl " << r.ppl);
}

TEST_CASE("wikitext2 default window: 2048 when the model allows more and else the model maximum") {
  Model model = load_model(test::stories260k());
  model.arch.max_seq_len = 2100; // RoPE is computed for any length; the weights do not limit it
  LlamaModel llama(model, 1);
  // One token short of a window either way, so the message names the window length without a
  // forward pass over 2048 positions.
  std::vector<int32_t> stream(2047, 5);
  EvalSettings s;
  s.protocol = Protocol::Wikitext2;
  CHECK_THROWS_WITH_AS(evaluate_ppl(llama, stream, s),
                       doctest::Contains("fewer than one window of 2048"), nwc::Error);
  s.protocol = Protocol::PplV1; // ppl-v1 keeps the model maximum
  CHECK_THROWS_WITH_AS(evaluate_ppl(llama, stream, s),
                       doctest::Contains("fewer than one window of 2100"), nwc::Error);
  // aidreams260K's maximum is 128: wikitext2 uses it.
  Model small = load_model(test::data_dir() / "models" / "aidreams260K" / "aidreams260K.bin");
  LlamaModel aid(small, 1);
  s.protocol = Protocol::Wikitext2;
  EvalResult r = evaluate_ppl(aid, std::vector<int32_t>(3 * 128 + 5, 5), s);
  CHECK(r.seq_len == 128);
  CHECK(r.windows == 3);
  CHECK(parse_protocol("wikitext2") == Protocol::Wikitext2);
  CHECK(parse_protocol("ppl-v1") == Protocol::PplV1);
  CHECK_THROWS_WITH_AS(parse_protocol("wikitext"), doctest::Contains("unknown protocol"),
                       nwc::Error);
}
