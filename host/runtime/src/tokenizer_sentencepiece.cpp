// SentencePiece .model files, read and applied without libsentencepiece or libprotobuf (both clash
// with the protobuf that LibTorch loads into the same process).
//
// The file is a serialized sentencepiece.ModelProto (proto2). We read the protobuf wire format
// directly and keep only what encoding and decoding need:
//   ModelProto      1: repeated SentencePiece pieces, 2: TrainerSpec, 3: NormalizerSpec
//   SentencePiece   1: piece (string), 2: score (float), 3: type (1 NORMAL, 2 UNKNOWN, 3 CONTROL,
//                   4 USER_DEFINED, 5 UNUSED, 6 BYTE; default NORMAL)
//   TrainerSpec     3: model_type (1 UNIGRAM (default), 2 BPE, 3 WORD, 4 CHAR),
//                   24: treat_whitespace_as_suffix, 35: byte_fallback, 40..43: unk/bos/eos/pad id
//   NormalizerSpec  1: name, 2: precompiled_charsmap, 3: add_dummy_prefix (default true),
//                   4: remove_extra_whitespaces (default true), 5: escape_whitespaces (default
//                   true)
// Every other field is skipped by wire type; groups (wire types 3/4) and malformed data are errors.
//
// Supported: model_type BPE and UNIGRAM, encoded exactly as SentencePiece's models do (see
// encode_bpe() and encode_unigram()). WORD and CHAR models, and treat_whitespace_as_suffix, are
// rejected with an error naming the file.
//
// Normalization, exactly as SentencePiece's Normalizer: user-defined pieces are kept whole; else
// the precompiled_charsmap (a Darts double-array trie of rules, e.g. the default nmt_nfkc: NFKC
// plus whitespace and control-character folding) replaces the longest matching prefix; else one
// well-formed UTF-8 character is kept, or one malformed byte becomes U+FFFD. Then the whitespace
// rules: dummy prefix, removal of extra spaces, spaces escaped as U+2581.
#include "nwc/runtime/tokenizer.hpp"

#include "bpe_merge.hpp"
#include "gguf_vocab.hpp"
#include "nwc/cpp/error.hpp"
#include "sp_charsmap.hpp"
#include "unigram.hpp"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <unordered_map>
#include <utility>

namespace nwc::runtime {

namespace {

// SentencePiece marks spaces with U+2581 LOWER ONE EIGHTH BLOCK.
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

enum PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum ModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

struct Piece {
  std::string text;
  float score = 0.0f;
  int32_t type = kNormal;
};

struct ModelSpec {
  std::vector<Piece> pieces;
  // TrainerSpec
  int32_t model_type = kUnigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  // NormalizerSpec
  std::string normalizer_name;
  std::string charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Protobuf wire-format reader over one message's bytes. Every read is bounds-checked; errors name
// the file and the absolute byte offset.
class WireReader {
public:
  WireReader(const std::string &name, std::string_view data, size_t base)
      : name_(name), data_(data), base_(base) {}

  bool done() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    const size_t start = pos_;
    uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      if (pos_ >= data_.size()) corrupt(start, "truncated varint");
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      // The 10th byte holds only bit 63.
      if (i == 9 && b > 1) corrupt(start, "varint overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7F) << (7 * i);
      if (b < 0x80) return v;
    }
    corrupt(start, "varint overflows 64 bits");
  }

  // (field number, wire type)
  std::pair<uint32_t, uint32_t> tag() {
    const size_t start = pos_;
    const uint64_t t = varint();
    const uint64_t field = t >> 3;
    if (field == 0 || field > 0x1FFFFFFF)
      corrupt(start, "invalid field number " + std::to_string(field));
    return {static_cast<uint32_t>(field), static_cast<uint32_t>(t & 7)};
  }

