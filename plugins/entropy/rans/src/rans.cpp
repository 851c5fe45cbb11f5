// nwc.entropy.rans — byte-oriented rANS (Duda's asymmetric numeral systems, after Fabian Giesen's
// description: 32-bit state kept in [2^23, 2^31), renormalised a byte at a time) with 1, 2 or 4
// interleaved states. Without a probability model it codes each stream with a static model built
// from the stream's own histogram (frequencies normalised to 2^16, stored in the stream); with the
// transform's per-channel CDF tables it codes against those, escaping values the tables cannot
// code. The stream format is documented in README.md.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <queue>
#include <string>
#include <utility>
#include <vector>

namespace {

// ---- stream constants ---------------------------------------------------------------------------

constexpr uint8_t kFormatVersion = 1;
constexpr uint8_t kModeRaw = 0;    // fixed-width bit packing (also: all symbols equal, n = 0)
constexpr uint8_t kModeStatic = 1; // rANS with a stored static table
constexpr uint8_t kModeModel = 2;  // rANS with the caller's CDF tables

constexpr uint32_t kRansLow = 1u << 23; // states live in [kRansLow, kRansLow << 8)
constexpr uint32_t kStaticBits = 16;    // probability precision of the static model
constexpr uint32_t kStaticTotal = 1u << kStaticBits;
constexpr size_t kMaxStaticAlphabet = kStaticTotal - 1; // every symbol needs freq >= 1, A >= 2
constexpr uint32_t kEscapeLengthBits = 6;               // bit length of an escaped value's code
constexpr uint32_t kMaxEscapeLength = 33;               // zig-zag of an index in (-2^32, 2^32)
constexpr uint32_t kBypassChunkBits = 16;

[[noreturn]] void corrupt(const std::string &what) {
  nwc::fail(NWC_E_CORRUPT_STREAM, "rans stream: " + what);
}

// ---- small helpers ------------------------------------------------------------------------------

uint64_t zigzag(int64_t v) {
  return v < 0 ? (static_cast<uint64_t>(-(v + 1)) << 1) | 1u : static_cast<uint64_t>(v) << 1;
}
int64_t unzigzag(uint64_t u) { // u < 2^62
  return (u & 1u) ? -static_cast<int64_t>(u >> 1) - 1 : static_cast<int64_t>(u >> 1);
}

uint32_t bit_length(uint64_t v) {
  uint32_t n = 0;
  while (v) {
    ++n;
    v >>= 1;
  }
  return n;
}

void put_varint(std::vector<uint8_t> &out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

// Bounds-checked cursor over untrusted bytes.
class Cursor {
public:
  Cursor(const uint8_t *p, size_t n) : p_(p), end_(p + n) {}
  uint8_t byte() {
    if (p_ == end_) corrupt("truncated");
    return *p_++;
  }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(byte()) << (8 * i);
    return v;
  }
  // At most 10 bytes, value below 2^max_bits; rejects overlong (non-canonical) encodings.
  uint64_t varint(uint32_t max_bits) {
    uint64_t v = 0;
    for (uint32_t shift = 0; shift < 64; shift += 7) {
      const uint8_t b = byte();
      const uint64_t part = b & 0x7Fu;
      if (shift > 0 && b == 0) corrupt("overlong varint");
      if (shift >= max_bits || (max_bits < 64 && (part << shift) >> max_bits) != 0)
        corrupt("varint out of range");
      v |= part << shift;
      if (!(b & 0x80)) return v;
    }
    corrupt("varint too long");
  }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t *pos() const { return p_; }

private:
  const uint8_t *p_;
  const uint8_t *end_;
};

// ---- rANS core ----------------------------------------------------------------------------------

// Encoder: symbols are pushed in reverse decoding order; bytes are collected reversed and flipped
// at the end, so the decoder reads them forwards.
struct RansEncoder {
  std::vector<uint8_t> rev;

  void put(uint32_t &x, uint32_t start, uint32_t freq, uint32_t bits) {
    // x_max = ((kRansLow >> bits) << 8) * freq <= 2^31 for bits <= 16, freq <= 2^bits.
    const uint64_t x_max = static_cast<uint64_t>((kRansLow >> bits) << 8) * freq;
    while (x >= x_max) {
      rev.push_back(static_cast<uint8_t>(x));
      x >>= 8;
    }
    x = ((x / freq) << bits) + (x % freq) + start;
  }
  // Final states in the order the decoder reads them (state 0 first), little-endian.
  std::vector<uint8_t> finish(const std::vector<uint32_t> &states) {
    for (size_t j = states.size(); j-- > 0;)
      for (int b = 3; b >= 0; --b) rev.push_back(static_cast<uint8_t>(states[j] >> (8 * b)));
    std::reverse(rev.begin(), rev.end());
    return std::move(rev);
  }
};

// The decoder's byte source. A decoding step leaves the state at least 2^(23 - precision) >= 2^7
// (precision <= 16, freq >= 1, state >= 2^23 before the step), so a refill reads at most 2 bytes.
// refill() checks every byte (a truncated stream throws); refill_fast() is branchless and
// unchecked, for callers that know 2 bytes remain. Both leave the same state and position.
struct ByteSource {
  const uint8_t *p;
  const uint8_t *end;

