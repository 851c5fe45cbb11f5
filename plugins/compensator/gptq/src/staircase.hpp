// What the block codec makes of single values under a fixed grid, learned from GPTQ's trials so
// that most columns need no trial of their own. Internal to nwc.comp.gptq.
//
// Under a group's fixed grid the codec is elementwise (the plugin checks that when it commits), so
// for one row of one group it is a function Q of one float. Every trial (NWC_BLOCK_DRY_RUN of the
// whole group) shows Q at every value of the group's rows: the column being coded and, in the
// other columns, probes chosen to pin down where Q steps. If Q is non-decreasing, Q(a) == Q(b)
// implies Q(x) == Q(a) for a ≤ x ≤ b, so the observations form runs [lo, hi] of values known to
// code to the same level, and a value inside a run needs no trial. A value outside every run (in
// a step not yet pinned down, or beyond the values seen) is tried as before. An observation that
// contradicts the runs (Q not non-decreasing) marks the staircase broken; the plugin then codes
// the tensor again with a trial for every column. Either way every predicted value is checked
// against the codec before anything is committed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace nwc::gptq {

// Floats in increasing order as unsigned keys (-0 just below +0); finite floats only.
inline uint32_t order_key(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline float from_key(uint32_t k) {
  const uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// The runs of one row of one group: every value whose key is in [lo, hi] codes to q. Sorted,
// disjoint, with strictly increasing q (in the order of order_key: -0 below +0).
struct Run {
  uint32_t lo, hi;
  float q;
};

class Staircase {
public:
  // The level of x, when the runs determine it.
  bool predict(float x, float &q) const {
    if (!std::isfinite(x)) return false;
    const uint32_t k = order_key(x);
    auto it = after(k);
    if (it == runs_.begin()) return false;
    --it;
    if (k > it->hi) return false;
    q = it->q;
    return true;
  }

  // Records that x codes to q. False when that contradicts a non-decreasing Q.
  bool observe(float x, float q) {
    if (!std::isfinite(x)) return true; // never predicted
    if (!std::isfinite(q)) return false;
    const uint32_t k = order_key(x);
    auto it = after(k); // first run starting after k
    Run *left = it == runs_.begin() ? nullptr : &*(it - 1);
    Run *right = it == runs_.end() ? nullptr : &*it;
    if (left && k <= left->hi) return same_bits(left->q, q);
    if (left && same_bits(left->q, q)) {
      left->hi = k;
      return true;
    }
    if (right && same_bits(right->q, q)) {
      right->lo = k;
      return true;
    }
    const uint32_t kq = order_key(q); // levels strictly increase, -0 below +0
    if ((left && !(order_key(left->q) < kq)) || (right && !(kq < order_key(right->q))))
      return false;
    runs_.insert(it, Run{k, k, q});
    return true;
  }

  size_t size() const { return runs_.size(); }

  // m probe values, all within [lo, hi] (the row's reference range) or [glo, ghi] (the values the
  // codec has coded so far for this tensor), so that it sees nothing beyond what it sees anyway
  // (its range limits, such as fp16's, are about values, not rows): without runs, glo and ghi,
  // then evenly over [lo, hi]; otherwise inside the steps not yet pinned down (half next to the
  // midpoint of the two levels, where a rounding quantizer steps, half evenly), then glo and ghi
  // when they are beyond the runs (where a clamping quantizer stays on its end levels).
  void probes(float lo, float hi, float glo, float ghi, float *out, int64_t m) const {
    if (m <= 0) return;
    int64_t n = 0;
    auto put = [&](float v) {
      if (n < m) out[n++] = v;
    };
    const bool glo_out = std::isfinite(glo) && glo < lo, ghi_out = std::isfinite(ghi) && ghi > hi;
    if (runs_.empty()) {
      if (m >= 4 && glo_out) put(glo);
      if (m >= 4 && ghi_out) put(ghi);
      const int64_t rest = m - n;
      for (int64_t i = 0; i < rest; ++i)
        put(rest == 1
                ? lo
                : static_cast<float>(static_cast<double>(lo) +
                                     (static_cast<double>(hi) - static_cast<double>(lo)) *
                                         static_cast<double>(i) / static_cast<double>(rest - 1)));
    } else {
      const float below = glo_out ? glo : lo, above = ghi_out ? ghi : hi;
      const bool down = std::isfinite(below) && order_key(below) < runs_.front().lo,
                 up = std::isfinite(above) && order_key(above) > runs_.back().hi;
      const int64_t budget = std::max<int64_t>(0, m - down - up); // for the steps
      auto put_step = [&](float v) {
        if (n < budget) out[n++] = v;
      };
      int64_t steps = 0;
      for (size_t i = 0; i + 1 < runs_.size(); ++i) steps += runs_[i + 1].lo - runs_[i].hi > 1;
      const int64_t per = steps > 0 ? std::max<int64_t>(1, budget / steps) : 0;
      for (size_t i = 0; i + 1 < runs_.size() && n < budget; ++i) {
        const uint32_t a = runs_[i].hi, b = runs_[i + 1].lo; // keys strictly between are open
        if (b - a <= 1) continue;
        const int64_t open = static_cast<int64_t>(b - a - 1);
        if (open <= per) {
          for (uint32_t k = a + 1; k < b; ++k) put_step(from_key(k));
          continue;
        }
        const double mid =
            (static_cast<double>(runs_[i].q) + static_cast<double>(runs_[i + 1].q)) / 2;
        const uint32_t t = std::clamp(order_key(static_cast<float>(mid)), a + 1, b - 1);
        const int64_t by_mid = (per + 1) / 2;
        for (int64_t j = 0; j < by_mid; ++j) { // t, t + 1, t - 1, t + 2, ...
          const int64_t off = (j % 2 == 0) ? j / 2 : -(j + 1) / 2;
          const int64_t key = static_cast<int64_t>(t) + off;
          if (key > static_cast<int64_t>(a) && key < static_cast<int64_t>(b))
            put_step(from_key(static_cast<uint32_t>(key)));
        }
        const int64_t even = per - by_mid;
        for (int64_t j = 1; j <= even; ++j)
          put_step(from_key(a + static_cast<uint32_t>(open * j / (even + 1))));
      }
      if (down) put(below);
      if (up) put(above);
    }
    while (n < m) out[n++] = lo; // slots left over: a value of the row
  }

private:
  std::vector<Run>::const_iterator after(uint32_t k) const {
    return std::upper_bound(runs_.begin(), runs_.end(), k,
                            [](uint32_t key, const Run &r) { return key < r.lo; });
  }
  std::vector<Run>::iterator after(uint32_t k) {
    return std::upper_bound(runs_.begin(), runs_.end(), k,
                            [](uint32_t key, const Run &r) { return key < r.lo; });
  }

  std::vector<Run> runs_;
};

} // namespace nwc::gptq
