// llama2.c tokenizer.bin: reference ids, equality with the quadratic run.c loop, decoding, and
// damaged files.
#include "naive_bpe.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <random>

namespace {

using nwc::runtime::Tokenizer;
namespace fs = std::filesystem;

fs::path stories_tok() {
  return nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
}
fs::path aidreams_tok() {
  return nwc::test::data_dir() / "models" / "aidreams260K" / "tok512.bin";
}

std::string read_text(const std::string &name, size_t max_bytes = SIZE_MAX) {
  const auto bytes = nwc::test::read_bytes(nwc::test::data_dir() / "text" / name);
  REQUIRE(!bytes.empty());
  return std::string(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(
                                                        std::min(max_bytes, bytes.size())));
}

std::string decode_all(const Tokenizer &tok, const std::vector<int32_t> &ids) {
  std::string out;
  int32_t prev = -1;
  for (int32_t id : ids) {
    if (id != tok.bos_id() && id != tok.eos_id()) out += tok.decode(prev, id);
    prev = id;
  }
  return out;
}

// A tokenizer.bin from pieces and scores; ids 0..258 are the usual specials and byte pieces
// unless with_bytes is false.
struct Entry {
  std::string piece;
  float score;
};
std::vector<uint8_t> make_tokenizer_bytes(const std::vector<Entry> &extra, bool with_bytes = true,
                                          int32_t max_len = -1) {
  std::vector<Entry> all = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  if (with_bytes)
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      all.push_back({buf, 0});
    }
  all.insert(all.end(), extra.begin(), extra.end());
  int32_t longest = 0;
  for (auto &e : all) longest = std::max(longest, static_cast<int32_t>(e.piece.size()));
  if (max_len < 0) max_len = longest;
  std::vector<uint8_t> out;
  const auto put = [&](const void *p, size_t n) {
    const auto *b = static_cast<const uint8_t *>(p);
    out.insert(out.end(), b, b + n);
  };
  put(&max_len, 4);
  for (auto &e : all) {
    const int32_t len = static_cast<int32_t>(e.piece.size());
    put(&e.score, 4);
    put(&len, 4);
    put(e.piece.data(), e.piece.size());
  }
  return out;
}

// Runs f and returns the nwc::Error message it throws; fails the test if it does not throw.
template <typename F> std::string error_of(F &&f, nwc_status expected_code) {
  try {
    f();
  } catch (const nwc::Error &e) {
    CHECK(e.code() == expected_code);
    const std::string msg = e.what();
    CHECK(msg.find('\n') == std::string::npos);
    return msg;
  }
  FAIL("expected an nwc::Error");
  return {};
}

void check_same(const Tokenizer &fast, const nwc::test::NaiveBpe &naive, std::string_view text,
                bool bos = true, bool eos = false) {
  const auto got = fast.encode(text, bos, eos);
  const auto want = naive.encode(text, bos, eos);
  if (got != want) {
    INFO("text: '" << std::string(text) << "'");
    CHECK(got == want);
  }
}

} // namespace

TEST_CASE("tokenizer llama2c: reference encoding of stories260K's tok512.bin") {
  auto tok = nwc::runtime::load_tokenizer(stories_tok(), 512);
  CHECK(tok->vocab_size() == 512);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  const auto ids = tok->encode(text, true, false);
  REQUIRE(ids.size() == 16);
  CHECK(ids[0] == 1);
  CHECK(ids[1] == 403);
  CHECK(ids[2] == 407);
  CHECK(ids[3] == 261);
  CHECK(ids == nwc::test::NaiveBpe(stories_tok()).encode(text, true, false));
  CHECK(decode_all(*tok, ids) == text);
  const auto with_eos = tok->encode(text, true, true);
  CHECK(with_eos.size() == 17);
  CHECK(with_eos.back() == 2);
  CHECK(tok->encode("", false, false).empty());
  CHECK(tok->encode("", true, true) == std::vector<int32_t>{1, 2});
}

