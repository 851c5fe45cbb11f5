#define PCRE2_CODE_UNIT_WIDTH 8
#include "hf_regex.hpp"

#include "nwc/cpp/error.hpp"
#include "unicode_text.hpp"

#include <pcre2.h>

namespace nwc::runtime::detail {

namespace {
constexpr std::string_view kWordChars = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";
bool is_ascii_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
} // namespace

std::string translate_oniguruma(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  int class_depth = 0;
  // Group depths at which an ASCII-folding (?i: group was opened; parentheses are counted.
  std::vector<bool> groups;
  int fold_groups = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      switch (e) {
      case 's':
        out += class_depth ? "\\p{White_Space}" : "\\p{White_Space}";
        continue;
      case 'S':
        out += "\\P{White_Space}";
        continue;
      case 'd':
        out += "\\p{Nd}";
        continue;
      case 'D':
        out += "\\P{Nd}";
        continue;
      case 'w':
        if (class_depth)
          out += kWordChars;
        else
          out += "[" + std::string(kWordChars) + "]";
        continue;
      case 'W':
        if (class_depth) { // cannot be expressed inside a class without set operations
          out += "\\W";
        } else {
          out += "[^" + std::string(kWordChars) + "]";
        }
        continue;
      default:
        out += '\\';
        out += e;
        // \p{..}, \x{..}: copy the braces verbatim.
        if ((e == 'p' || e == 'P' || e == 'x') && i + 1 < p.size() && p[i + 1] == '{') {
          const size_t close = p.find('}', i + 1);
          if (close != std::string_view::npos) {
            out.append(p.substr(i + 1, close - i));
            i = close;
          }
        }
        continue;
      }
    }
    if (class_depth > 0) {
      if (c == '[') ++class_depth;
      if (c == ']') --class_depth;
      out += c;
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == '(') {
      if (p.substr(i, 4) == "(?i:") {
        groups.push_back(true);
        ++fold_groups;
        out += "(?:";
        i += 3;
        continue;
      }
      groups.push_back(false);
      out += c;
      continue;
    }
    if (c == ')') {
      if (!groups.empty()) {
        if (groups.back()) --fold_groups;
        groups.pop_back();
      }
      out += c;
      continue;
    }
    if (fold_groups > 0 && is_ascii_letter(c)) {
      const char lower = static_cast<char>(c | 0x20);
      const char upper = static_cast<char>(lower - 'a' + 'A');
      out += '[';
      out += lower;
      out += upper;
      out += ']';
      continue;
    }
    out += c;
  }
  return out;
}

Regex::Regex(const std::string &pattern, const std::string &where) {
  const std::string translated = translate_oniguruma(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code *code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail(NWC_E_INVALID_ARG, where + " \"" + pattern + "\" is not a supported regular expression (" +
                                reinterpret_cast<const char *>(message) + " at offset " +
                                std::to_string(offset) + " of \"" + translated + "\")");
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is missing
  code_ = code;
}

Regex::~Regex() {
  pcre2_code_free(static_cast<pcre2_code *>(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  auto *code = static_cast<pcre2_code *>(code_);
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
  if (!md) fail(NWC_E_NOMEM, "PCRE2: cannot allocate match data");
  const auto *subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t start = 0;
  while (start <= s.size()) {
    const int rc = pcre2_match(code, subject, s.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail(NWC_E_INTERNAL,
           std::string("PCRE2 match failed: ") + reinterpret_cast<const char *>(message));
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      start = e;
    } else {
      if (b >= s.size()) break;
      start = b + utf8_lead_len(static_cast<uint8_t>(s[b]));
    }
  }
  pcre2_match_data_free(md);
  return out;
}

} // namespace nwc::runtime::detail
