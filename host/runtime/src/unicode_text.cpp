#include "unicode_text.hpp"

#include "nwc/cpp/error.hpp"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

namespace nwc::runtime::detail {

size_t utf8_valid_len(std::string_view s) {
  if (s.empty()) return 0;
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = b(0);
  if (b0 < 0x80) return 1;
  size_t need;
  uint8_t lower = 0x80, upper = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lower = 0xA0;
    if (b0 == 0xED) upper = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lower = 0x90;
    if (b0 == 0xF4) upper = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < need + 1) return 0;
  for (size_t k = 1; k <= need; ++k) {
    if (b(k) < lower || b(k) > upper) return 0;
    lower = 0x80;
    upper = 0xBF;
  }
  return need + 1;
}

bool utf8_is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_valid_len(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_repair(std::string_view s) {
  if (utf8_is_valid(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) {
      out += static_cast<char>(b0);
      ++i;
      continue;
    }
    size_t need;
    uint8_t lower = 0x80, upper = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2;
      if (b0 == 0xE0) lower = 0xA0;
      if (b0 == 0xED) upper = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3;
      if (b0 == 0xF0) lower = 0x90;
      if (b0 == 0xF4) upper = 0x8F;
    } else {
      out += kReplacementChar; // a byte that never starts a sequence
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (size_t k = 0; k < need; ++k, ++j) {
      if (j >= n) { // truncated at the end: one U+FFFD for the whole subpart
        ok = false;
        break;
      }
      const auto c = static_cast<uint8_t>(s[j]);
      if (c < lower || c > upper) { // the subpart ends before c, which is decoded anew
        ok = false;
        break;
      }
      lower = 0x80;
      upper = 0xBF;
    }
    if (ok) {
      out.append(s.substr(i, j - i));
    } else {
      out += kReplacementChar;
    }
    i = j;
  }
  return out;
}

char32_t utf8_next(std::string_view s, size_t &i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t n = std::min(utf8_lead_len(b0), s.size() - i);
  char32_t c = b0 & (0x7Fu >> n);
  for (size_t k = 1; k < n; ++k) c = c << 6 | (static_cast<uint8_t>(s[i + k]) & 0x3Fu);
  i += n;
  return c;
}

void utf8_append(std::string &out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

namespace {

void check_icu(UErrorCode status, const char *what) {
  if (U_FAILURE(status))
    fail(NWC_E_INTERNAL, std::string("ICU ") + what + " failed: " + u_errorName(status));
}

const icu::Normalizer2 *normalizer(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2 *n = nullptr;
  switch (form) {
  case NormalForm::kNfc:
    n = icu::Normalizer2::getNFCInstance(status);
    break;
  case NormalForm::kNfd:
    n = icu::Normalizer2::getNFDInstance(status);
    break;
  case NormalForm::kNfkc:
    n = icu::Normalizer2::getNFKCInstance(status);
    break;
  case NormalForm::kNfkd:
    n = icu::Normalizer2::getNFKDInstance(status);
    break;
  }
  check_icu(status, "normalizer");
  return n;
}

} // namespace

std::string unicode_normalize(std::string_view s, NormalForm form) {
  const icu::Normalizer2 *n = normalizer(form);
  const icu::StringPiece in(s.data(), static_cast<int32_t>(s.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (n->isNormalizedUTF8(in, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, in, sink, nullptr, status);
  check_icu(status, "normalization");
  return out;
}

std::string unicode_lowercase(std::string_view s) {
  bool ascii = true;
  for (char c : s) {
    if (static_cast<uint8_t>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  std::string out;
  if (ascii) {
    out.assign(s);
    for (char &c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
  }
  out.reserve(s.size());
  icu::StringByteSink<std::string> sink(&out);
  UErrorCode status = U_ZERO_ERROR;
  icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink,
                            nullptr, status);
  check_icu(status, "lower-casing");
  return out;
}

bool is_white_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

namespace {
int32_t category_mask(char32_t c) {
  return U_GET_GC_MASK(static_cast<UChar32>(c));
}
} // namespace

bool is_mark(char32_t c) {
  return (category_mask(c) & U_GC_M_MASK) != 0;
}
bool is_nonspacing_mark(char32_t c) {
  return (category_mask(c) & U_GC_MN_MASK) != 0;
}
bool is_punctuation(char32_t c) {
  return (category_mask(c) & U_GC_P_MASK) != 0;
}
bool is_other(char32_t c) {
  return (category_mask(c) & U_GC_C_MASK) != 0;
}
bool is_separator_space(char32_t c) {
  return (category_mask(c) & U_GC_ZS_MASK) != 0;
}
bool is_alphanumeric(char32_t c) {
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) ||
         (category_mask(c) & U_GC_N_MASK) != 0;
}

} // namespace nwc::runtime::detail