  // A length-delimited payload; `offset` receives its absolute offset.
  std::string_view bytes(size_t *offset = nullptr) {
    const size_t start = pos_;
    const uint64_t len = varint();
    if (len > data_.size() - pos_)
      corrupt(start, "length " + std::to_string(len) + " runs past the end of its message (" +
                         std::to_string(data_.size() - pos_) + " bytes left)");
    if (offset) *offset = base_ + pos_;
    const std::string_view out = data_.substr(pos_, static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return out;
  }

  uint32_t fixed32() {
    if (data_.size() - pos_ < 4) corrupt(pos_, "truncated fixed32");
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
      v = v << 8 | static_cast<uint8_t>(data_[pos_ + static_cast<size_t>(i)]);
    pos_ += 4;
    return v;
  }

  void skip(uint32_t field, uint32_t wire) {
    switch (wire) {
    case 0:
      (void)varint();
      return;
    case 1:
      if (data_.size() - pos_ < 8) corrupt(pos_, "truncated fixed64");
      pos_ += 8;
      return;
    case 2:
      (void)bytes();
      return;
    case 5:
      (void)fixed32();
      return;
    default:
      corrupt(pos_, "field " + std::to_string(field) + " has unsupported wire type " +
                        std::to_string(wire) + (wire == 3 || wire == 4 ? " (group)" : ""));
    }
  }

  void expect(uint32_t field, uint32_t wire, uint32_t expected) const {
    if (wire != expected)
      corrupt(pos_, "field " + std::to_string(field) + " has wire type " + std::to_string(wire) +
                        ", expected " + std::to_string(expected));
  }

  // proto2 int32/enum: the low 32 bits of the varint (negative values are sign-extended to 10
  // bytes on the wire).
  int32_t int32() { return static_cast<int32_t>(static_cast<uint32_t>(varint() & 0xFFFFFFFFu)); }
  bool boolean() { return varint() != 0; }

  [[noreturn]] void corrupt(size_t at, const std::string &what) const {
    fail(NWC_E_CORRUPT_STREAM, name_ + ": malformed SentencePiece model: " + what + " at byte " +
                                   std::to_string(base_ + at));
  }

private:
  const std::string &name_;
  std::string_view data_;
  size_t base_;
  size_t pos_ = 0;
};

Piece parse_piece(const std::string &name, std::string_view data, size_t base) {
  WireReader r(name, data, base);
  Piece p;
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 1) {
      r.expect(field, wire, 2);
      p.text = std::string(r.bytes());
    } else if (field == 2) {
      r.expect(field, wire, 5);
      const uint32_t bits = r.fixed32();
      std::memcpy(&p.score, &bits, sizeof p.score);
    } else if (field == 3) {
      r.expect(field, wire, 0);
      p.type = r.int32();
    } else {
      r.skip(field, wire);
    }
  }
  return p;
}

void parse_trainer_spec(const std::string &name, std::string_view data, size_t base, ModelSpec &m) {
  WireReader r(name, data, base);
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    int32_t *id = nullptr;
    switch (field) {
    case 3:
      r.expect(field, wire, 0);
      m.model_type = r.int32();
      continue;
    case 24:
      r.expect(field, wire, 0);
      m.treat_whitespace_as_suffix = r.boolean();
      continue;
    case 35:
      r.expect(field, wire, 0);
      m.byte_fallback = r.boolean();
      continue;
    case 40:
      id = &m.unk_id;
      break;
    case 41:
      id = &m.bos_id;
      break;
    case 42:
      id = &m.eos_id;
      break;
    case 43:
      id = &m.pad_id;
      break;
    default:
      r.skip(field, wire);
      continue;
    }
    r.expect(field, wire, 0);
    *id = r.int32();
  }
}

void parse_normalizer_spec(const std::string &name, std::string_view data, size_t base,
                           ModelSpec &m) {
  WireReader r(name, data, base);
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    switch (field) {
    case 1:
      r.expect(field, wire, 2);
      m.normalizer_name = std::string(r.bytes());
      break;
    case 2:
      r.expect(field, wire, 2);
      m.charsmap = std::string(r.bytes());
      break;
    case 3:
      r.expect(field, wire, 0);
      m.add_dummy_prefix = r.boolean();
      break;
    case 4:
      r.expect(field, wire, 0);
      m.remove_extra_whitespaces = r.boolean();
      break;
    case 5:
      r.expect(field, wire, 0);
      m.escape_whitespaces = r.boolean();
      break;
    default:
      r.skip(field, wire);
    }
  }
}

ModelSpec parse_model(const std::string &name, std::string_view data) {
  WireReader r(name, data, 0);
  ModelSpec m;
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field >= 1 && field <= 3) {
      r.expect(field, wire, 2);
      size_t off = 0;
      const std::string_view sub = r.bytes(&off);
      if (field == 1)
        m.pieces.push_back(parse_piece(name, sub, off));
      else if (field == 2)
        parse_trainer_spec(name, sub, off, m);
      else
        parse_normalizer_spec(name, sub, off, m);
    } else {
      r.skip(field, wire);
    }
  }
  return m;
}

