// Private helper: the regular expressions of tokenizer.json files (written for Oniguruma, which the
// Rust `tokenizers` uses) run with PCRE2 (UTF and Unicode-property mode, JIT-compiled).
//
// The pattern is translated where the two engines differ on the patterns tokenizer.json files use:
//   \s, \S      -> \p{White_Space}, \P{White_Space} (Oniguruma's Unicode whitespace; PCRE2's \s
//                  is the Z category plus ASCII controls)
//   \w, \W, \d  -> Unicode word characters (Alphabetic, M, Nd, Pc, joiners) and Nd
//   (?i:...)    -> ASCII letters outside classes become [xX]: ASCII case folding, as Oniguruma's
//                  and the JavaScript reference's (?i) does for these patterns, where PCRE2 would
//                  also let 's' match U+017F and 'k' match U+212A
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nwc::runtime::detail {

class Regex {
public:
  // Errors name `where` (e.g. "tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex").
  Regex(const std::string &pattern, const std::string &where);
  ~Regex();
  Regex(const Regex &) = delete;
  Regex &operator=(const Regex &) = delete;

  // [begin, end) byte ranges of the successive non-overlapping non-empty matches in well-formed
  // UTF-8 s (after an empty match the search resumes one character later).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

private:
  void *code_ = nullptr; // pcre2_code_8
};

// The Oniguruma-to-PCRE2 translation described above (exposed for tests).
std::string translate_oniguruma(std::string_view pattern);

} // namespace nwc::runtime::detail
