// Private helper: the score-greedy BPE merge loop shared by the llama2.c and SentencePiece
// tokenizers.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <string_view>
#include <vector>

namespace nwc::runtime::detail {

// "<0xHH>" -> the byte; -1 for any other piece.
inline int byte_piece_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return -1;
    value = value * 16 + d;
  }
  return value;
}

// What merging two adjacent symbols would give: its score and an opaque value handed back to
// `apply` (e.g. the merged token id).
struct BpeMergeCandidate {
  float score;
  int32_t value;
};

// Merges n symbols (slots 0..n-1, in sequence order): repeatedly merges the adjacent pair with the
// highest score, leftmost on ties, until no adjacent pair can merge. O(n log n).
//   lookup(l, r) -> std::optional<BpeMergeCandidate>: whether the symbols in slots l and r (in
//     their current state) can merge; called once per adjacent pair whenever it forms.
//   apply(l, r, value): merge slot r into slot l (the left slot survives).
// Returns the surviving slots in sequence order.
//
// Symbols form a doubly linked list over their original slots; a merged symbol keeps the slot of
// its left part, so slot order is sequence order and "leftmost" is the smallest slot. Candidates
// sit in a max-heap and are checked against the symbols' versions when popped (a merge bumps both
// sides' versions, invalidating every older pair that touches them).
template <typename Lookup, typename Apply>
std::vector<int32_t> bpe_merge(int32_t n, Lookup &&lookup, Apply &&apply) {
  std::vector<int32_t> order;
  if (n <= 0) return order;
  struct Sym {
    int32_t prev, next;
    uint32_t version;
  };
  struct Cand {
    float score;
    int32_t left, right, value;
    uint32_t left_version, right_version;
  };
  // priority_queue pops the "largest": higher score first, then the smaller left slot.
  const auto lower = [](const Cand &a, const Cand &b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::vector<Sym> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) sym[static_cast<size_t>(i)] = {i - 1, i + 1 < n ? i + 1 : -1, 0};
  std::vector<Cand> storage;
  storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Cand, std::vector<Cand>, decltype(lower)> heap(lower, std::move(storage));
  const auto propose = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const std::optional<BpeMergeCandidate> c = lookup(l, r);
    if (!c) return;
    heap.push({c->score, l, r, c->value, sym[static_cast<size_t>(l)].version,
               sym[static_cast<size_t>(r)].version});
  };
  for (int32_t i = 0; i + 1 < n; ++i) propose(i, i + 1);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym &l = sym[static_cast<size_t>(c.left)];
    Sym &r = sym[static_cast<size_t>(c.right)];
    if (l.version != c.left_version || r.version != c.right_version || l.next != c.right)
      continue; // stale
    apply(c.left, c.right, c.value);
    ++l.version;
    ++r.version;
    r.prev = -2; // dead
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = c.left;
    propose(l.prev, c.left);
    propose(c.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) order.push_back(i);
  return order;
}

} // namespace nwc::runtime::detail