  size_t remaining() const { return static_cast<size_t>(end - p); }
  void refill(uint32_t &x) {
    while (x < kRansLow) {
      if (p == end) corrupt("truncated");
      x = (x << 8) | *p++;
    }
  }
  void refill_fast(uint32_t &x) {
    const uint32_t n =
        static_cast<uint32_t>(x < kRansLow) + static_cast<uint32_t>(x < (kRansLow >> 8));
    const uint32_t v = (static_cast<uint32_t>(p[0]) << 8) | p[1];
    x = (x << (8 * n)) | (v >> (16 - 8 * n));
    p += n;
  }
};

// Reads the K initial states (the encoder's final ones) and returns the byte source after them.
template <uint32_t K> ByteSource read_states(Cursor &in, uint32_t (&x)[K]) {
  for (uint32_t &s : x) {
    s = in.u32();
    if (s < kRansLow || s >= (kRansLow << 8)) corrupt("initial rANS state out of range");
  }
  return ByteSource{in.pos(), in.pos() + in.remaining()};
}

// A correct stream ends with every state back at 2^23 exactly when its last byte is consumed.
template <uint32_t K> void finish_states(const uint32_t (&x)[K], const ByteSource &in) {
  for (uint32_t s : x)
    if (s != kRansLow) corrupt("final rANS state mismatch");
  if (in.remaining() != 0)
    corrupt(std::to_string(in.remaining()) + " trailing bytes after the last symbol");
}

// ---- raw mode -----------------------------------------------------------------------------------

void encode_raw(const int32_t *s, int64_t n, std::vector<uint8_t> &out) {
  int32_t lo = 0, hi = 0;
  if (n > 0) {
    const auto [mn, mx] = std::minmax_element(s, s + n);
    lo = *mn;
    hi = *mx;
  }
  const uint32_t width = bit_length(static_cast<uint64_t>(static_cast<int64_t>(hi) - lo));
  out.push_back(static_cast<uint8_t>(width));
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(static_cast<uint32_t>(lo) >> (8 * i)));
  put_varint(out, static_cast<uint64_t>(n));
  if (width == 0) return;
  uint64_t acc = 0;
  uint32_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc |= static_cast<uint64_t>(static_cast<int64_t>(s[i]) - lo) << count;
    count += width;
    while (count >= 8) {
      out.push_back(static_cast<uint8_t>(acc));
      acc >>= 8;
      count -= 8;
    }
  }
  if (count > 0) out.push_back(static_cast<uint8_t>(acc));
}

size_t raw_payload_bytes(int64_t n, uint32_t width) {
  const uint64_t un = static_cast<uint64_t>(n);
  if (width && un > (std::numeric_limits<uint64_t>::max() - 7) / width)
    corrupt("symbol count too large");
  return static_cast<size_t>((un * width + 7) / 8);
}

void decode_raw(Cursor &in, int32_t *s, int64_t n) {
  const uint32_t width = in.byte();
  if (width > 32) corrupt("raw width " + std::to_string(width) + " exceeds 32");
  const int64_t lo = static_cast<int32_t>(in.u32());
  const uint64_t stored = in.varint(63);
  if (stored != static_cast<uint64_t>(n))
    corrupt("raw stream holds " + std::to_string(stored) + " symbols, expected " +
            std::to_string(n));
  const size_t expected = raw_payload_bytes(n, width);
  if (in.remaining() != expected)
    corrupt("raw payload has " + std::to_string(in.remaining()) + " bytes, expected " +
            std::to_string(expected));
  const uint8_t *p = in.pos();
  const uint64_t mask = (uint64_t{1} << width) - 1;
  uint64_t acc = 0;
  uint32_t count = 0;
  size_t pos = 0;
  for (int64_t i = 0; i < n; ++i) {
    while (count < width) {
      acc |= static_cast<uint64_t>(p[pos++]) << count;
      count += 8;
    }
    const int64_t v = lo + static_cast<int64_t>(acc & mask);
    if (v > std::numeric_limits<int32_t>::max()) corrupt("raw symbol outside int32");
    s[i] = static_cast<int32_t>(v);
    acc >>= width;
    count -= width;
  }
  if (acc != 0) corrupt("nonzero raw padding bits");
}

// ---- static model (mode 1) ----------------------------------------------------------------------