TEST_CASE("tokenizer llama2c: decode(encode(text)) reproduces the text") {
  for (const auto &path : {stories_tok(), aidreams_tok()}) {
    auto tok = nwc::runtime::load_llama2c_tokenizer(path);
    for (std::string text :
         {"Once upon a time, there was a little girl named Lily.", "a", " leading space",
          "   three leading spaces and trailing  ", "caf\xC3\xA9 na\xC3\xAFve",
          "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "emoji \xF0\x9F\x98\x80!", "tab\tand\nnewline\n",
          "\"Quotes\", (parens) & 123456"}) {
      INFO(path.string() << ": '" << text << "'");
      CHECK(decode_all(*tok, tok->encode(text, true, true)) == text);
    }
  }
}

TEST_CASE("tokenizer llama2c: decode details") {
  auto tok = nwc::runtime::load_llama2c_tokenizer(stories_tok());
  // Byte fallback pieces become their byte.
  CHECK(tok->decode(5, 3 + 0xC3) == "\xC3");
  CHECK(tok->decode(5, 3 + 'A') == "A");
  // The dummy prefix space is dropped only right after BOS.
  const auto ids = tok->encode("Once", false, false);
  REQUIRE(!ids.empty());
  CHECK(tok->decode(1, ids[0]).front() != ' ');
  CHECK(tok->decode(400, ids[0]).front() == ' ');
  const std::string msg = error_of([&] { (void)tok->decode(1, 512); }, NWC_E_INVALID_ARG);
  CHECK(msg.starts_with(stories_tok().string() + ":"));
  CHECK(msg.find("512") != std::string::npos);
  error_of([&] { (void)tok->decode(1, -1); }, NWC_E_INVALID_ARG);
}

TEST_CASE("tokenizer llama2c: fast encoder equals run.c's loop on TinyStories paragraphs") {
  const std::string text = read_text("tinystories-eval.txt", 200 * 1024);
  for (const auto &path : {stories_tok(), aidreams_tok()}) {
    auto tok = nwc::runtime::load_llama2c_tokenizer(path, 512);
    const nwc::test::NaiveBpe naive(path);
    size_t start = 0, paragraphs = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (end > start) {
        check_same(*tok, naive, std::string_view(text).substr(start, end - start));
        ++paragraphs;
      }
      start = end + 1;
    }
    CHECK(paragraphs > 500);
  }
}

TEST_CASE("tokenizer llama2c: fast encoder equals run.c's loop on random substrings and bytes") {
  std::mt19937_64 rng(20240601);
  const std::string shakespeare = read_text("tinyshakespeare.txt");
  const std::string wiki = read_text("wiki.test.raw");
  for (const auto &path : {stories_tok(), aidreams_tok()}) {
    auto tok = nwc::runtime::load_llama2c_tokenizer(path);
    const nwc::test::NaiveBpe naive(path);
    for (const std::string *corpus : {&shakespeare, &wiki}) {
      for (int i = 0; i < 2000; ++i) {
        const size_t len = std::uniform_int_distribution<size_t>(0, 200)(rng);
        const size_t pos = std::uniform_int_distribution<size_t>(0, corpus->size() - len)(rng);
        // Substrings may start or end inside a UTF-8 sequence, on purpose.
        check_same(*tok, naive, std::string_view(*corpus).substr(pos, len), (i & 1) != 0,
                   (i & 2) != 0);
      }
    }
    for (int i = 0; i < 1000; ++i) {
      std::string bytes(std::uniform_int_distribution<size_t>(0, 64)(rng), '\0');
      // Mostly high bytes and ASCII letters, so that invalid and valid UTF-8 both occur.
      for (char &c : bytes) {
        const auto r = rng();
        c = static_cast<char>((r & 1) ? 0x80 + (r >> 8) % 0x80 : 'a' + (r >> 8) % 26);
      }
      check_same(*tok, naive, bytes);
    }
  }
}

