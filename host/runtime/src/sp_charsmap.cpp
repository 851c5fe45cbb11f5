#include "sp_charsmap.hpp"

#include "nwc/cpp/error.hpp"
#include "unicode_text.hpp"

#include <cstring>

namespace nwc::runtime::detail {

namespace {
// Darts-clone unit fields.
bool has_leaf(uint32_t u) {
  return ((u >> 8) & 1) == 1;
}
uint32_t value_of(uint32_t u) {
  return u & ((1u << 31) - 1);
}
uint32_t label_of(uint32_t u) {
  return u & ((1u << 31) | 0xFF);
}
uint32_t offset_of(uint32_t u) {
  return (u >> 10) << ((u & (1u << 9)) >> 6);
}
constexpr size_t kMaxResults = 32; // SentencePiece's kMaxTrieResultsSize
} // namespace

PrecompiledCharsmap::PrecompiledCharsmap(const std::string &name, std::string_view blob) {
  const auto corrupt = [&](const std::string &what) {
    fail(NWC_E_CORRUPT_STREAM, name + ": precompiled_charsmap " + what);
  };
  if (blob.empty()) return;
  if (blob.size() <= 4) corrupt("of " + std::to_string(blob.size()) + " bytes is too short");
  uint32_t trie_size = 0;
  for (int i = 3; i >= 0; --i)
    trie_size = trie_size << 8 | static_cast<uint8_t>(blob[static_cast<size_t>(i)]);
  if (trie_size > blob.size() - 4)
    corrupt("trie size " + std::to_string(trie_size) + " exceeds the blob (" +
            std::to_string(blob.size()) + " bytes)");
  if (trie_size % 4 != 0 || trie_size == 0)
    corrupt("trie size " + std::to_string(trie_size) + " is not a positive multiple of 4");
  units_.resize(trie_size / 4);
  std::memcpy(units_.data(), blob.data() + 4, trie_size); // little-endian hosts only
  strings_.assign(blob.substr(4 + trie_size));
  // A final NUL keeps every offset's string terminated inside the buffer.
  strings_.push_back('\0');
}

std::pair<std::string_view, size_t> PrecompiledCharsmap::match(std::string_view s) const {
  if (units_.empty()) return {{}, 0};
  const size_t n_units = units_.size();
  size_t node = 0;
  uint32_t unit = units_[0];
  node ^= offset_of(unit);
  size_t results = 0, best_len = 0;
  uint32_t best_value = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    node ^= c;
    if (node >= n_units) break;
    unit = units_[node];
    if (label_of(unit) != c) break;
    node ^= offset_of(unit);
    if (node >= n_units) break;
    if (has_leaf(unit)) {
      if (results < kMaxResults) {
        best_len = i + 1; // matches come in increasing length
        best_value = value_of(units_[node]);
      }
      ++results;
    }
  }
  if (best_len == 0 || best_value >= strings_.size()) return {{}, 0};
  return {std::string_view(strings_.data() + best_value), best_len};
}

std::pair<std::string_view, size_t>
PrecompiledCharsmap::normalize_prefix(std::string_view s) const {
  if (const auto m = match(s); m.second > 0) return m;
  if (const size_t n = utf8_valid_len(s); n > 0) return {s.substr(0, n), n};
  return {kReplacementChar, 1};
}

std::string PrecompiledCharsmap::normalize(std::string_view s) const {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const auto [text, used] = normalize_prefix(s);
    out.append(text);
    s.remove_prefix(used);
  }
  return out;
}

} // namespace nwc::runtime::detail
