// Hugging Face tokenizer.json (the `tokenizers` library's format) in our own C++: normalizer,
// pre-tokenizer, model (BPE, byte-level BPE, Unigram), added tokens, post-processor and decoder.
// The semantics follow the Rust `tokenizers` library; the independent check is the JavaScript
// implementation @huggingface/tokenizers (tests/unit/tokenizer). docs/tokenizers.md lists the
// components and the few places where the two references differ.
#include "nwc/runtime/tokenizer.hpp"

#include "bpe_merge.hpp"
#include "hf_regex.hpp"
#include "nwc/cpp/error.hpp"
#include "sp_charsmap.hpp"
#include "unicode_text.hpp"
#include "unigram.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace nwc::runtime {

namespace {

using json = nlohmann::json;
namespace d = detail;

constexpr std::string_view kMetaspace = "\xE2\x96\x81"; // U+2581

// Heterogeneous lookup (string_view keys) in string-keyed maps.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Errors: "<file>: <json path> <what>", one line.
struct Ctx {
  std::string file;
  [[noreturn]] void fail_at(const std::string &path, const std::string &what) const {
    fail(NWC_E_INVALID_ARG, file + ": " + path + " " + what);
  }
  [[noreturn]] void unsupported_type(const std::string &path, const std::string &type) const {
    fail_at(path + ".type", "\"" + type + "\" is not supported");
  }
};

const json *member(const json &j, const char *key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const Ctx &ctx, const json &j, const std::string &path, const char *key,
                       std::optional<std::string> def = std::nullopt) {
  const json *m = member(j, key);
  if (!m) {
    if (def) return *def;
    ctx.fail_at(path + "." + key, "is missing");
  }
  if (!m->is_string()) ctx.fail_at(path + "." + key, "must be a string");
  return m->get<std::string>();
}

bool get_bool(const Ctx &ctx, const json &j, const std::string &path, const char *key, bool def) {
  const json *m = member(j, key);
  if (!m) return def;
  if (!m->is_boolean()) ctx.fail_at(path + "." + key, "must be true or false");
  return m->get<bool>();
}

int64_t get_int(const Ctx &ctx, const json &j, const std::string &path, const char *key,
                int64_t def) {
  const json *m = member(j, key);
  if (!m) return def;
  if (!m->is_number_integer()) ctx.fail_at(path + "." + key, "must be an integer");
  return m->get<int64_t>();
}

std::string type_of(const Ctx &ctx, const json &j, const std::string &path) {
  if (!j.is_object()) ctx.fail_at(path, "must be an object");
  return get_string(ctx, j, path, "type");
}

void replace_all(std::string &s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// A tokenizer.json pattern: {"String": "..."} (literal) or {"Regex": "..."}.
class Pattern {
public:
  Pattern(const Ctx &ctx, const json &j, const std::string &path) {
    if (const json *s = member(j, "String"); s && s->is_string()) {
      literal_ = s->get<std::string>();
    } else if (const json *r = member(j, "Regex"); r && r->is_string()) {
      regex_ = std::make_shared<d::Regex>(r->get<std::string>(), ctx.file + ": " + path + ".Regex");
    } else {
      ctx.fail_at(path, "must be {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    if (regex_) return regex_->find_all(s);
    std::vector<std::pair<size_t, size_t>> out;
    if (literal_.empty()) return out;
    for (size_t pos = 0, hit; (hit = s.find(literal_, pos)) != std::string_view::npos;
         pos = hit + literal_.size())
      out.emplace_back(hit, hit + literal_.size());
    return out;
  }
  std::string replace(const std::string &s, std::string_view content) const {
    if (!regex_) {
      std::string out = s;
      replace_all(out, literal_, content);
      return out;
    }
    const auto hits = regex_->find_all(s);
    if (hits.empty()) return s;
    std::string out;
    size_t pos = 0;
    for (const auto &[b, e] : hits) {
      out.append(s, pos, b - pos);
      out.append(content);
      pos = e;
    }
    out.append(s, pos, std::string::npos);
    return out;
  }

private:
  std::string literal_;
  std::shared_ptr<d::Regex> regex_;
};

// ------------------------------------------------------------------------------------------------
// Normalizers: string -> string.
using Normalizer = std::function<std::string(std::string)>;

std::string strip_white(std::string s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t i = b;
      if (!d::is_white_space(d::utf8_next(s, i))) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
      size_t i = start;
      if (!d::is_white_space(d::utf8_next(s, i))) break;
      e = start;
    }
  }
  return s.substr(b, e - b);
}

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::string remove_marks(const std::string &s, bool nonspacing_only) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = d::utf8_next(s, i);
    if (nonspacing_only ? d::is_nonspacing_mark(c) : d::is_mark(c)) continue;
    out.append(s, start, i - start);
  }
  return out;
}

