// SentencePiece models: our reader/encoder against the reference, libsentencepiece, which is used
// only through its command-line tools (Debian package `sentencepiece`) in a child process.
#include "nwc/cpp/error.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path &p) {
  const auto b = nwc::test::read_bytes(p);
  return std::string(b.begin(), b.end());
}

// The path of a sentencepiece command-line tool; a missing tool fails the test (not a skip).
std::string spm_tool(const std::string &name) {
  const char *path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  FAIL(name << " not found in PATH; it is the reference for these tests and comes with the "
               "Debian package 'sentencepiece' (apt-get install sentencepiece)");
  return {};
}

// Runs a shell command with its output in `log`; a failure shows the output.
void run(const std::string &command, const fs::path &log) {
  const int rc = std::system((command + " >" + log.string() + " 2>&1").c_str());
  REQUIRE_MESSAGE(rc == 0, command << " failed (status " << rc << "):\n" << read_text(log));
}

// Trains a model with spm_train on the first lines of tinyshakespeare (identity normalization
// unless `extra` names another rule: the flag given last wins).
fs::path train(const nwc::test::TempDir &dir, const std::string &name, const std::string &extra) {
  const fs::path prefix = dir / name;
  run(spm_tool("spm_train") +
          " --input=" + (nwc::test::data_dir() / "text" / "tinyshakespeare.txt").string() +
          " --model_prefix=" + prefix.string() +
          " --unk_id=0 --pad_id=-1 --normalization_rule_name=identity --character_coverage=1.0"
          " --num_threads=1 --input_sentence_size=20000 --shuffle_input_sentence=false"
          " --split_digits=true --minloglevel=2 " +
          extra,
      dir / (name + ".train.log"));
  return fs::path(prefix.string() + ".model");
}

// The first `count` lines of a file, without line terminators (\r\n too).
std::vector<std::string> first_lines(const fs::path &file, size_t count) {
  std::istringstream in(read_text(file));
  std::vector<std::string> out;
  std::string line;
  while (out.size() < count && std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
  }
  REQUIRE(out.size() == count);
  return out;
}

// Hand-written lines: whitespace runs, non-ASCII, characters absent from training, digits,
// malformed UTF-8.
const std::vector<std::string> &extra_lines() {
  static const std::vector<std::string> lines = {
      "",
      " ",
      "   ",
      "  two  spaces ",
      "\ttab\tseparated\t",
      "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80",
      "First Citizen: 12345 ROMEO<sep>JULIET <sep> x",
      "bad \xFF utf8 \xC0\x80 overlong \xE6\x97 truncated \xED\xA0\x80 surrogate",
      "\xE2\x96\x81 already escaped \xE2\x96\x81\xE2\x96\x81",
      "<s> </s> <unk> <0x41>",
      // What nmt_nfkc changes: full-width forms, ligatures, circled digits, compatibility
      // characters, NBSP and other spaces, control characters, combining sequences.
      "\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x91\xEF\xBC\x92 \xEF\xAC\x81ne "
      "\xE2\x91\xA0 \xE2\x85\xA2 \xE3\x8C\x80 x\xC2\xB2",
      "nbsp\xC2\xA0here\xE2\x80\x83"
      "em\xE3\x80\x80ideo \x01\x02"
      "ctl\x7F e\xCC\x81 \xE2\x84\xAB",
      "\xEF\xBD\xB6\xEF\xBE\x9E\xEF\xBD\xB7 half-width kana, \xEF\xBD\x9E tilde",
  };
  return lines;
}

// Ids from spm_encode for each line (one output line per input line).
std::vector<std::vector<int32_t>> spm_encode(const nwc::test::TempDir &dir, const fs::path &model,
                                             const std::vector<std::string> &lines) {
  const fs::path in = dir / "encode.in", out = dir / "encode.out";
  {
    std::ofstream f(in, std::ios::binary);
    for (const auto &l : lines) f << l << '\n';
  }
  run(spm_tool("spm_encode") + " --model=" + model.string() +
          " --output_format=id --input=" + in.string() + " --output=" + out.string(),
      dir / "encode.log");
  std::istringstream text(read_text(out));
  std::vector<std::vector<int32_t>> ids;
  std::string line;
  while (std::getline(text, line)) {
    std::istringstream words(line);
    std::vector<int32_t> v;
    int32_t id;
    while (words >> id) v.push_back(id);
    ids.push_back(std::move(v));
  }
  REQUIRE(ids.size() == lines.size());
  return ids;
}