// Distinct values (ascending) and their counts; empty when there are more than `limit`.
void histogram(const int32_t *s, int64_t n, size_t limit, std::vector<int32_t> &values,
               std::vector<uint64_t> &counts) {
  values.clear();
  counts.clear();
  if (n == 0) return;
  const auto [mn, mx] = std::minmax_element(s, s + n);
  const int64_t lo = *mn;
  const uint64_t span = static_cast<uint64_t>(static_cast<int64_t>(*mx) - lo) + 1;
  if (span <= (uint64_t{1} << 20) || span <= 2 * static_cast<uint64_t>(n)) {
    std::vector<uint64_t> dense(static_cast<size_t>(span), 0);
    for (int64_t i = 0; i < n; ++i) ++dense[static_cast<size_t>(s[i] - lo)];
    for (size_t k = 0; k < dense.size(); ++k) {
      if (!dense[k]) continue;
      if (values.size() == limit) {
        values.clear();
        counts.clear();
        return;
      }
      values.push_back(static_cast<int32_t>(lo + static_cast<int64_t>(k)));
      counts.push_back(dense[k]);
    }
    return;
  }
  std::vector<int32_t> sorted(s, s + n);
  std::sort(sorted.begin(), sorted.end());
  for (size_t k = 0; k < sorted.size();) {
    size_t e = k;
    while (e < sorted.size() && sorted[e] == sorted[k]) ++e;
    if (values.size() == limit) {
      values.clear();
      counts.clear();
      return;
    }
    values.push_back(sorted[k]);
    counts.push_back(e - k);
    k = e;
  }
}

// Frequencies summing to 2^bits, each >= 1, close to minimising sum c_i * log2(total / f_i):
// proportional rounding, then greedy unit corrections by smallest cost / largest gain.
std::vector<uint32_t> normalise(const std::vector<uint64_t> &counts, uint32_t bits) {
  const uint64_t total = uint64_t{1} << bits;
  uint64_t n = 0;
  for (uint64_t c : counts) n += c;
  std::vector<uint32_t> f(counts.size());
  int64_t sum = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double ideal =
        static_cast<double>(counts[i]) * static_cast<double>(total) / static_cast<double>(n);
    f[i] = static_cast<uint32_t>(std::max<double>(1.0, std::floor(ideal + 0.5)));
    sum += f[i];
  }
  using Item = std::pair<double, size_t>;
  auto cost_down = [&](size_t i) { // bits lost by f -> f - 1 (infinite when f == 1)
    return f[i] <= 1
               ? std::numeric_limits<double>::infinity()
               : static_cast<double>(counts[i]) * std::log2(static_cast<double>(f[i]) / (f[i] - 1));
  };
  auto gain_up = [&](size_t i) {
    return static_cast<double>(counts[i]) * std::log2(static_cast<double>(f[i] + 1) / f[i]);
  };
  const int64_t target = static_cast<int64_t>(total);
  if (sum > target) {
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> q;
    for (size_t i = 0; i < f.size(); ++i)
      if (f[i] > 1) q.push({cost_down(i), i});
    while (sum > target) {
      const auto [c, i] = q.top();
      q.pop();
      if (c != cost_down(i)) continue; // stale entry
      --f[i];
      --sum;
      if (f[i] > 1) q.push({cost_down(i), i});
    }
  } else if (sum < target) {
    std::priority_queue<Item> q;
    for (size_t i = 0; i < f.size(); ++i) q.push({gain_up(i), i});
    while (sum < target) {
      const auto [g, i] = q.top();
      q.pop();
      if (g != gain_up(i)) continue;
      ++f[i];
      ++sum;
      q.push({gain_up(i), i});
    }
  }
  return f;
}

// Table: varint A (2..65535), zig-zag varint of the smallest value, then for each value after the
// first "0, varint(gap - 1)" when it is not the previous value + 1, and every value's varint
// frequency (1..65535). Frequencies sum to 2^16.
void put_static_table(std::vector<uint8_t> &out, const std::vector<int32_t> &values,
                      const std::vector<uint32_t> &freq) {
  put_varint(out, values.size());
  put_varint(out, zigzag(values[0]));
  for (size_t k = 0; k < values.size(); ++k) {
    if (k > 0) {
      const uint64_t gap = static_cast<uint64_t>(static_cast<int64_t>(values[k]) - values[k - 1]);
      if (gap > 1) {
        out.push_back(0);
        put_varint(out, gap - 2);
      }
    }
    put_varint(out, freq[k]);
  }
}

struct StaticTable {
  std::vector<int32_t> values;
  std::vector<uint32_t> start, freq;
  std::vector<uint32_t> packed; // per symbol: freq << 16 | start (both < 2^16)
  std::vector<uint8_t> lookup8; // slot -> symbol index, when A <= 256
  std::vector<uint16_t> lookup; // slot -> symbol index, otherwise
};