Normalizer make_normalizer(const Ctx &ctx, const json &j, const std::string &path) {
  const std::string type = type_of(ctx, j, path);
  if (type == "Sequence") {
    const json *list = member(j, "normalizers");
    if (!list || !list->is_array()) ctx.fail_at(path + ".normalizers", "must be an array");
    std::vector<Normalizer> parts;
    for (size_t i = 0; i < list->size(); ++i)
      parts.push_back(
          make_normalizer(ctx, (*list)[i], path + ".normalizers[" + std::to_string(i) + "]"));
    return [parts](std::string s) {
      for (const auto &n : parts) s = n(std::move(s));
      return s;
    };
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const d::NormalForm form = type == "NFC"    ? d::NormalForm::kNfc
                               : type == "NFD"  ? d::NormalForm::kNfd
                               : type == "NFKC" ? d::NormalForm::kNfkc
                                                : d::NormalForm::kNfkd;
    return [form](std::string s) { return d::unicode_normalize(s, form); };
  }
  if (type == "Lowercase") return [](std::string s) { return d::unicode_lowercase(s); };
  if (type == "Strip") {
    const bool left = get_bool(ctx, j, path, "strip_left", true);
    const bool right = get_bool(ctx, j, path, "strip_right", true);
    return [left, right](std::string s) { return strip_white(std::move(s), left, right); };
  }
  if (type == "StripAccents") return [](std::string s) { return remove_marks(s, false); };
  if (type == "Replace") {
    const json *pat = member(j, "pattern");
    if (!pat) ctx.fail_at(path + ".pattern", "is missing");
    auto pattern = std::make_shared<Pattern>(ctx, *pat, path + ".pattern");
    const std::string content = get_string(ctx, j, path, "content", std::string());
    return [pattern, content](std::string s) { return pattern->replace(s, content); };
  }
  if (type == "Prepend") {
    const std::string prepend = get_string(ctx, j, path, "prepend");
    return [prepend](std::string s) { return s.empty() ? s : prepend + s; };
  }
  if (type == "Precompiled") {
    const std::string b64 = get_string(ctx, j, path, "precompiled_charsmap", std::string());
    // Base64 decode.
    std::string blob;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : b64) {
      int v;
      if (c >= 'A' && c <= 'Z')
        v = c - 'A';
      else if (c >= 'a' && c <= 'z')
        v = c - 'a' + 26;
      else if (c >= '0' && c <= '9')
        v = c - '0' + 52;
      else if (c == '+')
        v = 62;
      else if (c == '/')
        v = 63;
      else if (c == '=')
        break;
      else
        ctx.fail_at(path + ".precompiled_charsmap", "is not base64");
      acc = acc << 6 | static_cast<uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        blob += static_cast<char>((acc >> bits) & 0xFF);
      }
    }
    auto map = std::make_shared<d::PrecompiledCharsmap>(ctx.file + ": " + path, blob);
    return [map](std::string s) { return map->empty() ? s : map->normalize(s); };
  }
  if (type == "BertNormalizer") {
    const bool clean = get_bool(ctx, j, path, "clean_text", true);
    const bool chinese = get_bool(ctx, j, path, "handle_chinese_chars", true);
    const bool lowercase = get_bool(ctx, j, path, "lowercase", true);
    const json *sa = member(j, "strip_accents");
    const bool strip = sa ? sa->is_boolean() && sa->get<bool>() : lowercase;
    return [clean, chinese, lowercase, strip](std::string s) {
      std::string out;
      out.reserve(s.size());
      for (size_t i = 0; i < s.size();) {
        const size_t start = i;
        const char32_t c = d::utf8_next(s, i);
        if (clean) {
          if (c == 0 || c == 0xFFFD) continue;
          const bool ws =
              c == '\t' || c == '\n' || c == '\r' || c == ' ' || d::is_separator_space(c);
          if (ws) {
            out += ' ';
            continue;
          }
          if (d::is_other(c)) continue;
        }
        if (chinese && is_chinese_char(c)) {
          out += ' ';
          out.append(s, start, i - start);
          out += ' ';
          continue;
        }
        out.append(s, start, i - start);
      }
      if (strip) out = remove_marks(d::unicode_normalize(out, d::NormalForm::kNfd), true);
      if (lowercase) out = d::unicode_lowercase(out);
      return out;
    };
  }
  ctx.unsupported_type(path, type);
}

// ------------------------------------------------------------------------------------------------
// Splitting with the `tokenizers` delimiter behaviours.
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const Ctx &ctx, const json &j, const std::string &path, Behavior def) {
  const json *b = member(j, "behavior");
  if (!b) return def;
  const std::string s = b->is_string() ? b->get<std::string>() : std::string();
  if (s == "Removed") return Behavior::kRemoved;
  if (s == "Isolated") return Behavior::kIsolated;
  if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::kMergedWithNext;
  if (s == "Contiguous") return Behavior::kContiguous;
  ctx.fail_at(path + ".behavior", "\"" + s + "\" is not supported");
}

struct Segment {
  size_t begin, end;
  bool match;
};

// Pieces of s given the [begin, end) ranges of the delimiters (sorted, disjoint), as
// NormalizedString::split does in the Rust library. Empty pieces are dropped.
void split_pieces(std::string_view s, const std::vector<std::pair<size_t, size_t>> &hits,
                  Behavior behavior, bool invert, std::vector<std::string> &out) {
  std::vector<Segment> seg;
  seg.reserve(hits.size() * 2 + 1);
  size_t prev = 0;
  for (const auto &[b, e] : hits) {
    if (b > prev) seg.push_back({prev, b, false});
    seg.push_back({b, e, true});
    prev = e;
  }
  if (prev < s.size()) seg.push_back({prev, s.size(), false});
  if (invert)
    for (auto &x : seg) x.match = !x.match;
  std::vector<Segment> res;
  res.reserve(seg.size());
  switch (behavior) {
  case Behavior::kRemoved:
    for (const auto &x : seg)
      if (!x.match) res.push_back(x);
    break;
  case Behavior::kIsolated:
    res = seg;
    break;
  case Behavior::kMergedWithPrevious: {
    bool prev_match = false;
    for (const auto &x : seg) {
      if (x.match && !prev_match && !res.empty())
        res.back().end = x.end;
      else
        res.push_back(x);
      prev_match = x.match;
    }
    break;
  }
  case Behavior::kMergedWithNext: {
    bool prev_match = false;
    for (auto it = seg.rbegin(); it != seg.rend(); ++it) {
      if (it->match && !prev_match && !res.empty())
        res.back().begin = it->begin;
      else
        res.push_back(*it);
      prev_match = it->match;
    }
    std::reverse(res.begin(), res.end());
    break;
  }
  case Behavior::kContiguous: {
    bool prev_match = false;
    bool first = true;
    for (const auto &x : seg) {
      if (!first && x.match == prev_match)
        res.back().end = x.end;
      else
        res.push_back(x);
      prev_match = x.match;
      first = false;
    }
    break;
  }
  }
  for (const auto &x : res)
    if (x.end > x.begin) out.emplace_back(s.substr(x.begin, x.end - x.begin));
}

