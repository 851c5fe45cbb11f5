// Components of a Hugging Face tokenizer.json shared by the loader (tokenizer_hf.cpp) and their
// implementations (hf_components.cpp): the JSON accessors with one-line errors naming the file and
// the JSON path, patterns, and the factories of normalizers, pre-tokenizers and decoders.
#pragma once

#include "hf_regex.hpp"
#include "nwc/cpp/error.hpp"
#include "unicode_text.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nwc::runtime::hf {

using json = nlohmann::json;

inline constexpr std::string_view kMetaspace = "\xE2\x96\x81"; // U+2581

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

inline const json *member(const json &j, const char *key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

inline std::string get_string(const Ctx &ctx, const json &j, const std::string &path,
                              const char *key, std::optional<std::string> def = std::nullopt) {
  const json *m = member(j, key);
  if (!m) {
    if (def) return *def;
    ctx.fail_at(path + "." + key, "is missing");
  }
  if (!m->is_string()) ctx.fail_at(path + "." + key, "must be a string");
  return m->get<std::string>();
}

inline bool get_bool(const Ctx &ctx, const json &j, const std::string &path, const char *key,
                     bool def) {
  const json *m = member(j, key);
  if (!m) return def;
  if (!m->is_boolean()) ctx.fail_at(path + "." + key, "must be true or false");
  return m->get<bool>();
}

inline int64_t get_int(const Ctx &ctx, const json &j, const std::string &path, const char *key,
                       int64_t def) {
  const json *m = member(j, key);
  if (!m) return def;
  if (!m->is_number_integer()) ctx.fail_at(path + "." + key, "must be an integer");
  return m->get<int64_t>();
}

inline std::string type_of(const Ctx &ctx, const json &j, const std::string &path) {
  if (!j.is_object()) ctx.fail_at(path, "must be an object");
  return get_string(ctx, j, path, "type");
}

inline void replace_all(std::string &s, std::string_view from, std::string_view to) {
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
      regex_ =
          std::make_shared<detail::Regex>(r->get<std::string>(), ctx.file + ": " + path + ".Regex");
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
  std::shared_ptr<detail::Regex> regex_;
};

// ------------------------------------------------------------------------------------------------
// Normalizers: text -> text.
using Normalizer = std::function<std::string(std::string)>;
Normalizer make_normalizer(const Ctx &ctx, const json &j, const std::string &path);
// Removes leading (left) and/or trailing (right) white space.
std::string strip_white(std::string s, bool left, bool right);

// The byte-level alphabet of GPT-2: every byte as a printable character, and back.
struct ByteTable {
  std::array<std::string, 256> to_char;
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      detail::utf8_append(to_char[static_cast<size_t>(b)], c);
      to_byte[c] = static_cast<uint8_t>(b);
    }
  }
};
const ByteTable &byte_table();

// Pre-tokenizers: pieces -> pieces. `at_start`: the section begins the input (Metaspace "first").
using PreTokenizer = std::function<void(std::vector<std::string> &pieces, bool at_start)>;
PreTokenizer make_pre_tokenizer(const Ctx &ctx, const json &j, const std::string &path);

// Decoders, applied token by token (decode(prev, token)).
struct DecodeStep {
  enum Kind { kReplace, kByteFallback, kStrip, kMetaspace, kByteLevel } kind;
  std::shared_ptr<Pattern> pattern;
  std::string content; // Replace content, Strip content, Metaspace replacement
  int64_t start = 0;   // Strip
  bool prepend = true; // Metaspace: a prefix was added (prepend_scheme != never)
};
void make_decoder(const Ctx &ctx, const json &j, const std::string &path,
                  std::vector<DecodeStep> &steps);

} // namespace nwc::runtime::hf