StaticTable read_static_table(Cursor &in) {
  StaticTable t;
  const uint64_t a = in.varint(17);
  if (a < 2 || a > kMaxStaticAlphabet)
    corrupt("static alphabet size " + std::to_string(a) + " outside [2, 65535]");
  const int64_t first = unzigzag(in.varint(33));
  if (first < std::numeric_limits<int32_t>::min() || first > std::numeric_limits<int32_t>::max())
    corrupt("static table minimum outside int32");
  t.values.reserve(a);
  t.start.reserve(a);
  t.freq.reserve(a);
  int64_t v = first;
  uint64_t sum = 0;
  for (uint64_t k = 0; k < a; ++k) {
    uint64_t f = in.varint(17);
    if (k > 0) {
      ++v;
      if (f == 0) {
        v += static_cast<int64_t>(in.varint(32)) + 1;
        f = in.varint(17);
        if (f == 0) corrupt("two gaps in a row in the static table");
      }
      if (v > std::numeric_limits<int32_t>::max()) corrupt("static table value outside int32");
    }
    if (f == 0 || f >= kStaticTotal) corrupt("static frequency out of range");
    t.values.push_back(static_cast<int32_t>(v));
    t.start.push_back(static_cast<uint32_t>(sum));
    t.freq.push_back(static_cast<uint32_t>(f));
    sum += f;
    if (sum > kStaticTotal) corrupt("static frequencies exceed 2^16");
  }
  if (sum != kStaticTotal)
    corrupt("static frequencies sum to " + std::to_string(sum) + ", not 2^16");
  t.packed.resize(t.values.size());
  for (size_t k = 0; k < t.values.size(); ++k) t.packed[k] = t.freq[k] << 16 | t.start[k];
  if (t.values.size() <= 256) {
    t.lookup8.resize(kStaticTotal);
    for (size_t k = 0; k < t.values.size(); ++k)
      std::fill_n(t.lookup8.begin() + t.start[k], t.freq[k], static_cast<uint8_t>(k));
  } else {
    t.lookup.resize(kStaticTotal);
    for (size_t k = 0; k < t.values.size(); ++k)
      std::fill_n(t.lookup.begin() + t.start[k], t.freq[k], static_cast<uint16_t>(k));
  }
  return t;
}

// ---- external CDF model (mode 2) ----------------------------------------------------------------

// A validated copy of the caller's tables. Convention (CompressAI's): a channel with length L has
// L - 1 intervals; interval j < L - 2 codes the value offset + j, interval L - 2 is the escape.
// If the escape interval is empty it is given one unit taken from the widest value interval, so
// every value stays codable (both sides apply the same rule). With tables per quality level
// (ABI 1.7), table level * channels + c serves channel c of a row of symbols at that level.
struct CdfTables {
  uint32_t bits = 0;
  uint32_t channels = 0;
  uint32_t levels = 1;
  size_t stride = 0;
  std::vector<uint32_t> cdf; // levels x channels x stride
  std::vector<uint32_t> length;
  std::vector<int32_t> offset;

  uint32_t tables() const { return levels * channels; }
  const uint32_t *row(uint32_t c) const { return cdf.data() + static_cast<size_t>(c) * stride; }
};

// The fields of nwc_cdf_model before ABI 1.7 (a 1.0-1.6 transform's struct_size).
constexpr uint32_t kCdfModelV1Size = offsetof(nwc_cdf_model, level_count);

// The model's level count when it has tables per level (struct_size covers the 1.7 fields), else 1.
uint32_t level_count(const nwc_cdf_model &m) {
  return m.struct_size >= sizeof(nwc_cdf_model) && m.level_count > 1 ? m.level_count : 1;
}

[[noreturn]] void bad_model(const std::string &what) {
  nwc::fail(NWC_E_INVALID_ARG, "rans: invalid CDF model: " + what);
}

CdfTables load_model(const nwc_cdf_model &m) {
  if (m.struct_size < kCdfModelV1Size) bad_model("struct_size too small");
  if (m.precision < 1 || m.precision > 16)
    bad_model("precision " + std::to_string(m.precision) + " outside [1, 16]");
  if (m.channel_count == 0) bad_model("no channels");
  if (m.max_length < 2) bad_model("max_length below 2");
  if (!m.cdfs || !m.lengths || !m.offsets) bad_model("null table");
  const uint32_t levels = level_count(m);
  if (levels > 256) bad_model("level_count " + std::to_string(levels) + " above 256");
  if (uint64_t{levels} * m.channel_count * m.max_length > (uint64_t{1} << 31))
    bad_model("tables too large");
  CdfTables t;
  t.bits = m.precision;
  t.channels = m.channel_count;
  t.levels = levels;
  t.stride = m.max_length;
  t.cdf.assign(m.cdfs, m.cdfs + static_cast<size_t>(t.tables()) * m.max_length);
  t.length.assign(m.lengths, m.lengths + t.tables());
  t.offset.assign(m.offsets, m.offsets + t.tables());
  const uint32_t total = 1u << m.precision;
  for (uint32_t c = 0; c < t.tables(); ++c) {
    const uint32_t len = t.length[c];
    const std::string where = levels > 1 ? "level " + std::to_string(c / t.channels) + " channel " +
                                               std::to_string(c % t.channels) + ": "
                                         : "channel " + std::to_string(c) + ": ";
    if (len < 2 || len > m.max_length)
      bad_model(where + "length " + std::to_string(len) + " outside [2, max_length]");
    uint32_t *r = t.cdf.data() + static_cast<size_t>(c) * t.stride;
    if (r[0] != 0) bad_model(where + "cdf[0] != 0");
    if (r[len - 1] != total) bad_model(where + "last cdf entry != 2^precision");
    for (uint32_t j = 1; j < len; ++j)
      if (r[j] < r[j - 1]) bad_model(where + "cdf not monotone at " + std::to_string(j));
    if (r[len - 1] == r[len - 2]) { // empty escape interval: borrow from the widest interval
      uint32_t widest = 0;
      for (uint32_t j = 1; j + 2 < len; ++j)
        if (r[j + 1] - r[j] > r[widest + 1] - r[widest]) widest = j;
      for (uint32_t j = widest + 1; j + 1 < len; ++j) --r[j];
    }
  }
  return t;
}