const char *model_type_name(int32_t t) {
  switch (t) {
  case kUnigram:
    return "UNIGRAM";
  case kBpe:
    return "BPE";
  case kWord:
    return "WORD";
  case kChar:
    return "CHAR";
  default:
    return nullptr;
  }
}

class SentencePieceTokenizer final : public Tokenizer {
public:
  SentencePieceTokenizer(std::string name, ModelSpec spec)
      : name_(std::move(name)), m_(std::move(spec)) {
    const auto corrupt = [&](const std::string &what) {
      fail(NWC_E_CORRUPT_STREAM, name_ + ": " + what);
    };
    if (m_.pieces.empty()) corrupt("SentencePiece model has no pieces");
    if (m_.pieces.size() > static_cast<size_t>(INT32_MAX))
      corrupt("SentencePiece model has too many pieces");
    const int32_t n = vocab_size();
    unk_id_ = -1;
    for (int32_t i = 0; i < n; ++i) {
      const Piece &p = m_.pieces[static_cast<size_t>(i)];
      const std::string at = "SentencePiece piece " + std::to_string(i);
      if (p.text.empty()) corrupt(at + " is empty");
      if (p.type < kNormal || p.type > kByte)
        corrupt(at + " has type " + std::to_string(p.type) + ", expected 1..6");
      if (std::isnan(p.score)) corrupt(at + " has a NaN score");
      // As libsentencepiece: normal, user-defined and unused pieces take part in merges; control,
      // unknown and byte pieces are only found by their exact text.
      const bool normal = p.type == kNormal || p.type == kUserDefined || p.type == kUnused;
      auto &map = normal ? pieces_ : reserved_;
      if (!map.emplace(std::string_view(p.text), i).second ||
          (normal ? reserved_ : pieces_).contains(p.text))
        corrupt(at + " '" + p.text + "' is defined twice");
      if (p.type == kUnknown) {
        if (unk_id_ >= 0) corrupt(at + " is a second unknown piece");
        unk_id_ = i;
      }
      if (p.type == kUserDefined) {
        user_defined_.emplace(std::string_view(p.text), i);
        max_user_defined_len_ = std::max(max_user_defined_len_, p.text.size());
      }
      if (p.type == kUnused) has_unused_ = true;
    }
    if (unk_id_ < 0) corrupt("SentencePiece model has no unknown piece");
    // As SentencePiece's InitializePieces: byte pieces exist exactly with byte_fallback, all 256.
    int byte_pieces = 0;
    for (int32_t i = 0; i < n; ++i) {
      const Piece &p = m_.pieces[static_cast<size_t>(i)];
      if (p.type != kByte) continue;
      if (!m_.byte_fallback)
        corrupt("SentencePiece piece " + std::to_string(i) + " '" + p.text +
                "' is a byte piece although byte_fallback is false");
      if (detail::byte_piece_value(p.text) < 0)
        corrupt("SentencePiece byte piece " + std::to_string(i) + " is '" + p.text +
                "', expected <0xHH>");
      ++byte_pieces;
    }
    if (m_.byte_fallback && byte_pieces != 256)
      corrupt("SentencePiece model has " + std::to_string(byte_pieces) +
              " byte pieces although byte_fallback is true, expected 256");
    const char *type = model_type_name(m_.model_type);
    if (m_.model_type != kBpe && m_.model_type != kUnigram)
      fail(NWC_E_INVALID_ARG, name_ + ": SentencePiece model type " +
                                  (type ? std::string(type) : "#" + std::to_string(m_.model_type)) +
                                  " is not supported, only BPE and UNIGRAM models are");
    charsmap_ = detail::PrecompiledCharsmap(name_, m_.charsmap);
    if (m_.model_type == kUnigram) {
      // As SentencePiece's unigram Model: scores of NORMAL pieces bound the unknown penalty and
      // the user-defined bonus; the trie holds normal, user-defined and unused pieces.
      float min_score = FLT_MAX, max_score = FLT_MIN;
      for (const Piece &p : m_.pieces) {
        if (p.type != kNormal) continue;
        min_score = std::min(min_score, p.score);
        max_score = std::max(max_score, p.score);
      }
      min_score_ = min_score;
      max_score_ = max_score;
      for (const auto &[text, id] : pieces_) trie_.insert(text, id);
    }
    if (m_.treat_whitespace_as_suffix)
      fail(NWC_E_INVALID_ARG,
           name_ + ": SentencePiece models with treat_whitespace_as_suffix are not supported");
    const auto special = [&](int32_t id) {
      return id >= 0 && id < n && m_.pieces[static_cast<size_t>(id)].type == kControl ? id : -1;
    };
    bos_id_ = special(m_.bos_id);
    eos_id_ = special(m_.eos_id);
    for (int b = 0; b < 256; ++b) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const std::string piece = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
      byte_ids_[static_cast<size_t>(b)] = piece_to_id(piece);
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool bos, bool eos) const override {
    if (bos && bos_id_ < 0)
      fail(NWC_E_INVALID_ARG, name_ + ": BOS requested but the SentencePiece model has no BOS id");
    if (eos && eos_id_ < 0)
      fail(NWC_E_INVALID_ARG, name_ + ": EOS requested but the SentencePiece model has no EOS id");
    std::vector<int32_t> out;
    if (bos) out.push_back(bos_id_);
    if (m_.model_type == kUnigram)
      encode_unigram(normalize(text), out);
    else
      encode_bpe(normalize(text), out);
    if (eos) out.push_back(eos_id_);
    return out;
  }

