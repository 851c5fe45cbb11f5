// Private helper: SentencePiece's precompiled character map (NormalizerSpec.precompiled_charsmap,
// also the "Precompiled" normalizer of tokenizer.json), applied as SentencePiece's normalizer does.
//
// The blob is <uint32 LE trie size in bytes><Darts-clone double-array trie><normalized strings>.
// The trie maps byte strings of the input to offsets of NUL-terminated replacement strings. At each
// position of the input the longest key that is a prefix of the rest (among the first 32 matches,
// SentencePiece's result limit) is replaced by its string; where no key matches, one well-formed
// UTF-8 character is copied, or one malformed byte becomes U+FFFD.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nwc::runtime::detail {

class PrecompiledCharsmap {
public:
  PrecompiledCharsmap() = default;
  // Parses and validates the blob; errors (NWC_E_CORRUPT_STREAM) start with `name`.
  PrecompiledCharsmap(const std::string &name, std::string_view blob);

  bool empty() const { return units_.empty(); }

  // The longest rule at the start of s: (replacement, bytes consumed), or consumed == 0 if none.
  std::pair<std::string_view, size_t> match(std::string_view s) const;

  // One normalization unit at the start of non-empty s: a rule's replacement, else one well-formed
  // character as is, else U+FFFD for one malformed byte. Returns (text, bytes consumed).
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view s) const;

  // The whole string, unit by unit (the "Precompiled" normalizer of tokenizer.json).
  std::string normalize(std::string_view s) const;

private:
  std::vector<uint32_t> units_;
  std::string strings_; // the normalized strings, each NUL-terminated
};

} // namespace nwc::runtime::detail