// The level of each row of symbols for one stream (ABI 1.7): the host's row levels, or one level
// for the whole stream (the transform's default). Every level is checked against the tables before
// any symbol is coded.
struct RowLevels {
  const uint8_t *level = nullptr; // null: every symbol uses `uniform`
  int64_t row_length = 1;
  uint32_t uniform = 0;
};

RowLevels row_levels(const nwc_cdf_model &m, const CdfTables &t, int64_t n) {
  if (t.levels == 1) return {};
  if (!m.row_levels) {
    if (m.default_level >= t.levels)
      bad_model("default_level " + std::to_string(m.default_level) + ", the tables cover " +
                std::to_string(t.levels));
    return {nullptr, 1, m.default_level};
  }
  if (m.row_length < 1)
    bad_model("row_length " + std::to_string(m.row_length) + " with row levels given");
  const int64_t rows = n / m.row_length + (n % m.row_length != 0);
  for (int64_t r = 0; r < rows; ++r)
    if (m.row_levels[r] >= t.levels)
      bad_model("row " + std::to_string(r) + " has level " + std::to_string(m.row_levels[r]) +
                ", the tables cover " + std::to_string(t.levels));
  return {m.row_levels, m.row_length, 0};
}

// ---- decoding -----------------------------------------------------------------------------------
// Symbol i uses state i % K. The loops decode whole rounds of K symbols with the states in
// registers and branchless refills while enough bytes remain for a round, then finish with checked
// refills: the same steps in the same order as a one-symbol-at-a-time decoder, so every stream
// decodes to the same symbols and every corrupt one fails at the same symbol with the same error.

// Mode 1, one symbol with state x. Index is uint8_t (A <= 256) or uint16_t: the slot -> symbol
// table; packed holds freq << 16 | start per symbol.
template <bool Fast, class Index>
__attribute__((always_inline)) inline int32_t
static_step(uint32_t &x, ByteSource &src, const Index *lookup, const uint32_t *packed,
            const int32_t *values) {
  const uint32_t sl = x & (kStaticTotal - 1);
  const uint32_t sym = lookup[sl];
  const uint32_t e = packed[sym];
  x = (e >> 16) * (x >> kStaticBits) + sl - (e & 0xFFFFu);
  if constexpr (Fast)
    src.refill_fast(x);
  else
    src.refill(x);
  return values[sym];
}

template <uint32_t K, class Index>
void decode_static_k(const StaticTable &t, const Index *lookup, Cursor &in, int32_t *s, int64_t n) {
  uint32_t x[K];
  ByteSource src = read_states<K>(in, x);
  const uint32_t *packed = t.packed.data();
  const int32_t *values = t.values.data();
  int64_t i = 0;
  for (; i + K <= n && src.remaining() >= 2 * K; i += K)
#pragma GCC unroll 4
    for (uint32_t k = 0; k < K; ++k)
      s[i + k] = static_step<true>(x[k], src, lookup, packed, values);
  for (; i < n; ++i)
    s[i] = static_step<false>(x[static_cast<size_t>(i) % K], src, lookup, packed, values);
  finish_states(x, src);
}

void decode_static(Cursor &in, uint32_t k, int32_t *s, int64_t n) {
  const StaticTable t = read_static_table(in);
  auto run = [&](const auto *lookup) {
    switch (k) {
    case 1:
      return decode_static_k<1>(t, lookup, in, s, n);
    case 2:
      return decode_static_k<2>(t, lookup, in, s, n);
    default:
      return decode_static_k<4>(t, lookup, in, s, n);
    }
  };
  if (!t.lookup8.empty())
    run(t.lookup8.data());
  else
    run(t.lookup.data());
}

// Mode 2: the validated tables plus, per channel, a coarse slot -> interval index (the interval
// holding the bucket's first slot), from which a short forward scan finds the interval of a slot.
struct DecodeModel {
  struct Channel {
    const uint32_t *cdf;
    const uint16_t *bucket; // null: binary search (tables longer than 65536 entries)
    uint32_t len;
    int32_t offset;
  };
  static constexpr uint32_t kBucketBits = 10;
  CdfTables t;
  uint32_t shift = 0; // slot >> shift = bucket
  std::vector<uint16_t> buckets;
  std::vector<Channel> channels;