  // Piece by piece: U+2581 becomes a space, byte pieces their byte; control and unknown pieces
  // decode to "" (libsentencepiece prints " ⁇ " for unknown; we keep no surface for it). After BOS
  // the dummy-prefix space of the first piece is dropped (only if the model adds one).
  std::string decode(int32_t prev, int32_t token) const override {
    if (token < 0 || token >= vocab_size())
      fail(NWC_E_INVALID_ARG, name_ + ": token id " + std::to_string(token) +
                                  " is out of range, expected 0.." +
                                  std::to_string(vocab_size() - 1));
    const Piece &p = m_.pieces[static_cast<size_t>(token)];
    if (p.type == kControl || p.type == kUnknown) return {};
    if (p.type == kByte) {
      const int b = detail::byte_piece_value(p.text);
      if (b < 0)
        fail(NWC_E_CORRUPT_STREAM, name_ + ": byte piece " + std::to_string(token) + " is '" +
                                       p.text + "', expected <0xHH>");
      return std::string(1, static_cast<char>(b));
    }
    std::string text;
    text.reserve(p.text.size());
    const std::string_view piece = p.text;
    for (size_t i = 0; i < piece.size();) {
      if (m_.escape_whitespaces && piece.substr(i, kSpaceMark.size()) == kSpaceMark) {
        text += ' ';
        i += kSpaceMark.size();
      } else {
        text += piece[i++];
      }
    }
    if (m_.add_dummy_prefix && prev >= 0 && prev == bos_id_ && !text.empty() && text[0] == ' ')
      text.erase(0, 1);
    return text;
  }

  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(m_.pieces.size()); }

  // As convert_hf_to_gguf.py's _set_vocab_sentencepiece: pieces, scores and types as the model
  // has them, for llama.cpp's SentencePiece-style BPE tokenizer. llama.cpp reproduces a Unigram
  // model only with its T5 tokenizer and the charsmap, which nwc does not write.
  GgufMetadata gguf_metadata() const override {
    if (m_.model_type != kBpe)
      fail(NWC_E_INVALID_ARG, name_ +
                                  ": a SentencePiece UNIGRAM model cannot be written to GGUF "
                                  "(llama.cpp's \"llama\" tokenizer is BPE); expected a BPE model");
    detail::GgufVocab v;
    v.model = "llama";
    v.pre = "default";
    for (const Piece &p : m_.pieces) {
      v.tokens.push_back(p.text);
      v.scores.push_back(p.score);
      v.types.push_back(p.type);
    }
    v.bos = bos_id_;
    v.eos = eos_id_;
    v.unk = unk_id_;
    v.pad = m_.pad_id >= 0 && m_.pad_id < vocab_size() ? m_.pad_id : -1;
    v.add_bos = bos_id_ >= 0;
    v.add_space_prefix = m_.add_dummy_prefix ? 1 : 0;
    return detail::to_gguf_metadata(std::move(v));
  }

