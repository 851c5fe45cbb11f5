// The reference llama2.c encoder, written to follow run.c's encode() step by step (sorted vocab +
// binary search, quadratic merge loop). Tests compare nwc's O(n log n) encoder with it and the
// tokenizer benchmark times both. Deliberately simple and slow; trusts its input file.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nwc::test {

class NaiveBpe {
public:
  // Reads a well-formed tokenizer.bin to its end.
  explicit NaiveBpe(const std::filesystem::path &path) {
    std::ifstream f(path, std::ios::binary);
    int32_t max_len = 0;
    if (!f.read(reinterpret_cast<char *>(&max_len), 4))
      throw std::runtime_error(path.string() + ": cannot read tokenizer header");
    for (;;) {
      float score;
      int32_t len;
      if (!f.read(reinterpret_cast<char *>(&score), 4)) break;
      if (!f.read(reinterpret_cast<char *>(&len), 4) || len < 0)
        throw std::runtime_error(path.string() + ": bad tokenizer record");
      std::string s(static_cast<size_t>(len), '\0');
      if (!f.read(s.data(), len)) throw std::runtime_error(path.string() + ": truncated");
      pieces_.push_back(std::move(s));
      scores_.push_back(score);
    }
    for (size_t i = 0; i < pieces_.size(); ++i)
      sorted_.emplace_back(pieces_[i], static_cast<int32_t>(i));
    // Sorting by (string, id) makes lower_bound find the lowest id among duplicate strings.
    std::sort(sorted_.begin(), sorted_.end());
  }

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }

  std::vector<int32_t> encode(std::string_view text, bool bos, bool eos) const {
    std::vector<int32_t> tokens;
    if (bos) tokens.push_back(1);
    if (!text.empty()) {
      const int32_t dummy = lookup(" ");
      tokens.push_back(dummy >= 0 ? dummy : byte_token(' '));
    }
    // run.c's UTF-8 walk: accumulate a byte and the continuation bytes after it (at most 4).
    std::string buffer;
    for (size_t c = 0; c < text.size(); ++c) {
      if ((static_cast<uint8_t>(text[c]) & 0xC0) != 0x80) buffer.clear();
      buffer += text[c];
      if (c + 1 < text.size() && (static_cast<uint8_t>(text[c + 1]) & 0xC0) == 0x80 &&
          buffer.size() < 4)
        continue;
      const int32_t id = lookup(buffer);
      if (id != -1) {
        tokens.push_back(id);
      } else {
        for (char b : buffer) tokens.push_back(byte_token(static_cast<uint8_t>(b)));
      }
      buffer.clear();
    }
    // run.c's merge loop: each pass scans every adjacent pair and merges the best one.
    // As in run.c, BOS is part of the scanned sequence (a pair with it practically never merges).
    std::string pair;
    for (;;) {
      float best_score = -1e10f;
      int32_t best_id = -1;
      size_t best_idx = 0;
      bool found = false;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        pair = pieces_[static_cast<size_t>(tokens[i])];
        pair += pieces_[static_cast<size_t>(tokens[i + 1])];
        const int32_t id = lookup(pair);
        if (id != -1 && scores_[static_cast<size_t>(id)] > best_score) {
          best_score = scores_[static_cast<size_t>(id)];
          best_id = id;
          best_idx = i;
          found = true;
        }
      }
      if (!found) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
    }
    if (eos) tokens.push_back(2);
    return tokens;
  }

private:
  int32_t lookup(std::string_view s) const {
    const auto it =
        std::lower_bound(sorted_.begin(), sorted_.end(), s,
                         [](const std::pair<std::string, int32_t> &e, std::string_view key) {
                           return std::string_view(e.first) < key;
                         });
    return it != sorted_.end() && it->first == s ? it->second : -1;
  }
  int32_t byte_token(uint8_t b) const {
    const int32_t id = 3 + b;
    return id < vocab_size() ? id : 0;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<std::pair<std::string, int32_t>> sorted_;
};

} // namespace nwc::test