  DecodeModel(const DecodeModel &) = delete; // channels point into t and buckets
  DecodeModel &operator=(const DecodeModel &) = delete;
  explicit DecodeModel(CdfTables tables) : t(std::move(tables)) {
    const uint32_t bb = std::min(t.bits, kBucketBits);
    shift = t.bits - bb;
    const bool indexed = t.stride <= 65536;
    if (indexed) buckets.resize(static_cast<size_t>(t.tables()) << bb);
    for (uint32_t c = 0; c < t.tables(); ++c) {
      const uint32_t *r = t.row(c);
      uint16_t *b = indexed ? buckets.data() + (static_cast<size_t>(c) << bb) : nullptr;
      if (b) {
        uint32_t j = 0;
        for (uint32_t k = 0; k < (1u << bb); ++k) {
          while (r[j + 1] <= (k << shift)) ++j; // r[len - 1] = 2^bits ends the scan
          b[k] = static_cast<uint16_t>(j);
        }
      }
      channels.push_back({r, b, t.length[c], t.offset[c]});
    }
  }
  // The interval holding slot sl: the largest j with cdf[j] <= sl (cdf[0] = 0 <= sl < cdf[len-1]).
  uint32_t find(const Channel &ch, uint32_t sl) const {
    if (!ch.bucket)
      return static_cast<uint32_t>(std::upper_bound(ch.cdf, ch.cdf + ch.len, sl) - ch.cdf) - 1;
    uint32_t j = ch.bucket[sl >> shift];
    while (ch.cdf[j + 1] <= sl) ++j;
    return j;
  }
};

// The rest of an escaped symbol after its escape interval (see encode_model), with checked
// refills: at most 3 more steps.
int32_t decode_escape(uint32_t &x, ByteSource &src, const DecodeModel::Channel &ch) {
  const uint32_t b = x & ((1u << kEscapeLengthBits) - 1);
  x = (x >> kEscapeLengthBits); // freq 1, start b
  src.refill(x);
  if (b > kMaxEscapeLength) corrupt("escape length " + std::to_string(b) + " too large");
  uint64_t z = 0;
  if (b > 0) {
    const uint32_t low_bits = b - 1;
    for (uint32_t q = 0; q * kBypassChunkBits < low_bits; ++q) {
      const uint32_t w = std::min(kBypassChunkBits, low_bits - q * kBypassChunkBits);
      const uint32_t v = x & ((1u << w) - 1);
      x >>= w;
      src.refill(x);
      z |= static_cast<uint64_t>(v) << (q * kBypassChunkBits);
    }
    z |= uint64_t{1} << low_bits;
  }
  const int64_t idx = unzigzag(z);
  if (idx >= 0 && idx + 2 < ch.len && ch.cdf[idx + 1] > ch.cdf[idx])
    corrupt("escape codes a value its table codes directly");
  const int64_t v = idx + ch.offset;
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    corrupt("escaped value outside int32");
  return static_cast<int32_t>(v);
}

// Mode 2, one symbol of channel ch with state x.
template <bool Fast>
__attribute__((always_inline)) inline int32_t
model_step(uint32_t &x, ByteSource &src, const DecodeModel &m, const DecodeModel::Channel &ch) {
  const uint32_t bits = m.t.bits;
  const uint32_t sl = x & ((1u << bits) - 1);
  const uint32_t j = m.find(ch, sl);
  const uint32_t start = ch.cdf[j];
  x = (ch.cdf[j + 1] - start) * (x >> bits) + sl - start;
  if constexpr (Fast)
    src.refill_fast(x);
  else
    src.refill(x);
  if (j + 2 < ch.len) [[likely]]
    return static_cast<int32_t>(static_cast<int64_t>(ch.offset) + j);
  return decode_escape(x, src, ch);
}

// Channel c of symbol i is i % channels; with row levels its table is the row's level's
// (Levels = true: one more counter, kept out of the loop without them).
template <uint32_t K, bool Levels>
void decode_model_k(const DecodeModel &m, const RowLevels &rl, Cursor &in, int32_t *s, int64_t n) {
  uint32_t x[K];
  ByteSource src = read_states<K>(in, x);
  const uint32_t nch = m.t.channels;
  const DecodeModel::Channel *chans = m.channels.data();
  uint32_t c = 0;                  // i % channels
  int64_t pos = 0;                 // i % row_length
  const uint8_t *level = rl.level; // the level of i's row
  const DecodeModel::Channel *base = chans + size_t{Levels ? *level : rl.uniform} * nch;
  auto advance = [&] {
    c = c + 1 == nch ? 0 : c + 1;
    if constexpr (Levels)
      if (++pos == rl.row_length) {
        pos = 0;
        base = chans + size_t{*++level} * nch; // the row after the last is never read (n > i)
      }
  };
  // A symbol reads at most 8 bytes: 2 for its interval, 6 more if it is escaped (3 steps).
  int64_t i = 0;
  for (; i + K <= n && src.remaining() >= 8 * K; i += K)
#pragma GCC unroll 4
    for (uint32_t k = 0; k < K; ++k) {
      s[i + k] = model_step<true>(x[k], src, m, base[c]);
      if (Levels && i + k + 1 == n) break;
      advance();
    }
  for (; i < n; ++i) {
    s[i] = model_step<false>(x[static_cast<size_t>(i) % K], src, m, base[c]);
    if (Levels && i + 1 == n) break;
    advance();
  }
  finish_states(x, src);
}