// Delimiter ranges of the characters for which pred holds, one range per character.
template <typename Pred>
std::vector<std::pair<size_t, size_t>> char_hits(std::string_view s, Pred &&pred) {
  std::vector<std::pair<size_t, size_t>> hits;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = d::utf8_next(s, i);
    if (pred(c)) hits.emplace_back(start, i);
  }
  return hits;
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
struct ByteTable {
  std::array<std::string, 256> to_char;
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      d::utf8_append(to_char[static_cast<size_t>(b)], c);
      to_byte[c] = static_cast<uint8_t>(b);
    }
  }
};
const ByteTable &byte_table() {
  static const ByteTable t;
  return t;
}

constexpr const char *kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Pre-tokenizers: pieces -> pieces. `at_start`: the section begins the input (Metaspace "first").
using PreTokenizer = std::function<void(std::vector<std::string> &pieces, bool at_start)>;

template <typename F> PreTokenizer each_piece(F f) {
  return [f](std::vector<std::string> &pieces, bool at_start) {
    std::vector<std::string> out;
    out.reserve(pieces.size());
    for (size_t i = 0; i < pieces.size(); ++i) f(pieces[i], at_start && i == 0, out);
    pieces = std::move(out);
  };
}

PreTokenizer make_pre_tokenizer(const Ctx &ctx, const json &j, const std::string &path) {
  const std::string type = type_of(ctx, j, path);
  if (type == "Sequence") {
    const json *list = member(j, "pretokenizers");
    if (!list || !list->is_array()) ctx.fail_at(path + ".pretokenizers", "must be an array");
    std::vector<PreTokenizer> parts;
    for (size_t i = 0; i < list->size(); ++i)
      parts.push_back(
          make_pre_tokenizer(ctx, (*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]"));
    return [parts](std::vector<std::string> &pieces, bool at_start) {
      for (const auto &p : parts) p(pieces, at_start);
    };
  }
  if (type == "ByteLevel") {
    const bool prefix = get_bool(ctx, j, path, "add_prefix_space", true);
    const bool use_regex = get_bool(ctx, j, path, "use_regex", true);
    std::shared_ptr<d::Regex> re;
    if (use_regex) re = std::make_shared<d::Regex>(kGpt2Pattern, ctx.file + ": " + path);
    return each_piece([prefix, re](const std::string &p, bool, std::vector<std::string> &out) {
      std::string s = p;
      if (prefix && !s.starts_with(' ')) s.insert(0, 1, ' ');
      std::vector<std::string> parts;
      if (re)
        split_pieces(s, re->find_all(s), Behavior::kIsolated, false, parts);
      else
        parts.push_back(std::move(s));
      const ByteTable &t = byte_table();
      for (const std::string &part : parts) {
        std::string m;
        m.reserve(part.size() * 2);
        for (char c : part) m += t.to_char[static_cast<uint8_t>(c)];
        out.push_back(std::move(m));
      }
    });
  }
  if (type == "Split") {
    const json *pat = member(j, "pattern");
    if (!pat) ctx.fail_at(path + ".pattern", "is missing");
    auto pattern = std::make_shared<Pattern>(ctx, *pat, path + ".pattern");
    const Behavior behavior = parse_behavior(ctx, j, path, Behavior::kRemoved);
    const bool invert = get_bool(ctx, j, path, "invert", false);
    return each_piece(
        [pattern, behavior, invert](const std::string &p, bool, std::vector<std::string> &out) {
          split_pieces(p, pattern->find_all(p), behavior, invert, out);
        });
  }
  if (type == "Metaspace") {
    const std::string replacement =
        get_string(ctx, j, path, "replacement", std::string(kMetaspace));
    std::string scheme = "always";
    if (const json *ps = member(j, "prepend_scheme")) {
      scheme = ps->is_string() ? ps->get<std::string>() : "";
      if (scheme != "always" && scheme != "first" && scheme != "never")
        ctx.fail_at(path + ".prepend_scheme", "\"" + scheme + "\" is not supported");
    } else if (!get_bool(ctx, j, path, "add_prefix_space", true)) {
      scheme = "never";
    }
    const bool split = get_bool(ctx, j, path, "split", true);
    return each_piece([replacement, scheme, split](const std::string &p, bool at_start,
                                                   std::vector<std::string> &out) {
      std::string s = p;
      replace_all(s, " ", replacement);
      if (!s.starts_with(replacement) && (scheme == "always" || (scheme == "first" && at_start)))
        s.insert(0, replacement);
      if (!split) {
        out.push_back(std::move(s));
        return;
      }
      std::vector<std::pair<size_t, size_t>> hits;
      for (size_t pos = 0, hit; (hit = s.find(replacement, pos)) != std::string::npos;
           pos = hit + replacement.size())
        hits.emplace_back(hit, hit + replacement.size());
      split_pieces(s, hits, Behavior::kMergedWithNext, false, out);
    });
  }
  if (type == "Digits") {
    const bool individual = get_bool(ctx, j, path, "individual_digits", false);
    return each_piece([individual](const std::string &p, bool, std::vector<std::string> &out) {
      split_pieces(p, char_hits(p, [](char32_t c) { return c >= '0' && c <= '9'; }),
                   individual ? Behavior::kIsolated : Behavior::kContiguous, false, out);
    });
  }
  if (type == "Whitespace") {
    auto re = std::make_shared<d::Regex>("\\w+|[^\\w\\s]+", ctx.file + ": " + path);
    return each_piece([re](const std::string &p, bool, std::vector<std::string> &out) {
      split_pieces(p, re->find_all(p), Behavior::kRemoved, true, out);
    });
  }
  if (type == "WhitespaceSplit") {
    return each_piece([](const std::string &p, bool, std::vector<std::string> &out) {
      split_pieces(p, char_hits(p, d::is_white_space), Behavior::kRemoved, false, out);
    });
  }
  const auto is_punct = [](char32_t c) {
    return (c < 0x80 && ((c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) ||
                         (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E))) ||
           d::is_punctuation(c);
  };
  if (type == "Punctuation") {
    const Behavior behavior = parse_behavior(ctx, j, path, Behavior::kIsolated);
    return each_piece(
        [behavior, is_punct](const std::string &p, bool, std::vector<std::string> &out) {
          split_pieces(p, char_hits(p, is_punct), behavior, false, out);
        });
  }
  if (type == "BertPreTokenizer") {
    return each_piece([is_punct](const std::string &p, bool, std::vector<std::string> &out) {
      std::vector<std::string> words;
      split_pieces(p, char_hits(p, d::is_white_space), Behavior::kRemoved, false, words);
      for (const std::string &w : words)
        split_pieces(w, char_hits(w, is_punct), Behavior::kIsolated, false, out);
    });
  }
  ctx.unsupported_type(path, type);
}

// ------------------------------------------------------------------------------------------------
// Decoders, applied token by token (decode(prev, token)).
struct DecodeStep {
  enum Kind { kReplace, kByteFallback, kStrip, kMetaspace, kByteLevel } kind;
  std::shared_ptr<Pattern> pattern;
  std::string content; // Replace content, Strip content, Metaspace replacement
  int64_t start = 0;   // Strip
  bool prepend = true; // Metaspace: a prefix was added (prepend_scheme != never)
};

void make_decoder(const Ctx &ctx, const json &j, const std::string &path,
                  std::vector<DecodeStep> &steps) {
  const std::string type = type_of(ctx, j, path);
  if (type == "Sequence") {
    const json *list = member(j, "decoders");
    if (!list || !list->is_array()) ctx.fail_at(path + ".decoders", "must be an array");
    for (size_t i = 0; i < list->size(); ++i)
      make_decoder(ctx, (*list)[i], path + ".decoders[" + std::to_string(i) + "]", steps);
  } else if (type == "Fuse") {
  } else if (type == "ByteFallback") {
    steps.push_back({DecodeStep::kByteFallback, nullptr, {}, 0, true});
  } else if (type == "ByteLevel") {
    steps.push_back({DecodeStep::kByteLevel, nullptr, {}, 0, true});
  } else if (type == "Replace") {
    const json *pat = member(j, "pattern");
    if (!pat) ctx.fail_at(path + ".pattern", "is missing");
    steps.push_back({DecodeStep::kReplace, std::make_shared<Pattern>(ctx, *pat, path + ".pattern"),
                     get_string(ctx, j, path, "content", std::string()), 0, true});
  } else if (type == "Strip") {
    steps.push_back({DecodeStep::kStrip, nullptr, get_string(ctx, j, path, "content", " "),
                     get_int(ctx, j, path, "start", 0), true});
  } else if (type == "Metaspace") {
    std::string scheme = "always";
    if (const json *ps = member(j, "prepend_scheme"); ps && ps->is_string())
      scheme = ps->get<std::string>();
    else if (!get_bool(ctx, j, path, "add_prefix_space", true))
      scheme = "never";
    steps.push_back({DecodeStep::kMetaspace, nullptr,
                     get_string(ctx, j, path, "replacement", std::string(kMetaspace)), 0,
                     scheme != "never"});
  } else {
    ctx.unsupported_type(path, type);
  }
}

// ------------------------------------------------------------------------------------------------
struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip, normalized, single_word;
};

// Leftmost-longest matching of added tokens (as the Rust library's Aho-Corasick and the
// JavaScript reference's trie): a byte trie and a first-byte filter.
class TokenMatcher {
public:
  void add(std::string_view key, int32_t token) {
    if (key.empty()) return;
    first_[static_cast<uint8_t>(key[0])] = true;
    trie_.insert(key, token);
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // (length, token) of the longest key at s's start; length 0 if none.
  std::pair<size_t, int32_t> longest(std::string_view s) const {
    if (s.empty() || !first_[static_cast<uint8_t>(s[0])]) return {0, -1};
    std::pair<size_t, int32_t> best{0, -1};
    trie_.prefixes(s, [&](size_t len, int32_t v) { best = {len, v}; });
    return best;
  }

private:
  std::array<bool, 256> first_{};
  d::PieceTrie trie_;
  bool empty_ = true;
};

struct Section {
  std::string text;
  int32_t token; // added token index, -1 for text
};

class HfTokenizer final : public Tokenizer {
public:
  HfTokenizer(const Ctx &ctx, const json &root, const json *config) : ctx_(ctx) {
    if (!root.is_object()) ctx.fail_at("(top level)", "must be a JSON object");
    // "truncation" and "padding" shape batches of fixed length; encode() never truncates or pads.
    if (const json *n = member(root, "normalizer"))
      normalizer_ = make_normalizer(ctx, *n, "normalizer");
    if (const json *p = member(root, "pre_tokenizer"))
      pre_tokenizer_ = make_pre_tokenizer(ctx, *p, "pre_tokenizer");
    const json *model = member(root, "model");
    if (!model) ctx.fail_at("model", "is missing");
    load_model(*model);
    load_added_tokens(root);
    if (const json *p = member(root, "post_processor")) load_post_processor(*p, "post_processor");
    if (const json *dec = member(root, "decoder"))
      make_decoder(ctx, *dec, "decoder", decode_steps_);
    apply_config(config);
    for (int b = 0; b < 256; ++b) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const std::string piece = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
      const auto it = vocab_.find(piece);
      byte_ids_[static_cast<size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    }
  }

  std::vector<int32_t> encode(std::string_view input, bool bos, bool eos) const override {
    std::vector<int32_t> out;
    if (bos) out.insert(out.end(), prefix_.begin(), prefix_.end());
    const std::string text = d::utf8_repair(input);
    StringMap<std::vector<int32_t>> cache;
    const std::vector<Section> sections = split_added(text, raw_matcher_);
    for (size_t k = 0; k < sections.size(); ++k) {
      const Section &raw = sections[k];
      if (raw.token >= 0) {
        out.push_back(added_[static_cast<size_t>(raw.token)].id);
        continue;
      }
      const std::string norm = normalizer_ ? normalizer_(raw.text) : raw.text;
      if (norm.empty()) continue;
      const std::vector<Section> subs = split_added(norm, norm_matcher_);
      for (size_t i = 0; i < subs.size(); ++i) {
        const Section &sub = subs[i];
        if (sub.token >= 0) {
          out.push_back(added_[static_cast<size_t>(sub.token)].id);
          continue;
        }
        std::vector<std::string> pieces{sub.text};
        // Metaspace's prepend_scheme "first": only the text at the very start of the input.
        if (pre_tokenizer_) pre_tokenizer_(pieces, k == 0 && i == 0);
        for (const std::string &p : pieces) encode_word(p, cache, out);
      }
    }
    if (eos) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  std::string decode(int32_t prev, int32_t token) const override {
    check_id(token);
    // Special added tokens decode to nothing; other added tokens go through the decoders too.
    if (const int32_t a = added_index_[static_cast<size_t>(token)];
        a >= 0 && added_[static_cast<size_t>(a)].special)
      return {};
    const bool at_start =
        prev < 0 || prev >= vocab_size() ||
        (added_index_[static_cast<size_t>(prev)] >= 0 &&
         added_[static_cast<size_t>(added_index_[static_cast<size_t>(prev)])].special);
    std::string s = pieces_[static_cast<size_t>(token)];
    for (const DecodeStep &st : decode_steps_) {
      switch (st.kind) {
      case DecodeStep::kReplace:
        s = st.pattern->replace(s, st.content);
        break;
      case DecodeStep::kByteFallback:
        if (const int b = d::byte_piece_value(s); b >= 0) s = std::string(1, static_cast<char>(b));
        break;
      case DecodeStep::kStrip:
        if (at_start)
          for (int64_t k = 0; k < st.start && !st.content.empty() && s.starts_with(st.content); ++k)
            s.erase(0, st.content.size());
        break;
      case DecodeStep::kMetaspace:
        replace_all(s, st.content, " ");
        if (at_start && st.prepend && s.starts_with(' ')) s.erase(0, 1);
        break;
      case DecodeStep::kByteLevel: {
        std::string bytes;
        bytes.reserve(s.size());
        const auto &to_byte = byte_table().to_byte;
        for (size_t i = 0; i < s.size();) {
          const size_t start = i;
          const char32_t c = d::utf8_next(s, i);
          const auto it = to_byte.find(c);
          if (it != to_byte.end())
            bytes += static_cast<char>(it->second);
          else
            bytes.append(s, start, i - start);
        }
        s = std::move(bytes);
        break;
      }
      }
    }
    return s;
  }

  std::string piece(int32_t token) const override {
    check_id(token);
    return pieces_[static_cast<size_t>(token)];
  }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }

private:
  void check_id(int32_t token) const {
    if (token < 0 || token >= vocab_size())
      fail(NWC_E_INVALID_ARG, ctx_.file + ": token id " + std::to_string(token) +
                                  " is out of range, expected 0.." +
                                  std::to_string(vocab_size() - 1));
  }

  void set_piece(int32_t id, const std::string &text) {
    if (id < 0) ctx_.fail_at("model.vocab", "has a negative id");
    if (static_cast<size_t>(id) >= pieces_.size()) {
      if (id > 16 * 1024 * 1024)
        ctx_.fail_at("model.vocab", "has id " + std::to_string(id) + ", more than 16M");
      pieces_.resize(static_cast<size_t>(id) + 1);
      added_index_.resize(static_cast<size_t>(id) + 1, -1);
    }
    pieces_[static_cast<size_t>(id)] = text;
  }

  void load_model(const json &m) {
    const std::string type = member(m, "type") ? get_string(ctx_, m, "model", "type") : "";
    const json *vocab = member(m, "vocab");
    if (!vocab) ctx_.fail_at("model.vocab", "is missing");
    if (type == "BPE" || (type.empty() && vocab->is_object() && member(m, "merges"))) {
      bpe_ = true;
      if (const json *dr = member(m, "dropout"))
        ctx_.fail_at("model.dropout", "is " + dr->dump() + ", only null is supported");
      if (!get_string(ctx_, m, "model", "continuing_subword_prefix", std::string()).empty())
        ctx_.fail_at("model.continuing_subword_prefix", "is not supported (only null or \"\")");
      if (!get_string(ctx_, m, "model", "end_of_word_suffix", std::string()).empty())
        ctx_.fail_at("model.end_of_word_suffix", "is not supported (only null or \"\")");
      byte_fallback_ = get_bool(ctx_, m, "model", "byte_fallback", false);
      fuse_unk_ = get_bool(ctx_, m, "model", "fuse_unk", false);
      ignore_merges_ = get_bool(ctx_, m, "model", "ignore_merges", false);
      if (!vocab->is_object()) ctx_.fail_at("model.vocab", "must be an object for BPE");
      vocab_.reserve(vocab->size());
      for (const auto &[k, v] : vocab->items()) {
        if (!v.is_number_integer())
          ctx_.fail_at("model.vocab[\"" + k + "\"]", "must be an integer");
        const auto id = v.get<int64_t>();
        if (id < 0 || id > INT32_MAX) ctx_.fail_at("model.vocab[\"" + k + "\"]", "is out of range");
        vocab_.emplace(k, static_cast<int32_t>(id));
        set_piece(static_cast<int32_t>(id), k);
      }
      const std::string unk = get_string(ctx_, m, "model", "unk_token", std::string());
      if (!unk.empty()) {
        const auto it = vocab_.find(unk);
        if (it == vocab_.end())
          ctx_.fail_at("model.unk_token", "\"" + unk + "\" is not in the vocabulary");
        unk_id_ = it->second;
      }
      const json *merges = member(m, "merges");
      if (!merges || !merges->is_array()) ctx_.fail_at("model.merges", "must be an array");
      if (merges->size() >= (1u << 24)) ctx_.fail_at("model.merges", "has more than 2^24 merges");
      merges_.reserve(merges->size());
      std::string a, b;
      for (size_t i = 0; i < merges->size(); ++i) {
        const json &e = (*merges)[i];
        const std::string at = "model.merges[" + std::to_string(i) + "]";
        if (e.is_string()) {
          const std::string s = e.get<std::string>();
          const size_t sp = s.find(' ');
          if (sp == std::string::npos) ctx_.fail_at(at, "\"" + s + "\" is not \"left right\"");
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
          a = e[0].get<std::string>();
          b = e[1].get<std::string>();
        } else {
          ctx_.fail_at(at, "must be \"left right\" or [left, right]");
        }
        const auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
        if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end())
          ctx_.fail_at(at, "\"" + a + " " + b + "\" has a part or a result outside the vocabulary");
        merges_.emplace(pair_key(ia->second, ib->second),
                        std::pair<int32_t, int32_t>{static_cast<int32_t>(i), im->second});
      }
      return;
    }
    if (type == "Unigram" || (type.empty() && vocab->is_array())) {
      bpe_ = false;
      if (!vocab->is_array()) ctx_.fail_at("model.vocab", "must be an array for Unigram");
      byte_fallback_ = get_bool(ctx_, m, "model", "byte_fallback", false);
      scores_.reserve(vocab->size());
      double min_score = std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < vocab->size(); ++i) {
        const json &e = (*vocab)[i];
        if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
          ctx_.fail_at("model.vocab[" + std::to_string(i) + "]", "must be [piece, score]");
        const std::string p = e[0].get<std::string>();
        const double score = e[1].get<double>();
        set_piece(static_cast<int32_t>(i), p);
        scores_.push_back(score);
        min_score = std::min(min_score, score);
        vocab_.emplace(p, static_cast<int32_t>(i));
        if (!p.empty()) trie_.insert(p, static_cast<int32_t>(i));
      }
      const int64_t unk = get_int(ctx_, m, "model", "unk_id", -1);
      if (unk >= static_cast<int64_t>(scores_.size()))
        ctx_.fail_at("model.unk_id", "is out of range");
      unk_id_ = static_cast<int32_t>(unk);
      unk_score_ = min_score - 10.0;
      // As the JavaScript reference, the unknown piece itself scores like an unknown character.
      if (unk_id_ >= 0) scores_[static_cast<size_t>(unk_id_)] = unk_score_;
      return;
    }
    ctx_.unsupported_type("model", type.empty() ? "(none)" : type);
  }

  void load_added_tokens(const json &root) {
    const json *list = member(root, "added_tokens");
    if (!list) return;
    if (!list->is_array()) ctx_.fail_at("added_tokens", "must be an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const json &e = (*list)[i];
      const std::string at = "added_tokens[" + std::to_string(i) + "]";
      AddedToken t;
      const int64_t id = get_int(ctx_, e, at, "id", -1);
      if (id < 0 || id > INT32_MAX) ctx_.fail_at(at + ".id", "is missing or out of range");
      t.id = static_cast<int32_t>(id);
      t.content = get_string(ctx_, e, at, "content");
      t.special = get_bool(ctx_, e, at, "special", false);
      t.lstrip = get_bool(ctx_, e, at, "lstrip", false);
      t.rstrip = get_bool(ctx_, e, at, "rstrip", false);
      t.normalized = get_bool(ctx_, e, at, "normalized", !t.special);
      t.single_word = get_bool(ctx_, e, at, "single_word", false);
      if (t.content.empty()) continue;
      set_piece(t.id, t.content);
      const auto index = static_cast<int32_t>(added_.size());
      added_index_[static_cast<size_t>(t.id)] = index;
      if (t.normalized && normalizer_)
        norm_matcher_.add(normalizer_(t.content), index);
      else
        raw_matcher_.add(t.content, index);
      added_.push_back(std::move(t));
    }
  }

  int32_t special_id(const std::string &content, const std::string &path) const {
    for (const AddedToken &t : added_)
      if (t.content == content) return t.id;
    if (const auto it = vocab_.find(content); it != vocab_.end()) return it->second;
    ctx_.fail_at(path, "names \"" + content + "\", which is not a token");
  }

  void load_post_processor(const json &p, const std::string &path) {
    const std::string type = type_of(ctx_, p, path);
    std::vector<int32_t> pre, post;
    if (type == "Sequence") {
      const json *list = member(p, "processors");
      if (!list || !list->is_array()) ctx_.fail_at(path + ".processors", "must be an array");
      for (size_t i = 0; i < list->size(); ++i)
        load_post_processor((*list)[i], path + ".processors[" + std::to_string(i) + "]");
      return;
    }
    if (type == "ByteLevel") return;
    if (type == "TemplateProcessing") {
      const json *single = member(p, "single");
      if (!single || !single->is_array()) ctx_.fail_at(path + ".single", "must be an array");
      const json *specials = member(p, "special_tokens");
      bool seen_a = false;
      for (size_t i = 0; i < single->size(); ++i) {
        const json &item = (*single)[i];
        const std::string at = path + ".single[" + std::to_string(i) + "]";
        if (const json *st = member(item, "SpecialToken")) {
          const std::string name = get_string(ctx_, *st, at + ".SpecialToken", "id");
          const json *spec = specials ? member(*specials, name.c_str()) : nullptr;
          std::vector<int32_t> ids;
          if (spec && member(*spec, "ids") && (*spec)["ids"].is_array()) {
            for (const json &x : (*spec)["ids"]) {
              if (!x.is_number_integer())
                ctx_.fail_at(path + ".special_tokens", "ids must be integers");
              ids.push_back(x.get<int32_t>());
            }
          } else {
            ids.push_back(special_id(name, at + ".SpecialToken.id"));
          }
          (seen_a ? post : pre).insert((seen_a ? post : pre).end(), ids.begin(), ids.end());
        } else if (const json *sq = member(item, "Sequence")) {
          if (get_string(ctx_, *sq, at + ".Sequence", "id") != "A")
            ctx_.fail_at(at + ".Sequence.id", "must be \"A\" in the single template");
          seen_a = true;
        } else {
          ctx_.fail_at(at, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        }
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      for (const char *key : {"cls", "sep"}) {
        const json *e = member(p, key);
        if (!e || !e->is_array() || e->size() != 2 || !(*e)[1].is_number_integer())
          ctx_.fail_at(path + "." + key, "must be [token, id]");
        (std::string(key) == "cls" ? pre : post).push_back((*e)[1].get<int32_t>());
      }
    } else {
      ctx_.unsupported_type(path, type);
    }
    // Later processors wrap the result of earlier ones.
    prefix_.insert(prefix_.begin(), pre.begin(), pre.end());
    suffix_.insert(suffix_.end(), post.begin(), post.end());
    if (!template_bos_) template_bos_ = pre.empty() ? std::nullopt : std::optional(pre.front());
    if (!post.empty()) template_eos_ = post.back();
  }

  void apply_config(const json *config) {
    const auto token_name = [&](const char *key) -> std::optional<std::string> {
      if (!config) return std::nullopt;
      const json *t = member(*config, key);
      if (!t) return std::nullopt;
      if (t->is_string()) return t->get<std::string>();
      if (const json *c = member(*t, "content"); c && c->is_string()) return c->get<std::string>();
      return std::nullopt;
    };
    const auto lookup = [&](const std::optional<std::string> &name) -> int32_t {
      if (!name) return -1;
      for (const AddedToken &t : added_)
        if (t.content == *name) return t.id;
      const auto it = vocab_.find(*name);
      return it == vocab_.end() ? -1 : it->second;
    };
    bos_id_ = lookup(token_name("bos_token"));
    eos_id_ = lookup(token_name("eos_token"));
    if (bos_id_ < 0 && template_bos_) bos_id_ = *template_bos_;
    if (eos_id_ < 0 && template_eos_) eos_id_ = *template_eos_;
    if (!config) return;
    // transformers' Llama and Gemma tokenizers rebuild the post-processor from these flags.
    const std::string cls = config->value("tokenizer_class", std::string());
    const bool rebuilds =
        cls.starts_with("Llama") || cls.starts_with("Gemma") || cls.starts_with("CodeLlama");
    if (!rebuilds) return;
    if (const json *b = member(*config, "add_bos_token"); b && b->is_boolean()) {
      prefix_.clear();
      if (b->get<bool>() && bos_id_ >= 0) prefix_.push_back(bos_id_);
    }
    if (const json *e = member(*config, "add_eos_token"); e && e->is_boolean()) {
      suffix_.clear();
      if (e->get<bool>() && eos_id_ >= 0) suffix_.push_back(eos_id_);
    }
  }

  // Splits text at added tokens (leftmost-longest), honouring single_word, lstrip and rstrip.
  std::vector<Section> split_added(const std::string &text, const TokenMatcher &m) const {
    std::vector<Section> out;
    if (m.empty()) {
      if (!text.empty()) out.push_back({text, -1});
      return out;
    }
    size_t start = 0;
    const auto is_word = [&](size_t i, bool before) {
      if (before) {
        if (i == 0) return false;
        size_t b = i - 1;
        while (b > 0 && (static_cast<uint8_t>(text[b]) & 0xC0) == 0x80) --b;
        size_t k = b;
        const char32_t c = d::utf8_next(text, k);
        return d::is_alphanumeric(c) || c == '_';
      }
      if (i >= text.size()) return false;
      size_t k = i;
      const char32_t c = d::utf8_next(text, k);
      return d::is_alphanumeric(c) || c == '_';
    };
    for (size_t i = 0; i < text.size();) {
      const auto [len, token] = m.longest(std::string_view(text).substr(i));
      if (len == 0 || (added_[static_cast<size_t>(token)].single_word &&
                       (is_word(i, true) || is_word(i + len, false)))) {
        i += d::utf8_lead_len(static_cast<uint8_t>(text[i]));
        continue;
      }
      if (i > start) out.push_back({text.substr(start, i - start), -1});
      out.push_back({std::string(), token});
      i += len;
      start = i;
    }
    if (start < text.size()) out.push_back({text.substr(start), -1});
    // lstrip / rstrip remove the whitespace beside the token from the neighbouring text.
    for (size_t k = 0; k < out.size(); ++k) {
      if (out[k].token < 0) continue;
      const AddedToken &t = added_[static_cast<size_t>(out[k].token)];
      if (t.lstrip && k > 0 && out[k - 1].token < 0)
        out[k - 1].text = strip_white(std::move(out[k - 1].text), false, true);
      if (t.rstrip && k + 1 < out.size() && out[k + 1].token < 0)
        out[k + 1].text = strip_white(std::move(out[k + 1].text), true, false);
    }
    std::vector<Section> kept;
    kept.reserve(out.size());
    for (auto &s : out)
      if (s.token >= 0 || !s.text.empty()) kept.push_back(std::move(s));
    return kept;
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }

  // Byte fallback for an unknown piece: its bytes' <0xHH> tokens if all exist, else unk.
  void emit_unknown(std::string_view s, std::vector<int32_t> &out, size_t word_start) const {
    if (byte_fallback_) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : s) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        return;
      }
    }
    if (unk_id_ < 0) return; // no unknown token: the piece is dropped (as the JS reference)
    if ((fuse_unk_ || !bpe_) && out.size() > word_start && out.back() == unk_id_) return;
    out.push_back(unk_id_);
  }

  void encode_word(const std::string &word, StringMap<std::vector<int32_t>> &cache,
                   std::vector<int32_t> &out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (const auto it = vocab_.find(word); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < 256;
    if (cacheable) {
      if (const auto it = cache.find(word); it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t start = out.size();
    if (bpe_)
      encode_bpe(word, out);
    else
      encode_unigram(word, out);
    if (cacheable && cache.size() < 200000)
      cache.emplace(
          word, std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
  }

  void encode_bpe(const std::string &word, std::vector<int32_t> &out) const {
    struct Sym {
      int32_t id; // -1: a character outside the vocabulary
      uint32_t begin, len;
    };
    std::vector<Sym> sym;
    sym.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      const size_t n = std::min(d::utf8_lead_len(static_cast<uint8_t>(word[i])), word.size() - i);
      const auto it = vocab_.find(std::string_view(word).substr(i, n));
      sym.push_back({it == vocab_.end() ? -1 : it->second, static_cast<uint32_t>(i),
                     static_cast<uint32_t>(n)});
      i += n;
    }
    const auto lookup = [&](int32_t l, int32_t r) -> std::optional<d::BpeMergeCandidate> {
      const int32_t a = sym[static_cast<size_t>(l)].id, b = sym[static_cast<size_t>(r)].id;
      if (a < 0 || b < 0) return std::nullopt;
      const auto it = merges_.find(pair_key(a, b));
      if (it == merges_.end()) return std::nullopt;
      // Lowest rank first; bpe_merge takes the highest score, leftmost on ties.
      return d::BpeMergeCandidate{-static_cast<float>(it->second.first), it->second.second};
    };
    const auto apply = [&](int32_t l, int32_t r, int32_t merged) {
      sym[static_cast<size_t>(l)].id = merged;
      sym[static_cast<size_t>(l)].len += sym[static_cast<size_t>(r)].len;
    };
    const std::vector<int32_t> order =
        d::bpe_merge(static_cast<int32_t>(sym.size()), lookup, apply);
    const size_t word_start = out.size();
    for (int32_t i : order) {
      const Sym &s = sym[static_cast<size_t>(i)];
      if (s.id >= 0)
        out.push_back(s.id);
      else
        emit_unknown(std::string_view(word).substr(s.begin, s.len), out, word_start);
    }
  }

  void encode_unigram(const std::string &word, std::vector<int32_t> &out) const {
    const auto score = [&](int32_t id, size_t) -> std::optional<double> {
      return scores_[static_cast<size_t>(id)];
    };
    const auto spans = d::unigram_viterbi<double>(word, trie_, score, unk_score_);
    const size_t word_start = out.size();
    for (const d::UnigramSpan &s : spans) {
      if (s.id >= 0 && s.id != unk_id_)
        out.push_back(s.id);
      else
        emit_unknown(std::string_view(word).substr(s.begin, s.end - s.begin), out, word_start);
    }
  }

  Ctx ctx_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  bool bpe_ = true, byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  StringMap<int32_t> vocab_;                                         // model vocabulary
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_; // (a, b) -> (rank, merged)
  std::vector<double> scores_;                                       // Unigram
  d::PieceTrie trie_;                                                // Unigram
  double unk_score_ = 0;
  int32_t unk_id_ = -1;
  std::vector<std::string> pieces_;  // id -> vocabulary entry or added token
  std::vector<int32_t> added_index_; // id -> index into added_, -1
  std::vector<AddedToken> added_;
  TokenMatcher raw_matcher_, norm_matcher_;
  std::vector<int32_t> prefix_, suffix_;
  std::optional<int32_t> template_bos_, template_eos_;
  int32_t bos_id_ = -1, eos_id_ = -1;
  std::vector<DecodeStep> decode_steps_;
  std::array<int32_t, 256> byte_ids_{};
};

json read_json(const std::filesystem::path &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(NWC_E_IO, path.string() + ": cannot open tokenizer file");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception &e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    fail(NWC_E_CORRUPT_STREAM, path.string() + ": not valid JSON (" + what + ")");
  }
}

} // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path &path_in) {
  std::filesystem::path path = path_in;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) path /= "tokenizer.json";
  if (!std::filesystem::is_regular_file(path, ec))
    fail(NWC_E_IO, path.string() + ": cannot open tokenizer file (not a regular file)");
  const json root = read_json(path);
  const std::filesystem::path config_path = path.parent_path() / "tokenizer_config.json";
  json config;
  const bool has_config = std::filesystem::is_regular_file(config_path, ec);
  if (has_config) config = read_json(config_path);
  return std::make_unique<HfTokenizer>(Ctx{path.string()}, root, has_config ? &config : nullptr);
}

} // namespace nwc::runtime