private:
  // libsentencepiece's PieceToId: control/unknown/byte pieces, then the others, else <unk>.
  int32_t piece_to_id(std::string_view s) const {
    if (const auto it = reserved_.find(s); it != reserved_.end()) return it->second;
    if (const auto it = pieces_.find(s); it != pieces_.end()) return it->second;
    return unk_id_;
  }

  // Length of the longest user-defined piece at the start of s, 0 if none.
  size_t user_defined_prefix(std::string_view s) const {
    for (size_t len = std::min(max_user_defined_len_, s.size()); len > 0; --len)
      if (user_defined_.contains(s.substr(0, len))) return len;
    return 0;
  }

  // The next unit of input for the normalizer and what it normalizes to: a user-defined piece
  // as is, else the charsmap's longest rule, else a well-formed UTF-8 character as is, else one
  // malformed byte as U+FFFD (Normalizer::NormalizePrefix).
  std::pair<std::string_view, size_t> next_unit(std::string_view s) const {
    if (const size_t u = user_defined_prefix(s); u > 0) return {s.substr(0, u), u};
    return charsmap_.normalize_prefix(s);
  }

  // SentencePiece's Normalizer::Normalize.
  std::string normalize(std::string_view in) const {
    std::string out;
    const std::string_view space = m_.escape_whitespaces ? kSpaceMark : std::string_view(" ");
    if (m_.remove_extra_whitespaces) {
      while (!in.empty()) {
        const auto [unit, used] = next_unit(in);
        if (unit != " ") break;
        in.remove_prefix(used);
      }
    }
    if (in.empty()) return out;
    out.reserve(in.size() * 3 + space.size());
    if (m_.add_dummy_prefix) out += space;
    bool prev_space = m_.remove_extra_whitespaces;
    while (!in.empty()) {
      auto [unit, used] = next_unit(in);
      if (prev_space)
        while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
      if (!unit.empty()) {
        for (char c : unit) {
          if (c == ' ')
            out += space;
          else
            out += c;
        }
        prev_space = unit.back() == ' ';
      }
      in.remove_prefix(used);
      if (!m_.remove_extra_whitespaces) prev_space = false;
    }
    if (m_.remove_extra_whitespaces)
      while (out.size() >= space.size() && std::string_view(out).ends_with(space))
        out.resize(out.size() - space.size());
    return out;
  }

  // SentencePiece's BPE model: split into user-defined pieces (longest match, never merged) and
  // characters; merge the adjacent pair whose concatenation is a piece with the highest score,
  // leftmost on ties; unused pieces are split back into the parts they were merged from; symbols
  // that are not pieces become byte pieces (byte fallback) or <unk>, one per run of them.
  void encode_bpe(const std::string &norm, std::vector<int32_t> &out) const {
    struct Sym {
      size_t begin, len;
      bool frozen;
    };
    std::vector<Sym> sym;
    sym.reserve(norm.size());
    const std::string_view s = norm;
    for (size_t i = 0; i < s.size();) {
      size_t len = user_defined_prefix(s.substr(i));
      const bool frozen = len > 0;
      if (!frozen) {
        // The normalized text is well-formed UTF-8; the lead byte gives the length.
        const auto lead = static_cast<uint8_t>(s[i]);
        len = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
        len = std::min(len, s.size() - i);
      }
      sym.push_back({i, len, frozen});
      i += len;
    }
    if (sym.size() > static_cast<size_t>(INT32_MAX))
      fail(NWC_E_INVALID_ARG, name_ + ": text too long to encode");
    // Parts of every pair proposed for a merge, for splitting unused pieces (like libsentencepiece,
    // the last proposal of a string wins).
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> parts;
    const auto view = [&](int32_t i) {
      const Sym &x = sym[static_cast<size_t>(i)];
      return s.substr(x.begin, x.len);
    };
    const auto lookup = [&](int32_t l, int32_t r) -> std::optional<detail::BpeMergeCandidate> {
      const Sym &a = sym[static_cast<size_t>(l)];
      const Sym &b = sym[static_cast<size_t>(r)];
      if (a.frozen || b.frozen) return std::nullopt;
      const std::string_view merged = s.substr(a.begin, a.len + b.len);
      const auto it = pieces_.find(merged);
      if (it == pieces_.end()) return std::nullopt;
      if (has_unused_) parts[merged] = {view(l), view(r)};
      return detail::BpeMergeCandidate{m_.pieces[static_cast<size_t>(it->second)].score,
                                       it->second};
    };
    const auto apply = [&](int32_t l, int32_t r, int32_t) {
      sym[static_cast<size_t>(l)].len += sym[static_cast<size_t>(r)].len;
    };
    const std::vector<int32_t> order =
        detail::bpe_merge(static_cast<int32_t>(sym.size()), lookup, apply);
    const size_t start = out.size();
    for (int32_t i : order) emit(view(i), parts, start, out);
  }

  // SentencePiece's unigram Model::EncodeOptimized: Viterbi over the pieces (unused pieces never
  // match, user-defined ones score length * max_score - 0.1, unknown characters min_score - 10),
  // then as SentencePieceProcessor: unknown spans become byte pieces with byte fallback, else a
  // run of them is one <unk>.
  void encode_unigram(const std::string &norm, std::vector<int32_t> &out) const {
    const auto score = [&](int32_t id, size_t len) -> std::optional<double> {
      const Piece &p = m_.pieces[static_cast<size_t>(id)];
      if (p.type == kUnused) return std::nullopt;
      if (p.type == kUserDefined) return static_cast<double>(len) * max_score_ - 0.1;
      return p.score;
    };
    const float unk_score = min_score_ - 10.0f;
    const auto spans = detail::unigram_viterbi<float>(norm, trie_, score, unk_score);
    bool prev_unk = false;
    for (const detail::UnigramSpan &sp : spans) {
      const int32_t id = sp.id < 0 ? unk_id_ : sp.id;
      const bool unk = id == unk_id_;
      if (unk && m_.byte_fallback) {
        for (size_t i = sp.begin; i < sp.end; ++i)
          out.push_back(byte_ids_[static_cast<uint8_t>(norm[i])]);
      } else if (!(unk && prev_unk)) {
        out.push_back(id);
      }
      prev_unk = unk;
    }
  }

  void emit(std::string_view piece,
            const std::unordered_map<std::string_view,
                                     std::pair<std::string_view, std::string_view>> &parts,
            size_t start, std::vector<int32_t> &out) const {
    const int32_t id = piece_to_id(piece);
    const int32_t type = m_.pieces[static_cast<size_t>(id)].type;
    if (type == kUnused) {
      if (const auto it = parts.find(piece); it != parts.end()) {
        emit(it->second.first, parts, start, out);
        emit(it->second.second, parts, start, out);
        return;
      }
    }
    if (type == kUnknown && m_.byte_fallback) {
      for (char c : piece) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
      return;
    }
    // Without byte fallback a run of unknown symbols is one <unk>, as in libsentencepiece.
    if (type == kUnknown && out.size() > start && out.back() == unk_id_) return;
    out.push_back(id);
  }

  std::string name_;
  ModelSpec m_;
  std::unordered_map<std::string_view, int32_t> pieces_;   // normal, user-defined, unused
  std::unordered_map<std::string_view, int32_t> reserved_; // control, unknown, byte
  std::unordered_map<std::string_view, int32_t> user_defined_;
  size_t max_user_defined_len_ = 0;
  bool has_unused_ = false;
  int32_t unk_id_ = -1, bos_id_ = -1, eos_id_ = -1;
  std::array<int32_t, 256> byte_ids_{};
  detail::PrecompiledCharsmap charsmap_;
  detail::PieceTrie trie_; // unigram
  float min_score_ = 0, max_score_ = 0;
};

std::string read_model_file(const std::filesystem::path &path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(NWC_E_IO, path.string() + ": cannot open tokenizer file (not a regular file)");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(NWC_E_IO, path.string() + ": cannot open tokenizer file");
  const std::streamoff size = f.tellg();
  if (size < 0) fail(NWC_E_IO, path.string() + ": cannot determine the tokenizer file's size");
  std::string bytes(static_cast<size_t>(size), '\0');
  f.seekg(0);
  if (!f.read(bytes.data(), size)) fail(NWC_E_IO, path.string() + ": read error");
  return bytes;
}

} // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path &path) {
  const std::string name = path.string();
  const std::string bytes = read_model_file(path);
  return std::make_unique<SentencePieceTokenizer>(name, parse_model(name, bytes));
}

} // namespace nwc::runtime