template <bool Levels>
void decode_model_levels(Cursor &in, uint32_t k, const DecodeModel &m, const RowLevels &rl,
                         int32_t *s, int64_t n) {
  switch (k) {
  case 1:
    return decode_model_k<1, Levels>(m, rl, in, s, n);
  case 2:
    return decode_model_k<2, Levels>(m, rl, in, s, n);
  default:
    return decode_model_k<4, Levels>(m, rl, in, s, n);
  }
}

void decode_model(Cursor &in, uint32_t k, const DecodeModel &m, const RowLevels &rl, int32_t *s,
                  int64_t n) {
  if (rl.level && n > 0) return decode_model_levels<true>(in, k, m, rl, s, n);
  return decode_model_levels<false>(in, k, m, rl, s, n);
}

// ---- the plugin ---------------------------------------------------------------------------------

class RansCoder final : public nwc::EntropyCoder {
public:
  static constexpr const char *id = "nwc.entropy.rans";
  static constexpr const char *version = "1.1.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "rans";
  static constexpr const char *description =
      "Byte-oriented rANS with 32-bit states. Without a probability model, each stream carries a "
      "static table (its symbol histogram normalised to 2^16) and falls back to fixed-width bit "
      "packing when that is smaller or the alphabet exceeds 65535 values; with the transform's "
      "per-channel CDF tables (or per level and channel) it codes against them and escapes "
      "out-of-range values.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::int_option("interleave", 4, 1, 4,
                              "Independent rANS states interleaved round-robin over the symbols: "
                              "1, 2 or 4. Recorded in the stream; the decoder reads it from there.",
                              NWC_OPTF_AFFECTS_BITSTREAM));

  explicit RansCoder(const nwc::Options &opts) {
    const int64_t k = opts.get_int("interleave");
    if (k != 1 && k != 2 && k != 4)
      nwc::fail(NWC_E_INVALID_OPTION,
                "option 'interleave' must be 1, 2 or 4, got " + std::to_string(k));
    interleave_ = static_cast<uint32_t>(k);
    log2_interleave_ = k == 1 ? 0 : k == 2 ? 1 : 2;
  }

  void encode(nwc::ConstTensor<int32_t> symbols, const nwc_cdf_model *model,
              nwc::Sink &out) override {
    const int64_t n = symbols.size();
    std::vector<uint8_t> bytes;
    if (model) {
      const CdfTables t = load_model(*model);
      const RowLevels rl = row_levels(*model, t, n);
      bytes = {kFormatVersion, static_cast<uint8_t>(kModeModel | (log2_interleave_ << 4))};
      const auto payload = encode_model(symbols.data, n, t, rl);
      bytes.insert(bytes.end(), payload.begin(), payload.end());
    } else {
      std::vector<uint8_t> raw = {kFormatVersion, kModeRaw};
      encode_raw(symbols.data, n, raw);
      bytes = std::move(raw);
      std::vector<int32_t> values;
      std::vector<uint64_t> counts;
      histogram(symbols.data, n, kMaxStaticAlphabet, values, counts);
      if (values.size() >= 2) {
        std::vector<uint8_t> st = {kFormatVersion,
                                   static_cast<uint8_t>(kModeStatic | (log2_interleave_ << 4))};
        encode_static(symbols.data, n, values, counts, st);
        if (st.size() < bytes.size()) bytes = std::move(st);
      }
    }
    out.write(bytes.data(), bytes.size());
  }

  void decode(nwc::Bytes stream, const nwc_cdf_model *model,
              nwc::Tensor<int32_t> symbols) override {
    const int64_t n = symbols.size();
    Cursor in(stream.data, stream.size);
    const uint8_t ver = in.byte();
    if (ver != kFormatVersion) corrupt("unknown format version " + std::to_string(ver));
    const uint8_t tag = in.byte();
    const uint8_t mode = tag & 0x0F;
    const uint32_t lk = tag >> 4;
    if (lk > 2) corrupt("interleave code " + std::to_string(lk) + " is not 0, 1 or 2");
    const uint32_t k = 1u << lk;
    switch (mode) {
    case kModeRaw:
      if (lk != 0) corrupt("raw mode with an interleave code");
      decode_raw(in, symbols.data, n);
      return;
    case kModeStatic:
      decode_static(in, k, symbols.data, n);
      return;
    case kModeModel:
      if (!model)
        nwc::fail(NWC_E_INVALID_ARG, "rans: stream was coded with a CDF model, none was given");
      {
        const DecodeModel &dm = prepared(*model);
        decode_model(in, k, dm, row_levels(*model, dm.t, n), symbols.data, n);
      }
      return;
    default:
      corrupt("unknown mode " + std::to_string(mode));
    }
  }

