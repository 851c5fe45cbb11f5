// Normalizers, pre-tokenizers and decoders of tokenizer.json, as the Rust `tokenizers` library
// defines them (the loader is tokenizer_hf.cpp; docs/tokenizers.md lists the components).
#include "hf_components.hpp"

#include "sp_charsmap.hpp"
#include "unicode_text.hpp"

#include <algorithm>

namespace nwc::runtime::hf {

namespace d = detail;

// ------------------------------------------------------------------------------------------------
// Normalizers: string -> string.

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

static bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static std::string remove_marks(const std::string &s, bool nonspacing_only) {
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

static Behavior parse_behavior(const Ctx &ctx, const json &j, const std::string &path,
                               Behavior def) {
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
static void split_pieces(std::string_view s, const std::vector<std::pair<size_t, size_t>> &hits,
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
static std::vector<std::pair<size_t, size_t>> char_hits(std::string_view s, Pred &&pred) {
  std::vector<std::pair<size_t, size_t>> hits;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = d::utf8_next(s, i);
    if (pred(c)) hits.emplace_back(start, i);
  }
  return hits;
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
const ByteTable &byte_table() {
  static const ByteTable t;
  return t;
}

static constexpr const char *kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

template <typename F> static PreTokenizer each_piece(F f) {
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

} // namespace nwc::runtime::hf