std::string decode_all(const nwc::runtime::Tokenizer &tok, const std::vector<int32_t> &ids) {
  std::string out;
  int32_t prev = -1;
  for (int32_t id : ids) {
    out += tok.decode(prev, id);
    prev = id;
  }
  return out;
}

bool valid_utf8(const std::string &s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t n = b < 0x80             ? 1
               : (b & 0xE0) == 0xC0 ? 2
               : (b & 0xF0) == 0xE0 ? 3
               : (b & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? b : b & (0xFFu >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = cp << 6 | (c & 0x3Fu);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) return false;
    i += n;
  }
  return true;
}

struct Corpus {
  std::vector<std::string> lines;
  Corpus() {
    lines = first_lines(nwc::test::data_dir() / "text" / "tinyshakespeare.txt", 2000);
    const auto wiki = first_lines(nwc::test::data_dir() / "text" / "wiki.test.raw", 500);
    lines.insert(lines.end(), wiki.begin(), wiki.end());
    lines.insert(lines.end(), extra_lines().begin(), extra_lines().end());
  }
};

// Our ids must equal spm_encode's for every line (which must include non-ASCII text).
void check_same_ids(const nwc::test::TempDir &dir, const fs::path &model, const Corpus &corpus) {
  const auto tok = nwc::runtime::load_tokenizer(model);
  const auto expected = spm_encode(dir, model, corpus.lines);
  size_t mismatches = 0, non_ascii = 0, total = 0;
  for (size_t i = 0; i < corpus.lines.size(); ++i) {
    const std::string &line = corpus.lines[i];
    for (char c : line) {
      if (static_cast<uint8_t>(c) >= 0x80) {
        ++non_ascii;
        break;
      }
    }
    const auto ids = tok->encode(line, false, false);
    total += ids.size();
    if (ids != expected[i] && ++mismatches <= 5) {
      INFO("model " << model.filename() << ", line " << i << ": '" << line << "'");
      CHECK(ids == expected[i]);
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= tok->vocab_size()) CHECK(id < tok->vocab_size());
    }
  }
  CHECK(mismatches == 0);
  CHECK(non_ascii >= 50); // the comparison covered non-ASCII text
  CHECK(total > corpus.lines.size());
}

void check_one_line_error(const std::function<void()> &f, const fs::path &file, nwc_status code,
                          const std::string &needle = {}) {
  try {
    f();
    FAIL("expected an error for " << file);
  } catch (const nwc::Error &e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(e.code() == code);
    CHECK(msg.starts_with(file.string() + ":"));
    CHECK(msg.find('\n') == std::string::npos);
    if (!needle.empty()) CHECK(msg.find(needle) != std::string::npos);
  }
}

} // namespace

TEST_CASE("tokenizer sentencepiece: BPE with byte fallback matches spm_encode and round-trips") {
  nwc::test::TempDir dir;
  const Corpus corpus;
  const fs::path model = train(dir, "bf",
                               "--model_type=bpe --vocab_size=400 --bos_id=1 --eos_id=2"
                               " --byte_fallback=true --remove_extra_whitespaces=false");
  check_same_ids(dir, model, corpus);

  auto tok = nwc::runtime::load_tokenizer(model, 400);
  CHECK(tok->vocab_size() == 400);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  size_t round_trips = 0;
  for (const std::string &line : corpus.lines) {
    // Malformed bytes become U+FFFD and a literal U+2581 decodes as a space, as in
    // libsentencepiece.
    if (!valid_utf8(line) || line.find("\xE2\x96\x81") != std::string::npos) continue;
    const auto ids = tok->encode(line, true, true);
    REQUIRE(ids.size() >= 2);
    CHECK(ids.front() == 1);
    CHECK(ids.back() == 2);
    const std::string back = decode_all(*tok, ids);
    if (back != line) CHECK(back == line);
    ++round_trips;
  }
  CHECK(round_trips >= 2500);
  // Byte fallback: characters absent from the vocabulary become their UTF-8 bytes.
  const auto emoji = tok->encode("\xF0\x9F\x98\x80", false, false);
  CHECK(emoji.size() == 5); // the dummy prefix, then 4 byte pieces
  CHECK(tok->decode(emoji[0], emoji[1]) == "\xF0");
  CHECK(tok->encode("", true, false) == std::vector<int32_t>{1});
  CHECK(tok->encode("", false, false).empty());
  CHECK_THROWS_AS((void)tok->decode(1, 400), nwc::Error);
  CHECK_THROWS_AS((void)tok->decode(1, -1), nwc::Error);
  CHECK(tok->decode(-1, 0).empty()); // <unk>
  CHECK(tok->decode(-1, 1).empty()); // BOS

  // load_tokenizer's vocab check works for SentencePiece models too.
  check_one_line_error([&] { (void)nwc::runtime::load_tokenizer(model, 512); }, model,
                       NWC_E_INVALID_ARG, "tokenizer has 400 tokens, the model expects 512");
}