TEST_CASE("tokenizer llama2c: ties, duplicates and unmergeable scores follow run.c") {
  // A small alphabet with many equal scores makes tie-breaking decide nearly every merge.
  std::mt19937 rng(7);
  const std::string alphabet = "ab c";
  for (int round = 0; round < 20; ++round) {
    std::vector<Entry> extra;
    for (char c : alphabet) extra.push_back({std::string(1, c), 0});
    for (int i = 0; i < 40; ++i) {
      std::string piece;
      const int len = std::uniform_int_distribution<int>(2, 5)(rng);
      for (int k = 0; k < len; ++k) piece += alphabet[rng() % alphabet.size()];
      // Few distinct scores, some duplicated pieces, and a few below run.c's -1e10 threshold.
      float score = static_cast<float>(rng() % 3);
      if (rng() % 10 == 0) score = -2e10f;
      extra.push_back({piece, score});
      if (rng() % 8 == 0) extra.push_back({piece, score + 5});
    }
    nwc::test::TempDir dir;
    const auto file = dir / "tok.bin";
    nwc::test::write_bytes(file, make_tokenizer_bytes(extra));
    auto tok = nwc::runtime::load_tokenizer(file);
    const nwc::test::NaiveBpe naive(file);
    for (int i = 0; i < 200; ++i) {
      std::string text;
      const int len = std::uniform_int_distribution<int>(0, 40)(rng);
      for (int k = 0; k < len; ++k) text += alphabet[rng() % alphabet.size()];
      check_same(*tok, naive, text, (i & 1) != 0);
    }
  }
}

TEST_CASE("tokenizer llama2c: a duplicated piece encodes to its lowest id") {
  nwc::test::TempDir dir;
  const auto file = dir / "tok.bin";
  // " " at 259 and "xy" at 262 and 263; "x", "y" at 260, 261.
  nwc::test::write_bytes(
      file, make_tokenizer_bytes({{" ", 0}, {"x", 0}, {"y", 0}, {"xy", 1}, {"xy", 2}}));
  auto tok = nwc::runtime::load_tokenizer(file, 264);
  CHECK(tok->encode("xy", false, false) == std::vector<int32_t>{259, 262});
  CHECK(tok->encode("xyz", false, false) == std::vector<int32_t>{259, 262, 3 + 'z'});
}