private:
  void encode_static(const int32_t *s, int64_t n, const std::vector<int32_t> &values,
                     const std::vector<uint64_t> &counts, std::vector<uint8_t> &out) const {
    const std::vector<uint32_t> freq = normalise(counts, kStaticBits);
    put_static_table(out, values, freq);
    std::vector<uint32_t> start(freq.size());
    for (size_t k = 1; k < freq.size(); ++k) start[k] = start[k - 1] + freq[k - 1];
    std::vector<uint32_t> states(interleave_, kRansLow);
    RansEncoder enc;
    enc.rev.reserve(static_cast<size_t>(n) / 2 + 16);
    for (int64_t i = n; i-- > 0;) {
      const size_t k = static_cast<size_t>(std::lower_bound(values.begin(), values.end(), s[i]) -
                                           values.begin());
      enc.put(states[static_cast<size_t>(i) % interleave_], start[k], freq[k], kStaticBits);
    }
    const auto payload = enc.finish(states);
    out.insert(out.end(), payload.begin(), payload.end());
  }

  // Escaped index: escape interval, then (decoding order) the 6-bit bit length b of zigzag(idx),
  // then its low b - 1 bits (the top bit is implied) in 16-bit chunks, least significant first.
  std::vector<uint8_t> encode_model(const int32_t *s, int64_t n, const CdfTables &t,
                                    const RowLevels &rl) const {
    std::vector<uint32_t> states(interleave_, kRansLow);
    RansEncoder enc;
    enc.rev.reserve(static_cast<size_t>(n) / 2 + 16);
    for (int64_t i = n; i-- > 0;) {
      uint32_t &x = states[static_cast<size_t>(i) % interleave_];
      const uint32_t c =
          static_cast<uint32_t>(i % t.channels) +
          (rl.level ? uint32_t{rl.level[i / rl.row_length]} : rl.uniform) * t.channels;
      const uint32_t *r = t.row(c);
      const uint32_t len = t.length[c];
      const int64_t idx = static_cast<int64_t>(s[i]) - t.offset[c];
      if (idx >= 0 && idx + 2 < len && r[idx + 1] > r[idx]) {
        enc.put(x, r[idx], r[idx + 1] - r[idx], t.bits);
        continue;
      }
      const uint64_t z = zigzag(idx);
      const uint32_t b = bit_length(z);
      if (b > 1) {
        const uint32_t low_bits = b - 1;
        const uint32_t chunks = (low_bits + kBypassChunkBits - 1) / kBypassChunkBits;
        for (uint32_t q = chunks; q-- > 0;) {
          const uint32_t w = std::min(kBypassChunkBits, low_bits - q * kBypassChunkBits);
          const uint32_t v = static_cast<uint32_t>(z >> (q * kBypassChunkBits)) & ((1u << w) - 1);
          enc.put(x, v, 1, w);
        }
      }
      enc.put(x, b, 1, kEscapeLengthBits);
      enc.put(x, r[len - 2], r[len - 1] - r[len - 2], t.bits);
    }
    return enc.finish(states);
  }

  // The decoding form of the caller's CDF model, kept for the next call while the caller's
  // tables stay the same (a transform hands the same tables to every block): built and validated
  // on the first call, then only compared.
  const DecodeModel &prepared(const nwc_cdf_model &m) {
    if (model_ && m.struct_size >= kCdfModelV1Size && m.cdfs && m.lengths && m.offsets &&
        m.precision == key_precision_ && m.channel_count == key_channels_ &&
        level_count(m) == key_levels_ && m.max_length == key_max_length_) {
      const size_t tables = size_t{key_levels_} * key_channels_;
      if (std::equal(m.lengths, m.lengths + tables, model_lengths_.begin()) &&
          std::equal(m.offsets, m.offsets + tables, model_offsets_.begin()) &&
          std::equal(m.cdfs, m.cdfs + model_cdfs_.size(), model_cdfs_.begin()))
        return *model_;
    }
    model_.reset();
    auto fresh = std::make_unique<DecodeModel>(load_model(m)); // validates m
    key_precision_ = m.precision;
    key_channels_ = m.channel_count;
    key_levels_ = level_count(m);
    key_max_length_ = m.max_length;
    const size_t tables = size_t{key_levels_} * key_channels_;
    model_cdfs_.assign(m.cdfs, m.cdfs + tables * m.max_length);
    model_lengths_.assign(m.lengths, m.lengths + tables);
    model_offsets_.assign(m.offsets, m.offsets + tables);
    model_ = std::move(fresh);
    return *model_;
  }

  uint32_t interleave_ = 4;
  uint32_t log2_interleave_ = 2;
  std::unique_ptr<DecodeModel> model_;
  uint32_t key_precision_ = 0, key_channels_ = 0, key_levels_ = 0, key_max_length_ = 0;
  std::vector<uint32_t> model_cdfs_, model_lengths_;
  std::vector<int32_t> model_offsets_;
};

} // namespace

NWC_MODULE(RansCoder)
