// llama2.c tokenizer.bin (score-greedy BPE with byte fallback) and the load_tokenizer dispatch
// between it, SentencePiece models and Hugging Face tokenizer.json files.
#include "nwc/runtime/tokenizer.hpp"

#include "bpe_merge.hpp"
#include "gguf_vocab.hpp"
#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <unordered_map>

namespace nwc::runtime {

namespace {

constexpr int32_t kUnk = 0;
constexpr int32_t kBos = 1;
constexpr int32_t kEos = 2;
constexpr int32_t kFirstByteToken = 3; // <0x00> .. <0xFF> at 3..258
// run.c only merges pairs whose score beats its initial best of -1e10.
constexpr float kMinMergeScore = -1e10f;

std::vector<uint8_t> read_whole_file(const std::filesystem::path &path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(NWC_E_IO, path.string() + ": cannot open tokenizer file");
  const std::streamoff size = f.tellg();
  if (size < 0) fail(NWC_E_IO, path.string() + ": cannot determine the tokenizer file's size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  f.seekg(0);
  if (!f.read(reinterpret_cast<char *>(bytes.data()), size))
    fail(NWC_E_IO, path.string() + ": read error");
  return bytes;
}

template <typename T> T load_le(const uint8_t *p) {
  // The files are little-endian and so are all hosts nwc supports; memcpy avoids misaligned reads.
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

struct Llama2cVocab {
  int32_t max_token_length = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

// Parses tokenizer.bin. expected > 0: read exactly that many records and require the file to end
// there; expected == 0: read records until EOF, which must fall on a record boundary. Every length
// is checked against the bytes left, so no allocation exceeds the file size.
Llama2cVocab parse_llama2c(const std::string &name, std::span<const uint8_t> bytes,
                           int64_t expected) {
  const auto corrupt = [&](const std::string &what) {
    fail(NWC_E_CORRUPT_STREAM, name + ": " + what);
  };
  const auto of_expected = [&] {
    return expected > 0 ? " of " + std::to_string(expected) : std::string();
  };
  if (bytes.size() < 4)
    corrupt("file of " + std::to_string(bytes.size()) +
            " bytes is too short for a llama2.c tokenizer (expected a 4-byte header)");
  Llama2cVocab v;
  v.max_token_length = load_le<int32_t>(bytes.data());
  if (v.max_token_length <= 0 || static_cast<uint64_t>(v.max_token_length) > bytes.size())
    corrupt("llama2.c tokenizer header has max_token_length " + std::to_string(v.max_token_length) +
            ", expected 1.." + std::to_string(bytes.size()));
  size_t off = 4;
  const size_t size = bytes.size();
  // Each record is at least 8 bytes, which bounds the reservation.
  size_t cap = (size - off) / 8;
  if (expected > 0) cap = std::min(cap, static_cast<size_t>(expected));
  v.pieces.reserve(cap);
  v.scores.reserve(cap);
  while (off < size && (expected == 0 || static_cast<int64_t>(v.pieces.size()) < expected)) {
    const std::string at = "token " + std::to_string(v.pieces.size()) + of_expected();
    if (size - off < 8) corrupt("truncated llama2.c tokenizer at " + at);
    const float score = load_le<float>(bytes.data() + off);
    const int32_t len = load_le<int32_t>(bytes.data() + off + 4);
    off += 8;
    if (len < 0)
      corrupt("llama2.c tokenizer " + at + " has negative length " + std::to_string(len));
    if (len > v.max_token_length)
      corrupt("llama2.c tokenizer " + at + " has length " + std::to_string(len) +
              ", more than the header's max_token_length " + std::to_string(v.max_token_length));
    if (static_cast<size_t>(len) > size - off)
      corrupt("truncated llama2.c tokenizer at " + at + ": length " + std::to_string(len) +
              " runs past the end of the file (" + std::to_string(size - off) + " bytes left)");
    v.pieces.emplace_back(reinterpret_cast<const char *>(bytes.data() + off),
                          static_cast<size_t>(len));
    v.scores.push_back(score);
    off += static_cast<size_t>(len);
  }
  const int64_t count = static_cast<int64_t>(v.pieces.size());
  if (expected > 0 && count < expected)
    fail(NWC_E_INVALID_ARG, name + ": tokenizer has " + std::to_string(count) +
                                " tokens, the model expects " + std::to_string(expected));
  if (expected > 0 && off < size)
    fail(NWC_E_INVALID_ARG, name + ": tokenizer has more than " + std::to_string(expected) +
                                " tokens (" + std::to_string(size - off) + " bytes follow token " +
                                std::to_string(expected - 1) + "), the model expects " +
                                std::to_string(expected));
  // Ids 0..2 are <unk>, BOS and EOS; a file without them is not a usable llama2.c tokenizer.
  if (count < 3)
    corrupt("llama2.c tokenizer has " + std::to_string(count) +
            " tokens, expected at least 3 (<unk>, BOS, EOS)");
  return v;
}

class Llama2cTokenizer final : public Tokenizer {
public:
  Llama2cTokenizer(std::string name, Llama2cVocab vocab)
      : name_(std::move(name)), vocab_(std::move(vocab)) {
    lookup_.reserve(vocab_.pieces.size() * 2);
    // Duplicate strings: run.c bsearches a sorted copy, so which duplicate it finds is
    // unspecified; we take the lowest id (emplace keeps the first insertion).
    for (size_t i = 0; i < vocab_.pieces.size(); ++i)
      lookup_.emplace(std::string_view(vocab_.pieces[i]), static_cast<int32_t>(i));
    // Merging looks pairs up by the concatenation of their strings. To avoid building strings in
    // the hot loop, precompute every (left, right) -> merged id: split each distinct piece at every
    // position and keep the splits whose halves are both pieces. Ids are canonicalised to the
    // lowest id of their string, so duplicate pieces share entries.
    canon_.resize(vocab_.pieces.size());
    for (size_t i = 0; i < vocab_.pieces.size(); ++i) canon_[i] = find(vocab_.pieces[i]);
    for (size_t t = 0; t < vocab_.pieces.size(); ++t) {
      if (canon_[t] != static_cast<int32_t>(t)) continue;
      const std::string_view s = vocab_.pieces[t];
      for (size_t k = 0; k <= s.size(); ++k) {
        const int32_t a = find(s.substr(0, k));
        const int32_t b = a < 0 ? -1 : find(s.substr(k));
        if (b >= 0) merges_.emplace(pair_key(a, b), static_cast<int32_t>(t));
      }
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool bos, bool eos) const override {
    // run.c puts BOS into the sequence before merging, so a pair with it could merge too.
    std::vector<int32_t> ids;
    ids.reserve(text.size() + 3);
    if (bos) ids.push_back(kBos);
    if (!text.empty()) append_initial_symbols(text, ids);
    merge(ids);
    if (eos) ids.push_back(kEos);
    return ids;
  }

  std::string decode(int32_t prev, int32_t token) const override {
    if (token < 0 || token >= vocab_size())
      fail(NWC_E_INVALID_ARG, name_ + ": token id " + std::to_string(token) +
                                  " is out of range, expected 0.." +
                                  std::to_string(vocab_size() - 1));
    std::string_view piece = vocab_.pieces[static_cast<size_t>(token)];
    // The dummy-prefix space of the first word after BOS is not part of the text.
    if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    if (const int b = detail::byte_piece_value(piece); b >= 0)
      return std::string(1, static_cast<char>(b));
    return std::string(piece);
  }

  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.pieces.size()); }

  // llama.cpp's SentencePiece-style tokenizer with the file's scores gives run.c's ids: the same
  // dummy prefix, score-greedy merges and byte fallback. llama2.c's export spelled SentencePiece's
  // "\u2581" as a space and BOS/EOS as "\n<s>\n"/"\n</s>\n"; GGUF gets SentencePiece's spelling.
  GgufMetadata gguf_metadata() const override {
    detail::GgufVocab v;
    v.model = "llama";
    v.pre = "default";
    v.scores = vocab_.scores;
    for (size_t i = 0; i < vocab_.pieces.size(); ++i) {
      const auto id = static_cast<int32_t>(i);
      std::string t = vocab_.pieces[i];
      int32_t type = detail::kGgufNormal;
      if (id == kUnk) {
        type = detail::kGgufUnknown;
        t = "<unk>";
      } else if (id == kBos || id == kEos) {
        type = detail::kGgufControl;
        t = id == kBos ? "<s>" : "</s>";
      } else if (id >= kFirstByteToken && id < kFirstByteToken + 256) {
        type = detail::kGgufByte; // run.c's byte fallback: id 3 + byte, spelled <0xHH>
      } else {
        std::string escaped;
        for (char c : t) escaped += c == ' ' ? std::string("\u2581") : std::string(1, c);
        t = std::move(escaped);
      }
      v.tokens.push_back(std::move(t));
      v.types.push_back(type);
    }
    v.bos = kBos;
    v.eos = kEos;
    v.unk = kUnk;
    v.add_bos = true;
    return detail::to_gguf_metadata(std::move(v));
  }

private:
  int32_t find(std::string_view s) const {
    const auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  }
  // Byte-fallback id; a vocabulary too small to have one maps the byte to <unk>.
  int32_t byte_token(uint8_t b) const {
    const int32_t id = kFirstByteToken + b;
    return id < vocab_size() ? id : kUnk;
  }

  // Steps 2 and 3 of run.c's encode(): dummy prefix, then one token per UTF-8 code point (a byte
  // plus up to 3 continuation bytes) or its bytes' fallback tokens. The text is taken as bytes, so
  // an embedded NUL is just byte 0 (run.c, reading a C string, would stop there).
  void append_initial_symbols(std::string_view text, std::vector<int32_t> &ids) const {
    const int32_t space = find(" ");
    ids.push_back(space >= 0 ? space : byte_token(' '));
    const auto is_cont = [](char c) { return (static_cast<uint8_t>(c) & 0xC0) == 0x80; };
    size_t i = 0;
    while (i < text.size()) {
      size_t n = 1;
      while (n < 4 && i + n < text.size() && is_cont(text[i + n])) ++n;
      const std::string_view cp = text.substr(i, n);
      if (const int32_t id = find(cp); id >= 0) {
        ids.push_back(id);
      } else {
        for (char c : cp) ids.push_back(byte_token(static_cast<uint8_t>(c)));
      }
      i += n;
    }
  }

  // Step 4: always merge the best-scoring adjacent pair, leftmost on ties, as run.c's quadratic
  // loop does (detail::bpe_merge, O(n log n)).
  void merge(std::vector<int32_t> &ids) const {
    const int32_t n = static_cast<int32_t>(ids.size());
    if (n < 2) return;
    const auto lookup = [&](int32_t l, int32_t r) -> std::optional<detail::BpeMergeCandidate> {
      const auto it =
          merges_.find(pair_key(canon_[static_cast<size_t>(ids[static_cast<size_t>(l)])],
                                canon_[static_cast<size_t>(ids[static_cast<size_t>(r)])]));
      if (it == merges_.end()) return std::nullopt;
      const int32_t id = it->second;
      const float score = vocab_.scores[static_cast<size_t>(id)];
      if (!(score > kMinMergeScore)) return std::nullopt; // also rejects NaN, like run.c
      return detail::BpeMergeCandidate{score, id};
    };
    const auto apply = [&](int32_t l, int32_t, int32_t merged) {
      ids[static_cast<size_t>(l)] = merged;
    };
    const std::vector<int32_t> order = detail::bpe_merge(n, lookup, apply);
    size_t w = 0; // order is increasing, so compacting in place is safe
    for (int32_t i : order) ids[w++] = ids[static_cast<size_t>(i)];
    ids.resize(w);
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }

  std::string name_;
  Llama2cVocab vocab_;
  std::unordered_map<std::string_view, int32_t> lookup_; // string -> lowest id
  std::vector<int32_t> canon_;                           // id -> lowest id of the same string
  std::unordered_map<uint64_t, int32_t> merges_;         // (canon left, canon right) -> merged id
};

void check_vocab_size_arg(const std::filesystem::path &path, int64_t vocab_size) {
  if (vocab_size < 0 || vocab_size > INT32_MAX)
    fail(NWC_E_INVALID_ARG, path.string() + ": expected vocabulary size " +
                                std::to_string(vocab_size) + " is out of range, expected 0.." +
                                std::to_string(INT32_MAX));
}

} // namespace

namespace detail {

GgufMetadata to_gguf_metadata(GgufVocab v) {
  GgufMetadata m;
  m.emplace_back("tokenizer.ggml.model", v.model);
  if (!v.pre.empty()) m.emplace_back("tokenizer.ggml.pre", v.pre);
  m.emplace_back("tokenizer.ggml.tokens", std::move(v.tokens));
  if (!v.scores.empty()) m.emplace_back("tokenizer.ggml.scores", std::move(v.scores));
  m.emplace_back("tokenizer.ggml.token_type", std::move(v.types));
  if (!v.merges.empty()) m.emplace_back("tokenizer.ggml.merges", std::move(v.merges));
  const auto id = [&](const char *key, int32_t token) {
    if (token >= 0) m.emplace_back(key, static_cast<uint32_t>(token));
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  m.emplace_back("tokenizer.ggml.add_bos_token", v.add_bos);
  m.emplace_back("tokenizer.ggml.add_eos_token", v.add_eos);
  if (v.add_space_prefix >= 0)
    m.emplace_back("tokenizer.ggml.add_space_prefix", v.add_space_prefix != 0);
  return m;
}

} // namespace detail

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path &path,
                                                  int64_t vocab_size) {
  check_vocab_size_arg(path, vocab_size);
  const std::vector<uint8_t> bytes = read_whole_file(path);
  return std::make_unique<Llama2cTokenizer>(path.string(),
                                            parse_llama2c(path.string(), bytes, vocab_size));
}

namespace {

// A model directory's tokenizer: tokenizer.json, else tokenizer.model, else tokenizer.bin.
std::filesystem::path tokenizer_in_directory(const std::filesystem::path &dir) {
  for (const char *name : {"tokenizer.json", "tokenizer.model", "tokenizer.bin"}) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(dir / name, ec)) return dir / name;
  }
  fail(NWC_E_IO,
       dir.string() + ": directory has no tokenizer.json, tokenizer.model or tokenizer.bin");
}

// A JSON object: optional UTF-8 byte-order mark and whitespace, then '{'. A tokenizer.bin starts
// with a little-endian int32 max_token_length and a SentencePiece model with a protobuf tag, so
// neither is mistaken for one ('{' is 0x7B: a max_token_length of 123 + 256k would need such a
// file to be at least that large and still parse as JSON).
bool looks_like_json(const std::vector<uint8_t> &bytes) {
  size_t i = 0;
  if (bytes.size() >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF) i = 3;
  while (i < bytes.size() &&
         (bytes[i] == ' ' || bytes[i] == '\t' || bytes[i] == '\n' || bytes[i] == '\r'))
    ++i;
  return i < bytes.size() && bytes[i] == '{';
}

} // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path &path_in,
                                          int64_t vocab_size) {
  check_vocab_size_arg(path_in, vocab_size);
  std::error_code ec;
  const std::filesystem::path path =
      std::filesystem::is_directory(path_in, ec) ? tokenizer_in_directory(path_in) : path_in;
  const std::vector<uint8_t> bytes = read_whole_file(path);
  if (looks_like_json(bytes)) {
    auto hf = load_hf_tokenizer(path);
    // A model's embedding may have more rows than the tokenizer has tokens (padding), not fewer.
    if (vocab_size > 0 && hf->vocab_size() > vocab_size)
      fail(NWC_E_INVALID_ARG, path.string() + ": tokenizer has " +
                                  std::to_string(hf->vocab_size()) +
                                  " tokens, more than the model's " + std::to_string(vocab_size));
    return hf;
  }
  // A tokenizer.bin must parse cleanly to EOF with every length within max_token_length; a
  // protobuf practically never does, so a clean parse decides the format.
  std::string llama_error;
  try {
    Llama2cVocab v = parse_llama2c(path.string(), bytes, 0);
    const int64_t count = static_cast<int64_t>(v.pieces.size());
    if (vocab_size > 0 && count != vocab_size)
      fail(NWC_E_INVALID_ARG, path.string() + ": tokenizer has " + std::to_string(count) +
                                  " tokens, the model expects " + std::to_string(vocab_size));
    return std::make_unique<Llama2cTokenizer>(path.string(), std::move(v));
  } catch (const Error &e) {
    if (e.code() != NWC_E_CORRUPT_STREAM) throw;
    llama_error = e.what();
    // Keep only the reason, the path is said once.
    const std::string prefix = path.string() + ": ";
    if (llama_error.starts_with(prefix)) llama_error.erase(0, prefix.size());
  }
  std::unique_ptr<Tokenizer> sp;
  try {
    sp = load_sentencepiece_tokenizer(path);
  } catch (const Error &e) {
    if (e.code() != NWC_E_CORRUPT_STREAM) throw;
    std::string sp_error = e.what();
    const std::string prefix = path.string() + ": ";
    if (sp_error.starts_with(prefix)) sp_error.erase(0, prefix.size());
    fail(NWC_E_CORRUPT_STREAM,
         path.string() +
             ": not a tokenizer, expected a tokenizer.json (a JSON object), a "
             "llama2.c tokenizer.bin (" +
             llama_error + ") or a SentencePiece model (" + sp_error + ")");
  }
  if (vocab_size > 0 && sp->vocab_size() != vocab_size)
    fail(NWC_E_INVALID_ARG, path.string() + ": tokenizer has " + std::to_string(sp->vocab_size()) +
                                " tokens, the model expects " + std::to_string(vocab_size));
  return sp;
}

std::string read_text_file(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(NWC_E_IO, path.string() + ": cannot read text file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace nwc::runtime
