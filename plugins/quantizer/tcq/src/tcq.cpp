// nwc.quant.tcq — trellis-coded quantization of latents: the dependent quantization of H.266/VVC,
// a trellis over two scalar quantizers (4 states by default; 8 to 64 on request), searched by the
// Viterbi algorithm with a rate term.
//
// Reconstruction values are multiples of `step`. Q0 holds the even multiples, Q1 the odd ones and
// zero; symbol k means the multiple 2k in Q0 and 2k − sgn(k) in Q1. The quantizer of each element
// is set by the trellis state, and the state moves on by the parity of the element's symbol, so
// the decoder follows the encoder's path from the symbols alone. Each quantizer alone is a grid of
// spacing 2·step, so the symbols cost about what rounding at 2·step costs, while the union of the
// paths packs the reconstructions like a lattice: about 0.8 dB less squared error than rounding at
// the same entropy with 4 states, 1.1 dB with 64 (the granular gain that scalar quantization cannot
// have; the bound is 1.53 dB).
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace {

constexpr double kMaxSymbol = 536870912.0; // 2^29: 2k stays inside int32
constexpr int kMaxStates = 64;
// The 4-state trellis of H.266 (§8.7.3): kVvcNext[state][k & 1]; states 0 and 1 use Q0, states 2
// and 3 use Q1.
constexpr uint8_t kVvcNext[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}};
// Larger trellises are shift registers of log2(states) bits: the next state is the state shifted
// left by one with (parity of k) XOR parity(state & feedback) shifted in, and the state's quantizer
// is parity(state & selector). The masks are the best of every (selector, feedback) pair by squared
// error on a unit Gaussian source at ~3.9 bits per symbol (an exhaustive search, long paths); each
// size gains over the one below at 3-4.7 bits per symbol: 8 states 0.11-0.15 dB over H.266's 4,
// 16 a further 0.08-0.10, 32 0.06-0.09, 64 0.05.
struct ShiftRegisterMasks {
  int states, selector, feedback;
};
constexpr ShiftRegisterMasks kShiftRegisters[] = {{8, 1, 6}, {16, 5, 9}, {32, 5, 24}, {64, 26, 43}};

// A trellis: each state's quantizer (0: Q0, 1: Q1) and its successor for each symbol parity.
struct Trellis {
  int states = 4;
  uint8_t quantizer[kMaxStates] = {};
  uint8_t next[kMaxStates][2] = {};

  explicit Trellis(int n) : states(n) {
    if (n == 4) {
      for (int s = 0; s < 4; ++s) {
        quantizer[s] = static_cast<uint8_t>(s >> 1);
        next[s][0] = kVvcNext[s][0];
        next[s][1] = kVvcNext[s][1];
      }
      return;
    }
    for (const auto &r : kShiftRegisters) {
      if (r.states != n) continue;
      for (int s = 0; s < n; ++s) {
        quantizer[s] =
            static_cast<uint8_t>(__builtin_parity(static_cast<unsigned>(s & r.selector)));
        const int fed = __builtin_parity(static_cast<unsigned>(s & r.feedback));
        for (int p = 0; p < 2; ++p)
          next[s][p] = static_cast<uint8_t>(((s << 1) | (p ^ fed)) & (n - 1));
      }
      return;
    }
  }
};

constexpr int kSmoothing = 8; // pseudo-counts of the pooled histogram added to each channel's
const char *const kTrellisChoices[] = {"column", "block"};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// The multiple of step that symbol k stands for in quantizer q (0: Q0, 1: Q1).
inline int64_t multiple(int32_t k, int q) {
  return q == 0 ? 2 * int64_t{k} : 2 * int64_t{k} - (k > 0) + (k < 0);
}

