// Private helpers for the tokenizers: UTF-8 decoding and repair, and the Unicode operations of the
// Hugging Face normalizers through ICU (normalization forms, lower-casing, character properties).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nwc::runtime::detail {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD"; // U+FFFD

// Length of the well-formed UTF-8 sequence at the start of s (no overlong forms, no surrogates, at
// most U+10FFFF), 0 if it is malformed or s is empty.
size_t utf8_valid_len(std::string_view s);

// The WHATWG "UTF-8 decode" with replacement (what TextDecoder("utf-8") does, and so what a
// JavaScript tokenizer sees): every maximal subpart of an ill-formed sequence becomes one U+FFFD.
// Returns s unchanged when it is well-formed.
std::string utf8_repair(std::string_view s);
bool utf8_is_valid(std::string_view s);

// Decodes the code point at s[i] of well-formed UTF-8; advances i.
char32_t utf8_next(std::string_view s, size_t &i);
void utf8_append(std::string &out, char32_t c);
// Byte length of the UTF-8 sequence led by byte b (1 for continuation or invalid lead bytes).
inline size_t utf8_lead_len(uint8_t b) {
  return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Unicode normalization of well-formed UTF-8 (ICU).
std::string unicode_normalize(std::string_view s, NormalForm form);
// Full Unicode lower-casing, root locale (final sigma handled in context), as JavaScript's
// String.prototype.toLowerCase and Rust's str::to_lowercase.
std::string unicode_lowercase(std::string_view s);

// Character properties (ICU).
bool is_white_space(char32_t c); // the White_Space property (Rust's char::is_whitespace)
bool is_mark(char32_t c);        // General_Category M (Mn, Mc, Me)
bool is_nonspacing_mark(char32_t c);
bool is_punctuation(char32_t c);     // General_Category P
bool is_other(char32_t c);           // General_Category C (Cc, Cf, Cs, Co, Cn)
bool is_separator_space(char32_t c); // General_Category Zs
bool is_alphanumeric(char32_t c);    // Alphabetic or Numeric (N*), Rust's char::is_alphanumeric

} // namespace nwc::runtime::detail