TEST_CASE("tokenizer llama2c: damaged files give one-line errors naming the file") {
  nwc::test::TempDir dir;
  const auto good = nwc::test::read_bytes(stories_tok());
  REQUIRE(good.size() > 100);
  const auto file = dir / "tok.bin";
  const std::string name = file.string() + ":";
  const auto load = [&](int64_t vocab) { (void)nwc::runtime::load_llama2c_tokenizer(file, vocab); };
  const auto load_any = [&](int64_t vocab) { (void)nwc::runtime::load_tokenizer(file, vocab); };

  // Offset of record `index` in the good file.
  const auto record_offset = [&](int index) {
    size_t off = 4;
    for (int i = 0; i < index; ++i) {
      int32_t len;
      std::memcpy(&len, good.data() + off + 4, 4);
      off += 8 + static_cast<size_t>(len);
    }
    return off;
  };

  SUBCASE("truncated inside a record") {
    const size_t cut = record_offset(37) + 6;
    nwc::test::write_bytes(file, good.data(), cut);
    std::string msg = error_of([&] { load(512); }, NWC_E_CORRUPT_STREAM);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("truncated") != std::string::npos);
    CHECK(msg.find("token 37 of 512") != std::string::npos);
    msg = error_of([&] { load_any(512); }, NWC_E_CORRUPT_STREAM);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("llama2.c") != std::string::npos);
    CHECK(msg.find("SentencePiece") != std::string::npos);
  }
  SUBCASE("truncated at a record boundary: fewer tokens than the model has") {
    nwc::test::write_bytes(file, good.data(), record_offset(300));
    std::string msg = error_of([&] { load(512); }, NWC_E_INVALID_ARG);
    CHECK(msg == file.string() + ": tokenizer has 300 tokens, the model expects 512");
    msg = error_of([&] { load_any(512); }, NWC_E_INVALID_ARG);
    CHECK(msg == file.string() + ": tokenizer has 300 tokens, the model expects 512");
    CHECK(nwc::runtime::load_tokenizer(file)->vocab_size() == 300);
  }
  SUBCASE("wrong vocab_size") {
    nwc::test::write_bytes(file, good);
    std::string msg = error_of([&] { load(32000); }, NWC_E_INVALID_ARG);
    CHECK(msg == file.string() + ": tokenizer has 512 tokens, the model expects 32000");
    msg = error_of([&] { load(500); }, NWC_E_INVALID_ARG);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("more than 500 tokens") != std::string::npos);
    msg = error_of([&] { load_any(500); }, NWC_E_INVALID_ARG);
    CHECK(msg == file.string() + ": tokenizer has 512 tokens, the model expects 500");
    error_of([&] { load(-5); }, NWC_E_INVALID_ARG);
    CHECK(nwc::runtime::load_llama2c_tokenizer(file, 512)->vocab_size() == 512);
  }
  SUBCASE("negative length") {
    auto bad = good;
    const int32_t neg = -7;
    std::memcpy(bad.data() + record_offset(10) + 4, &neg, 4);
    nwc::test::write_bytes(file, bad);
    const std::string msg = error_of([&] { load(0); }, NWC_E_CORRUPT_STREAM);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("negative length -7") != std::string::npos);
    CHECK(msg.find("token 10") != std::string::npos);
  }
  SUBCASE("length beyond the end of the file") {
    // The last record claims more bytes than remain; with a large max_token_length so that the
    // bound that fires is the file size.
    auto bad = make_tokenizer_bytes({{"hello", 0}}, true, 1000);
    const int32_t len = 900;
    std::memcpy(bad.data() + bad.size() - 5 - 4, &len, 4);
    nwc::test::write_bytes(file, bad);
    const std::string msg = error_of([&] { load(0); }, NWC_E_CORRUPT_STREAM);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("token 259") != std::string::npos);
    CHECK(msg.find("past the end") != std::string::npos);
  }
  SUBCASE("length beyond max_token_length") {
    auto bad = good;
    const int32_t len = 1000000;
    std::memcpy(bad.data() + record_offset(3) + 4, &len, 4);
    nwc::test::write_bytes(file, bad);
    const std::string msg = error_of([&] { load(0); }, NWC_E_CORRUPT_STREAM);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("max_token_length") != std::string::npos);
  }
  SUBCASE("bad header and empty file") {
    auto bad = good;
    const int32_t zero = 0;
    std::memcpy(bad.data(), &zero, 4);
    nwc::test::write_bytes(file, bad);
    CHECK(error_of([&] { load(0); }, NWC_E_CORRUPT_STREAM).find("max_token_length 0") !=
          std::string::npos);
    nwc::test::write_bytes(file, good.data(), 0);
    CHECK(error_of([&] { load(0); }, NWC_E_CORRUPT_STREAM).starts_with(name));
    const std::string msg = error_of([&] { load_any(0); }, NWC_E_CORRUPT_STREAM);
    CHECK(msg.starts_with(name));
    CHECK(msg.find("SentencePiece") != std::string::npos);
  }
  SUBCASE("missing file") {
    const std::string msg =
        error_of([&] { (void)nwc::runtime::load_tokenizer(dir / "absent.bin"); }, NWC_E_IO);
    CHECK(msg.starts_with((dir / "absent.bin").string() + ":"));
  }
}

TEST_CASE("tokenizer llama2c: randomly corrupted files load cleanly or fail with nwc::Error") {
  const auto good = nwc::test::read_bytes(stories_tok());
  nwc::test::TempDir dir;
  const auto file = dir / "tok.bin";
  std::mt19937 rng(99);
  int loaded = 0, rejected = 0;
  for (int i = 0; i < 300; ++i) {
    auto bad = good;
    // A few random bytes overwritten, sometimes also a random truncation.
    for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = static_cast<uint8_t>(rng());
    if (i % 3 == 0) bad.resize(rng() % bad.size());
    nwc::test::write_bytes(file, bad);
    try {
      auto tok = nwc::runtime::load_tokenizer(file);
      const auto ids = tok->encode("Once upon a time.", true, true);
      for (int32_t id : ids) {
        CHECK(id >= 0);
        CHECK(id < tok->vocab_size());
        (void)tok->decode(1, id);
      }
      ++loaded;
    } catch (const nwc::Error &e) {
      CHECK(std::string(e.what()).starts_with(file.string() + ":"));
      ++rejected;
    }
  }
  CHECK(loaded > 0);
  CHECK(rejected > 0);
}