// Bits per symbol for the trellis' rate term: the block's own symbol histogram per latent channel
// (channel = element index mod m, as the rANS coder's model mode picks tables), smoothed towards
// the block's pooled histogram, which is what either rANS mode will charge, up to table costs.
class RateModel {
public:
  RateModel(const std::vector<int32_t> &k, int64_t m) : m_(m) {
    lo_ = *std::min_element(k.begin(), k.end());
    const int32_t hi = *std::max_element(k.begin(), k.end());
    span_ = static_cast<int64_t>(hi) - lo_ + 1;
    std::vector<double> pooled(static_cast<size_t>(span_), 0.5);
    std::vector<double> count(static_cast<size_t>(span_ * m), 0.0), total(static_cast<size_t>(m));
    for (size_t i = 0; i < k.size(); ++i) {
      const int64_t j = k[i] - lo_, c = static_cast<int64_t>(i) % m;
      pooled[static_cast<size_t>(j)] += 1.0;
      count[static_cast<size_t>(c * span_ + j)] += 1.0;
      total[static_cast<size_t>(c)] += 1.0;
    }
    const double pooled_total = static_cast<double>(k.size()) + 0.5 * static_cast<double>(span_);
    outside_ = -std::log2(0.5 / pooled_total);
    bits_.resize(count.size());
    for (int64_t c = 0; c < m; ++c)
      for (int64_t j = 0; j < span_; ++j) {
        const double p = (count[static_cast<size_t>(c * span_ + j)] +
                          kSmoothing * pooled[static_cast<size_t>(j)] / pooled_total) /
                         (total[static_cast<size_t>(c)] + kSmoothing);
        bits_[static_cast<size_t>(c * span_ + j)] = -std::log2(p);
      }
  }
  // Bits of symbol k at element i of the block (channel i mod m).
  double bits(int64_t i, int32_t k) const {
    const int64_t j = static_cast<int64_t>(k) - lo_;
    if (j < 0 || j >= span_) {
      const double d = static_cast<double>(j < 0 ? -j : j - span_ + 1);
      return outside_ + 2.0 * std::log2(1.0 + d);
    }
    return bits_[static_cast<size_t>((i % m_) * span_ + j)];
  }

private:
  int64_t m_, span_ = 0;
  int32_t lo_ = 0;
  double outside_ = 0.0;
  std::vector<double> bits_;
};

class TcqQuantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.tcq";
  static constexpr const char *version = "1.1.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "tcq";
  static constexpr const char *description =
      "Trellis-coded quantization (the dependent quantization of H.266/VVC): two scalar "
      "quantizers on multiples of `step` (Q0: even multiples; Q1: odd multiples and zero) chosen "
      "element by element by a trellis (`states`) that moves on by the parity of each symbol, so "
      "the "
      "decoder follows it from the symbols alone. The encoder picks the whole block's path with "
      "the Viterbi algorithm, minimizing squared error (weighted by the importance weights when "
      "the host passes them) plus `lambda` times the bits of each symbol under the block's own "
      "per-channel symbol histogram. The trellis runs through the latents in row-major order from "
      "state 0, restarting every `path_columns` columns' latents (`trellis`). About 0.8 dB (4 "
      "states) to 1.1 dB (64 states) less squared error than rounding at the same rate on smooth "
      "densities. Symbols are near latent / (2·step), for "
      "an entropy coder with a static "
      "model or with the transform's prior (then use step 0.5 so that the symbols match the "
      "prior's integer grid). Writes no side information; no quantize_fitted.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::float_option("step", 0.5, 0.0, 1e6,
                                "Spacing of the reconstruction values in latent units, > 0; each "
                                "quantizer alone has spacing 2·step.",
                                NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::float_option("lambda", 0.0, 0.0, 100.0,
                                "Weight of the rate in the trellis search, in units of "
                                "(2·step)² per bit; 0 minimizes the squared error alone (measured "
                                "best on the NWC codecs' latents).",
                                NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::enum_option("trellis", "column", kTrellisChoices, 2,
                               "\"column\": when the block's chunk count n is a multiple of its "
                               "width, the trellis restarts at state 0 at every tensor column "
                               "whose index is a multiple of `path_columns` (n / width rows of "
                               "the view per column: one column's latents with a column-major "
                               "chunker such as nwc.chunk.column), so a block decodes the same "
                               "whether it is coded alone or with its neighbours and adjacent "
                               "blocks can share one stream; otherwise one path through the "
                               "block. \"block\": always one path through the whole block.",
                               NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::int_option("states", 4, 4, kMaxStates,
                              "Trellis states: 4 (H.266's dependent quantization), 8, 16, 32 or "
                              "64 (shift-register trellises). More states pack the "
                              "reconstructions more tightly (1.1 dB below rounding at 64 against "
                              "0.8 dB at 4, on long paths) for a search that costs in proportion; "
                              "the decoder's walk costs the same.",
                              NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::int_option("path_columns", 1, 1, 1 << 20,
                              "With trellis = \"column\": tensor columns per trellis path. Long "
                              "paths lose less to the start from state 0 (on 64-latent paths a "
                              "64-state trellis keeps 0.94 of its 1.11 dB). Every block must "
                              "begin at a multiple of it (make an error-feedback block a multiple "
                              "of it), and a stream's blocks decode the same whether merged or "
                              "not.",
                              NWC_OPTF_AFFECTS_BITSTREAM));

  explicit TcqQuantizer(const nwc::Options &opts)
      : step_(opts.get_float("step")), lambda_(opts.get_float("lambda")),
        per_column_(opts.get_string("trellis") == "column"),
        path_columns_(opts.get_int("path_columns")),
        trellis_(checked_states(opts.get_int("states"))) {
    if (!(step_ > 0.0))
      nwc::fail(NWC_E_INVALID_OPTION, "option 'step' = " + num(step_) + " must be greater than 0");
  }

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                nwc::Tensor<int32_t> symbols, nwc::Tensor<float> dequantized,
                nwc::Sink &) override {
    nwc::require_shape(b, "symbols", symbols.rows, symbols.cols, latents.rows, latents.cols,
                       "latents");
    nwc::require_shape(b, "dequantized", dequantized.rows, dequantized.cols, latents.rows,
                       latents.cols, "latents");
    const int64_t n = latents.rows * latents.cols, m = latents.cols;
    if (n == 0) return;
    // t = latent / step, in double; the search works on the grid of integers.
    std::vector<double> t(static_cast<size_t>(n)), weight;
    for (int64_t r = 0; r < latents.rows; ++r)
      for (int64_t c = 0; c < m; ++c) {
        const float x = latents.row(r)[c];
        const double v = static_cast<double>(x) / step_;
        if (!std::isfinite(x) || std::fabs(v) > kMaxSymbol)
          nwc::fail(NWC_E_INVALID_ARG,
                    "tensor '" + std::string(b.tensor_name) + "': latent " + num(x) + " at chunk " +
                        std::to_string(r) + ", element " + std::to_string(c) +
                        (std::isfinite(x) ? " is more than 2^29 steps of " + num(step_) + " from 0"
                                          : " is not finite"));
        t[static_cast<size_t>(r * m + c)] = v;
      }
    importance_weights(b, n, weight);
    const int64_t segment = segment_length(b, latents.rows, m);

    std::vector<int32_t> k(static_cast<size_t>(n));
    if (lambda_ > 0.0) {
      // Rates start from rounding at 2·step (what the symbols come close to), then follow the
      // trellis' own symbols for one more search.
      for (int64_t i = 0; i < n; ++i)
        k[static_cast<size_t>(i)] =
            static_cast<int32_t>(std::nearbyint(t[static_cast<size_t>(i)] / 2.0));
      for (int pass = 0; pass < 2; ++pass) {
        const RateModel rates(k, m);
        search(t, weight, segment, &rates, k);
      }
    } else {
      search(t, weight, segment, nullptr, k);
    }
    std::copy(k.begin(), k.end(), symbols.data);
    reconstruct(symbols.data, n, segment, dequantized.data); // exactly as the decoder does
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> latents) override {
    if (side.size != 0)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                          "': tcq quantizer has no side info, got " +
                                          std::to_string(side.size) + " bytes");
    nwc::require_shape(b, "latents", latents.rows, latents.cols, symbols.rows, symbols.cols,
                       "symbols");
    const int64_t n = symbols.size();
    const int64_t segment = segment_length(b, symbols.rows, symbols.cols);
    // Symbols are checked first, without a branch per value: |k| <= 2^29 <=> k + 2^29 in
    // [0, 2^30], unsigned.
    const int32_t *__restrict q = symbols.data;
    constexpr uint32_t kBias = 1u << 29;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>(q[i]) + kBias > 2 * kBias;
    if (bad)
      for (int64_t i = 0; i < n; ++i)
        if (std::fabs(static_cast<double>(q[i])) > kMaxSymbol)
          nwc::fail(NWC_E_CORRUPT_STREAM,
                    "tensor '" + std::string(b.tensor_name) + "': symbol " + std::to_string(q[i]) +
                        " at chunk " + std::to_string(i / symbols.cols) + ", element " +
                        std::to_string(i % symbols.cols) + " is outside [-2^29, 2^29]");
    reconstruct(q, n, segment, latents.data);
  }

