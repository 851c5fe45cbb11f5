// Private helpers for Unigram models (SentencePiece .model and tokenizer.json): a byte trie over
// the pieces and the Viterbi search for the best segmentation.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "unicode_text.hpp"

namespace nwc::runtime::detail {

// Byte trie for common-prefix search over piece strings.
class PieceTrie {
public:
  PieceTrie() : values_(1, -1) {}

  void insert(std::string_view key, int32_t value) {
    int32_t node = 0;
    for (char c : key) {
      const uint64_t k = edge(node, c);
      auto it = children_.find(k);
      if (it == children_.end()) {
        const auto child = static_cast<int32_t>(values_.size());
        values_.push_back(-1);
        it = children_.emplace(k, child).first;
      }
      node = it->second;
    }
    if (values_[static_cast<size_t>(node)] < 0) values_[static_cast<size_t>(node)] = value;
  }

  // f(length, value) for every key that is a prefix of s, shortest first.
  template <typename F> void prefixes(std::string_view s, F &&f) const {
    int32_t node = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const auto it = children_.find(edge(node, s[i]));
      if (it == children_.end()) return;
      node = it->second;
      const int32_t v = values_[static_cast<size_t>(node)];
      if (v >= 0) f(i + 1, v);
    }
  }

private:
  static uint64_t edge(int32_t node, char c) {
    return static_cast<uint64_t>(static_cast<uint32_t>(node)) << 8 | static_cast<uint8_t>(c);
  }
  std::vector<int32_t> values_; // node -> value, -1 for none
  std::unordered_map<uint64_t, int32_t> children_;
};

struct UnigramSpan {
  size_t begin, end;
  int32_t id; // -1: unknown
};

// The best segmentation of well-formed UTF-8 s into pieces, as SentencePiece's optimized Viterbi
// (and the Hugging Face lattice) computes it: best_path_ends_at[e] is updated from every piece
// starting at each character boundary, in increasing start order, only on a strictly better total
// score, so ties keep the path whose last piece starts earliest. Where no piece of exactly one
// character starts at a position, an unknown one-character node of score unk_score is added.
// score(id, length) gives a piece's score, or nullopt to ignore the piece. Acc is the type the
// path scores are stored in (float in SentencePiece, double in the Hugging Face implementations).
template <typename Acc, typename Score>
std::vector<UnigramSpan> unigram_viterbi(std::string_view s, const PieceTrie &trie, Score &&score,
                                         double unk_score) {
  struct Best {
    int32_t id = -1;
    Acc score = 0;
    int64_t start = -1;
  };
  const size_t n = s.size();
  std::vector<Best> best(n + 1);
  size_t pos = 0;
  while (pos < n) {
    const Acc here = best[pos].score;
    const size_t mblen = std::min(utf8_lead_len(static_cast<uint8_t>(s[pos])), n - pos);
    bool single = false;
    trie.prefixes(s.substr(pos), [&](size_t len, int32_t id) {
      const std::optional<double> sc = score(id, len);
      if (!sc) return;
      Best &t = best[pos + len];
      const double cand = *sc + static_cast<double>(here);
      if (t.start < 0 || cand > static_cast<double>(t.score)) {
        t.score = static_cast<Acc>(cand);
        t.start = static_cast<int64_t>(pos);
        t.id = id;
      }
      if (len == mblen) single = true;
    });
    if (!single) {
      Best &t = best[pos + mblen];
      // In Acc arithmetic, as SentencePiece adds its float unk score to the float path score.
      const Acc cand = static_cast<Acc>(unk_score) + here;
      if (t.start < 0 || cand > t.score) {
        t.score = cand;
        t.start = static_cast<int64_t>(pos);
        t.id = -1;
      }
    }
    pos += mblen;
  }
  std::vector<UnigramSpan> out;
  for (size_t end = n; end > 0;) {
    const Best &b = best[end];
    const auto begin = static_cast<size_t>(b.start);
    out.push_back({begin, end, b.id});
    end = begin;
  }
  return {out.rbegin(), out.rend()};
}

} // namespace nwc::runtime::detail