TEST_CASE("tokenizer sentencepiece: BPE without byte fallback, no BOS/EOS, default whitespace") {
  nwc::test::TempDir dir;
  const Corpus corpus;
  const fs::path model =
      train(dir, "nobf", "--model_type=bpe --vocab_size=400 --bos_id=-1 --eos_id=-1");
  check_same_ids(dir, model, corpus);

  auto tok = nwc::runtime::load_sentencepiece_tokenizer(model);
  CHECK(tok->bos_id() < 0);
  CHECK(tok->eos_id() < 0);
  // Unknown characters are <unk> (id 0), one per character.
  const auto unknown = tok->encode("\xE6\x97\xA5\xE6\x9C\xAC", false, false);
  REQUIRE(unknown.size() == 2); // the dummy prefix, then one <unk> for the run of unknowns
  CHECK(unknown[1] == 0);
  for (auto [bos, eos] : {std::pair{true, false}, std::pair{false, true}})
    check_one_line_error([&] { (void)tok->encode("To be", bos, eos); }, model, NWC_E_INVALID_ARG);
}

TEST_CASE("tokenizer sentencepiece: BPE without dummy prefix, with user-defined symbols") {
  nwc::test::TempDir dir;
  const Corpus corpus;
  const fs::path model =
      train(dir, "nodummy",
            "--model_type=bpe --vocab_size=450 --bos_id=1 --eos_id=2 --byte_fallback=true"
            " --add_dummy_prefix=false --user_defined_symbols='<sep>,ROMEO'");
  check_same_ids(dir, model, corpus);
  auto tok = nwc::runtime::load_tokenizer(model);
  for (const std::string text : {"ROMEO<sep>JULIET", "no prefix", "<sep>"}) {
    INFO(text);
    CHECK(decode_all(*tok, tok->encode(text, true, false)) == text);
  }
}

TEST_CASE("tokenizer sentencepiece: Unigram with byte fallback matches spm_encode") {
  nwc::test::TempDir dir;
  const Corpus corpus;
  const fs::path model = train(dir, "uni",
                               "--model_type=unigram --vocab_size=400 --bos_id=1 --eos_id=2"
                               " --byte_fallback=true");
  check_same_ids(dir, model, corpus);
  auto tok = nwc::runtime::load_tokenizer(model, 400);
  for (const std::string text : {"First Citizen:", "caf\xC3\xA9 \xE6\x97\xA5", "  x  y "}) {
    INFO(text);
    const auto ids = tok->encode(text, true, false);
    CHECK(ids.front() == 1);
  }
  CHECK(decode_all(*tok, tok->encode("To be, or not to be", true, false)) == "To be, or not to be");
}

TEST_CASE("tokenizer sentencepiece: Unigram without byte fallback, user-defined symbols") {
  nwc::test::TempDir dir;
  const Corpus corpus;
  const fs::path model =
      train(dir, "uninobf",
            "--model_type=unigram --vocab_size=450 --bos_id=-1 --eos_id=-1"
            " --remove_extra_whitespaces=false --user_defined_symbols='<sep>,ROMEO'");
  check_same_ids(dir, model, corpus);
}

TEST_CASE("tokenizer sentencepiece: the nmt_nfkc precompiled charsmap is applied as spm_encode") {
  nwc::test::TempDir dir;
  const Corpus corpus;
  for (const char *type : {"bpe", "unigram"}) {
    INFO(type);
    const fs::path model = train(dir, std::string("nfkc_") + type,
                                 std::string("--model_type=") + type +
                                     " --vocab_size=400 --byte_fallback=true"
                                     " --normalization_rule_name=nmt_nfkc");
    check_same_ids(dir, model, corpus);
    // Full-width letters fold to ASCII: same ids as the ASCII text.
    auto tok = nwc::runtime::load_tokenizer(model);
    CHECK(tok->encode("\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3", false, false) ==
          tok->encode("ABC", false, false));
  }
  const fs::path cf = train(dir, "nfkc_cf",
                            "--model_type=unigram --vocab_size=400 --byte_fallback=true"
                            " --normalization_rule_name=nmt_nfkc_cf");
  check_same_ids(dir, cf, corpus);
}