private:
  static int checked_states(int64_t n) {
    if (n != 4 && n != 8 && n != 16 && n != 32 && n != 64)
      nwc::fail(NWC_E_INVALID_OPTION,
                "option 'states' = " + std::to_string(n) + " must be 4, 8, 16, 32 or 64");
    return static_cast<int>(n);
  }

  // The decoder's walk along the trellis, restarting every `segment` symbols. The encoder's
  // reconstruction comes from the same walk.
  void reconstruct(const int32_t *__restrict q, int64_t n, int64_t segment,
                   float *__restrict out) const {
    const double step = step_;
    for (int64_t start = 0; start < n; start += segment) {
      const int64_t end = std::min(n, start + segment);
      uint32_t s = 0;
      for (int64_t i = start; i < end; ++i) {
        const int32_t k = q[i];
        const int64_t mult =
            2 * int64_t{k} - static_cast<int64_t>(trellis_.quantizer[s]) * ((k > 0) - (k < 0));
        out[i] = static_cast<float>(static_cast<double>(mult) * step);
        s = trellis_.next[s][static_cast<uint32_t>(k) & 1u];
      }
    }
  }

  // Elements per trellis path: path_columns columns' latents when the chunks are a whole number
  // per column, else the whole block. Both sides compute it from the block's geometry alone; a
  // block that begins inside a path could not be decoded apart from the block before it.
  int64_t segment_length(const nwc::BlockInfo &b, int64_t rows, int64_t m) const {
    const int64_t n = rows * m, width = b.width();
    if (!per_column_ || n == 0 || width <= 0 || rows % width != 0) return std::max<int64_t>(n, 1);
    if (b.col_begin % path_columns_ != 0)
      nwc::fail(
          NWC_E_INVALID_ARG,
          "tensor '" + std::string(b.tensor_name) + "': a block begins at column " +
              std::to_string(b.col_begin) +
              ", inside a trellis path of path_columns = " + std::to_string(path_columns_) +
              " columns; make the error-feedback block (and stream_columns) a multiple of it");
    return rows / width * m * path_columns_;
  }

  // Importance weights normalized to mean 1 (so lambda keeps its meaning), or none.
  static void importance_weights(const nwc::BlockInfo &b, int64_t n, std::vector<double> &w) {
    w.clear();
    if (!b.importance) return;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const float v = b.importance[i];
      if (!(v >= 0.0f) || !std::isfinite(v))
        nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                         "': importance weight " + num(v) + " at element " +
                                         std::to_string(i) + " is not finite and >= 0");
      sum += v;
    }
    if (!(sum > 0.0)) return;
    w.resize(static_cast<size_t>(n));
    const double scale = static_cast<double>(n) / sum;
    for (int64_t i = 0; i < n; ++i) w[static_cast<size_t>(i)] = b.importance[i] * scale;
  }

  // Viterbi search over the whole block: each element tries, from every live state, the two
  // nearest symbols of each parity; costs are weighted squared errors in units of step² plus
  // lambda·4·bits. Ties keep the first candidate in a fixed order, so the path is deterministic.
  void search(const std::vector<double> &t, const std::vector<double> &weight, int64_t segment,
              const RateModel *rates, std::vector<int32_t> &k) const {
    const int64_t n = static_cast<int64_t>(t.size());
    for (int64_t start = 0; start < n; start += segment)
      search_path(t, weight, start, std::min(n, start + segment), rates, k);
  }

  // One trellis path over elements [begin, end), from state 0.
  void search_path(const std::vector<double> &t, const std::vector<double> &weight, int64_t begin,
                   int64_t end, const RateModel *rates, std::vector<int32_t> &k) const {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    const double mu = 4.0 * lambda_;
    const int64_t len = end - begin;
    const int states = trellis_.states;
    choice_.resize(static_cast<size_t>(len * states));
    from_.resize(static_cast<size_t>(len * states));
    double cost[kMaxStates], next[kMaxStates];
    std::fill(cost, cost + states, kInf);
    cost[0] = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      const double x = t[static_cast<size_t>(i)];
      const double w = weight.empty() ? 1.0 : weight[static_cast<size_t>(i)];
      const int32_t base = static_cast<int32_t>(std::floor(x / 2.0));
      // Each quantizer's weighted squared errors and the rate of the four candidates, shared by
      // its states (added to a path's cost in this order, as the 4-state search always did).
      double err[2][4], rate[4];
      for (int j = 0; j < 4; ++j) {
        const int32_t q = base - 1 + j;
        rate[j] = rates ? mu * rates->bits(i, q) : 0.0;
        for (int qz = 0; qz < 2; ++qz) {
          const double e = x - static_cast<double>(multiple(q, qz));
          err[qz][j] = w * e * e;
        }
      }
      std::fill(next, next + states, kInf);
      int32_t *ch = &choice_[static_cast<size_t>((i - begin) * states)];
      uint8_t *fr = &from_[static_cast<size_t>((i - begin) * states)];
      for (int s = 0; s < states; ++s) {
        if (cost[s] == kInf) continue;
        const double *e = err[trellis_.quantizer[s]];
        for (int j = 0; j < 4; ++j) {
          const int32_t q = base - 1 + j;
          double c = cost[s] + e[j];
          if (rates) c += rate[j];
          const int ns = trellis_.next[s][q & 1];
          if (c < next[ns]) {
            next[ns] = c;
            ch[ns] = q;
            fr[ns] = static_cast<uint8_t>(s);
          }
        }
      }
      std::copy(next, next + states, cost);
    }
    int s = static_cast<int>(std::min_element(cost, cost + states) - cost);
    for (int64_t i = end - 1; i >= begin; --i) {
      k[static_cast<size_t>(i)] = choice_[static_cast<size_t>((i - begin) * states + s)];
      s = from_[static_cast<size_t>((i - begin) * states + s)];
    }
  }

  double step_, lambda_;
  bool per_column_;
  int64_t path_columns_;
  Trellis trellis_;
  // The search's back pointers, kept from call to call.
  mutable std::vector<int32_t> choice_;
  mutable std::vector<uint8_t> from_;
};

} // namespace

NWC_MODULE(TcqQuantizer)
