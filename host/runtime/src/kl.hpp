// KL divergence between next-token distributions given as logits, shared by the evaluation
// (KL to the original model) and [allocate] (the KL each tensor causes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace nwc::runtime {

// Rows of `vocab` logits -> log-probabilities, in place (the max subtracted, the sum in double).
inline void log_softmax_rows(std::vector<float> &x, int64_t vocab) {
  const size_t v = static_cast<size_t>(vocab);
  for (size_t r = 0; r + v <= x.size(); r += v) {
    float *row = x.data() + r;
    const float top = *std::max_element(row, row + vocab);
    double sum = 0;
    for (size_t k = 0; k < v; ++k) sum += std::exp(static_cast<double>(row[k]) - top);
    const float log_z = top + static_cast<float>(std::log(sum));
    for (size_t k = 0; k < v; ++k) row[k] -= log_z;
  }
}

// Adds KL(p || q) = Σ p (log p − log q) of each of `positions` rows to `total`, one row's sum at
// a time (callers that accumulate over passes get the same sum whatever the pass size), from
// log-probabilities, nats.
inline void add_kl(double &total, const float *log_p, const float *log_q, int64_t positions,
                   int64_t vocab) {
  for (int64_t r = 0; r < positions; ++r) {
    const float *a = log_p + r * vocab, *b = log_q + r * vocab;
    double kl = 0;
    for (int64_t v = 0; v < vocab; ++v)
      kl += std::exp(static_cast<double>(a[v])) * (static_cast<double>(a[v]) - b[v]);
    total += kl;
  }
}

} // namespace nwc::runtime
