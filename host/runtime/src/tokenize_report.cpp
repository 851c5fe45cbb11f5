// tokenize_report: the library side of `nwc tokenize` (ids, pieces and decoded texts, as JSON or
// plain text).
#include "nwc/runtime/tokenizer.hpp"

#include "unicode_text.hpp"

#include <cstdio>

namespace nwc::runtime {

namespace {

// A JSON string literal of well-formed UTF-8 s (control characters escaped).
void json_string(std::string &out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    switch (ch) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20 || c == 0x7F) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += ch;
      }
    }
  }
  out += '"';
}

std::string hex_bytes(std::string_view s) {
  std::string out;
  char buf[4];
  for (char c : s) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<uint8_t>(c));
    out += buf;
  }
  return out;
}

// C-style escapes for control characters and bytes of ill-formed UTF-8; the rest as is.
std::string escaped(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (c == '\t') {
      out += "\\t";
      ++i;
    } else if (c == '\r') {
      out += "\\r";
      ++i;
    } else if (c == '\\') {
      out += "\\\\";
      ++i;
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (const size_t n = detail::utf8_valid_len(s.substr(i)); n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
      ++i;
    }
  }
  return out;
}

} // namespace

TokenizeReport tokenize_report(const Tokenizer &tokenizer, std::string_view text,
                               const TokenizeOptions &options) {
  TokenizeReport r;
  r.text_bytes = text.size();
  r.ids = tokenizer.encode(text, options.bos, options.eos);
  r.vocab_size = tokenizer.vocab_size();
  r.bos_id = tokenizer.bos_id();
  r.eos_id = tokenizer.eos_id();
  if (options.pieces) {
    r.pieces.reserve(r.ids.size());
    r.texts.reserve(r.ids.size());
    int32_t prev = -1;
    for (int32_t id : r.ids) {
      r.pieces.push_back(tokenizer.piece(id));
      r.texts.push_back(tokenizer.decode(prev, id));
      prev = id;
    }
  }
  return r;
}

std::string tokenize_report_json(const TokenizeReport &r) {
  std::string out = "{\"text_bytes\": " + std::to_string(r.text_bytes) +
                    ", \"tokens\": " + std::to_string(r.ids.size()) +
                    ", \"vocab_size\": " + std::to_string(r.vocab_size) +
                    ", \"bos_id\": " + std::to_string(r.bos_id) +
                    ", \"eos_id\": " + std::to_string(r.eos_id) + ", \"ids\": [";
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(r.ids[i]);
  }
  out += "]";
  if (!r.pieces.empty() || (!r.ids.empty() && r.texts.size() == r.ids.size())) {
    out += ", \"pieces\": [";
    for (size_t i = 0; i < r.pieces.size(); ++i) {
      if (i) out += ", ";
      out += "{\"id\": " + std::to_string(r.ids[i]) + ", \"piece\": ";
      json_string(out, detail::utf8_repair(r.pieces[i]));
      out += ", \"text\": ";
      const std::string &t = r.texts[i];
      json_string(out, detail::utf8_repair(t));
      if (!detail::utf8_is_valid(t)) out += ", \"bytes\": \"" + hex_bytes(t) + "\"";
      out += "}";
    }
    out += "]";
  }
  out += "}\n";
  return out;
}

std::string tokenize_report_text(const TokenizeReport &r) {
  std::string out;
  if (r.pieces.empty()) {
    for (size_t i = 0; i < r.ids.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(r.ids[i]);
    }
    out += '\n';
    return out;
  }
  for (size_t i = 0; i < r.ids.size(); ++i) {
    out += std::to_string(i) + "\t" + std::to_string(r.ids[i]) + "\t" + escaped(r.pieces[i]) +
           "\t" + escaped(r.texts[i]) + "\n";
  }
  return out;
}

} // namespace nwc::runtime