TEST_CASE("tokenizer sentencepiece: unsupported model types are a one-line error") {
  nwc::test::TempDir dir;
  const fs::path model = train(dir, "char", "--model_type=char --vocab_size=100");
  check_one_line_error([&] { (void)nwc::runtime::load_tokenizer(model); }, model, NWC_E_INVALID_ARG,
                       "CHAR");
  const fs::path suffix =
      train(dir, "suffix", "--model_type=bpe --vocab_size=400 --treat_whitespace_as_suffix=true");
  check_one_line_error([&] { (void)nwc::runtime::load_tokenizer(suffix); }, suffix,
                       NWC_E_INVALID_ARG, "treat_whitespace_as_suffix");
}

TEST_CASE("tokenizer sentencepiece: malformed files are one-line errors naming the file") {
  nwc::test::TempDir dir;
  const fs::path model = train(dir, "m", "--model_type=bpe --vocab_size=400 --byte_fallback=true");
  const auto valid = nwc::test::read_bytes(model);
  const auto file = dir / "bad.model";
  const auto expect_corrupt = [&](const std::string &bytes, const std::string &needle) {
    INFO("needle: " << needle);
    nwc::test::write_bytes(file, bytes.data(), bytes.size());
    check_one_line_error([&] { (void)nwc::runtime::load_sentencepiece_tokenizer(file); }, file,
                         NWC_E_CORRUPT_STREAM, needle);
    // Through the dispatch: neither format, one line.
    check_one_line_error([&] { (void)nwc::runtime::load_tokenizer(file); }, file,
                         NWC_E_CORRUPT_STREAM, "SentencePiece");
  };
  // Cut inside the first piece's record (the file starts with it: tag 0x0A, length, payload). A
  // cut at half the file could fall between two records: the file size depends on the temporary
  // directory's name, which the trainer spec records.
  REQUIRE(valid.size() > 8);
  REQUIRE(valid[0] == 0x0A);
  expect_corrupt(std::string(valid.begin(), valid.begin() + 4), "runs past the end");
  expect_corrupt(std::string("\x20") + std::string(10, '\xFF') + "\x01", "varint overflows");
  expect_corrupt(std::string(10, '\xFF') + "\x01", "varint overflows");
  expect_corrupt(std::string("\x20\xFF\xFF"), "truncated varint");
  expect_corrupt(std::string("\x0A\x7F") + "abc", "length 127 runs past the end");
  expect_corrupt(std::string("\x0B\x0C"), "wire type 3");
  expect_corrupt("This is a plain text file.\nNot a model at all.\n", "");
  expect_corrupt("", "no pieces");
  expect_corrupt(std::string("\x0A\x03\x0A\x01x"), "no unknown piece");
  // Wrong wire type for a known field.
  expect_corrupt(std::string("\x0A\x02\x10\x01"), "wire type 0, expected 5");
  check_one_line_error([&] { (void)nwc::runtime::load_sentencepiece_tokenizer(dir / "missing"); },
                       dir / "missing", NWC_E_IO);

  // Random truncations and bit flips never crash (run under ASan in CI): either an nwc::Error or
  // a tokenizer whose ids are in range.
  std::mt19937 rng(1234);
  int loaded = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::vector<uint8_t> b = valid;
    if (iter % 4 == 0) {
      b.resize(std::uniform_int_distribution<size_t>(0, b.size() - 1)(rng));
    } else {
      const int flips = 1 + iter % 3;
      for (int k = 0; k < flips; ++k) {
        const size_t at = std::uniform_int_distribution<size_t>(0, b.size() - 1)(rng);
        b[at] = static_cast<uint8_t>(b[at] ^ (1u << (rng() % 8)));
      }
    }
    nwc::test::write_bytes(file, b);
    try {
      auto tok = nwc::runtime::load_tokenizer(file);
      ++loaded;
      for (const std::string text :
           {"First Citizen: we are accounted poor citizens.", "caf\xC3\xA9 \xFF  x", ""}) {
        const auto ids = tok->encode(text, false, false);
        int32_t prev = -1;
        for (int32_t id : ids) {
          REQUIRE(id >= 0);
          REQUIRE(id < tok->vocab_size());
          try {
            (void)tok->decode(prev, id);
          } catch (const nwc::Error &) {
          }
          prev = id;
        }
      }
    } catch (const nwc::Error &e) {
      CHECK(std::string(e.what()).find('\n') == std::string::npos);
    }
  }
  CHECK(loaded > 0); // flips in scores or piece text still load
}
