// nwc.entropy.rans through its C ABI: lossless round trips in both modes (static histogram model
// and caller-supplied CDF tables) at every interleave, coded size against the entropy bounds, and
// rejection of corrupt streams and invalid models (never a crash or hang; run under ASan/UBSan).
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <map>
#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.entropy.rans";
constexpr uint32_t kL = 1u << 23;

std::vector<nwc_option> interleave(int64_t k) {
  return {opt_int("interleave", k)};
}

nwc_status encode_with(Instance &inst, const std::vector<int32_t> &symbols,
                       const nwc_cdf_model *model, std::vector<uint8_t> &stream) {
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  REQUIRE(e != nullptr);
  View in(symbols.data(), 1, static_cast<int64_t>(symbols.size()));
  VecSink out;
  const nwc_status st = e->encode(inst.get(), in.get(), model, out.get());
  stream = std::move(out.bytes);
  return st;
}

nwc_status decode_with(Instance &inst, const std::vector<uint8_t> &stream,
                       const nwc_cdf_model *model, std::vector<int32_t> &symbols) {
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  REQUIRE(e != nullptr);
  View out(symbols.data(), 1, static_cast<int64_t>(symbols.size()));
  return e->decode(inst.get(), nwc_bytes{stream.data(), stream.size()}, model, out.get());
}

std::vector<uint8_t> round_trip(Instance &inst, const std::vector<int32_t> &s,
                                const nwc_cdf_model *model = nullptr) {
  std::vector<uint8_t> stream;
  REQUIRE(encode_with(inst, s, model, stream) == NWC_OK);
  REQUIRE(stream.size() >= 2);
  std::vector<int32_t> back(s.size(), 12345);
  const nwc_status st = decode_with(inst, stream, model, back);
  if (st != NWC_OK) INFO(inst.last_error());
  REQUIRE(st == NWC_OK);
  CHECK(back == s);
  return stream;
}

uint8_t mode_of(const std::vector<uint8_t> &stream) {
  return stream.at(1) & 0x0F;
}

// ---- a reader of the static table, for the table-size accounting ----------------------------

uint64_t get_varint(const std::vector<uint8_t> &b, size_t &p) {
  uint64_t v = 0;
  for (uint32_t shift = 0;; shift += 7) {
    const uint8_t x = b.at(p++);
    v |= static_cast<uint64_t>(x & 0x7F) << shift;
    if (!(x & 0x80)) return v;
  }
}
// Bytes of a static (mode 1) stream's table: from byte 2 up to the rANS states.
size_t static_table_bytes(const std::vector<uint8_t> &stream) {
  size_t p = 2;
  const uint64_t a = get_varint(stream, p);
  get_varint(stream, p);
  for (uint64_t k = 0; k < a; ++k) {
    uint64_t f = get_varint(stream, p);
    if (f == 0) {
      get_varint(stream, p);
      f = get_varint(stream, p);
    }
  }
  return p - 2;
}

double empirical_entropy_bits(const std::vector<int32_t> &s) {
  std::map<int32_t, uint64_t> h;
  for (int32_t v : s) ++h[v];
  double bits = 0;
  const double n = static_cast<double>(s.size());
  for (const auto &[v, c] : h)
    bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / n);
  return bits;
}

// ---- symbol sources -----------------------------------------------------------------------------

std::vector<int32_t> uniform_bits(std::mt19937_64 &rng, size_t n, uint32_t w, int32_t lo) {
  std::uniform_int_distribution<int64_t> d(0, (int64_t{1} << w) - 1);
  std::vector<int32_t> s(n);
  for (auto &v : s) v = static_cast<int32_t>(lo + d(rng));
  return s;
}
std::vector<int32_t> laplace_like(std::mt19937_64 &rng, size_t n, double p, int32_t center) {
  std::geometric_distribution<int32_t> g(p);
  std::bernoulli_distribution sign(0.5);
  std::vector<int32_t> s(n);
  for (auto &v : s) v = center + (sign(rng) ? g(rng) : -g(rng));
  return s;
}
std::vector<int32_t> geometric(std::mt19937_64 &rng, size_t n, double p) {
  std::geometric_distribution<int32_t> g(p);
  std::vector<int32_t> s(n);
  for (auto &v : s) v = g(rng);
  return s;
}

// ---- synthetic CDF models
// -------------------------------------------------------------------------

// Owns the arrays of an nwc_cdf_model.
struct Model {
  uint32_t precision = 16;
  uint32_t max_length = 0;
  std::vector<uint32_t> cdfs, lengths;
  std::vector<int32_t> offsets;
  nwc_cdf_model m{};
  const nwc_cdf_model *get() {
    m.struct_size = sizeof(nwc_cdf_model);
    m.precision = precision;
    m.channel_count = static_cast<uint32_t>(lengths.size());
    m.max_length = max_length;
    m.cdfs = cdfs.data();
    m.lengths = lengths.data();
    m.offsets = offsets.data();
    return &m;
  }
  uint32_t *row(size_t c) { return cdfs.data() + c * max_length; }
  uint32_t width(size_t c, size_t j) { return row(c)[j + 1] - row(c)[j]; }
};

// Quantises pmf (the last entry is the escape) to a CDF summing to 2^precision with every entry
// >= 1: proportional rounding, then the difference taken from / given to the largest entry.
std::vector<uint32_t> quantise(const std::vector<double> &pmf, uint32_t precision) {
  const int64_t total = int64_t{1} << precision;
  double sum = 0;
  for (double p : pmf) sum += p;
  std::vector<int64_t> f(pmf.size());
  int64_t s = 0;
  for (size_t i = 0; i < pmf.size(); ++i) {
    f[i] = std::max<int64_t>(1, std::llround(pmf[i] / sum * static_cast<double>(total)));
    s += f[i];
  }
  const auto big = std::max_element(f.begin(), f.end()) - f.begin();
  f[static_cast<size_t>(big)] += total - s;
  REQUIRE(f[static_cast<size_t>(big)] >= 1);
  std::vector<uint32_t> cdf(pmf.size() + 1, 0);
  for (size_t i = 0; i < f.size(); ++i) cdf[i + 1] = cdf[i] + static_cast<uint32_t>(f[i]);
  return cdf;
}

// channels x (Laplace for even, Gaussian for odd channels) discretised over `values` integers
// around 0, offsets -values/2 + c, escape mass `tail`.
Model make_model(size_t channels, uint32_t precision, double tail = 1e-3) {
  Model m;
  m.precision = precision;
  std::vector<std::vector<uint32_t>> rows;
  for (size_t c = 0; c < channels; ++c) {
    const int32_t values = 5 + static_cast<int32_t>(c * 7 % 40);
    const double scale = 0.7 + 0.9 * static_cast<double>(c % 5);
    std::vector<double> pmf;
    for (int32_t k = 0; k < values; ++k) {
      const double x = k - values / 2;
      pmf.push_back(c % 2 ? std::exp(-0.5 * x * x / (scale * scale))
                          : std::exp(-std::abs(x) / scale));
    }
    double sum = 0;
    for (double p : pmf) sum += p;
    pmf.push_back(tail * sum);
    rows.push_back(quantise(pmf, precision));
    m.offsets.push_back(-values / 2 + static_cast<int32_t>(c % 3));
  }
  for (const auto &r : rows)
    m.max_length = std::max<uint32_t>(m.max_length, static_cast<uint32_t>(r.size()));
  m.max_length += 3; // a stride longer than every table
  m.cdfs.assign(channels * m.max_length, 0xDEADBEEF);
  for (size_t c = 0; c < channels; ++c) {
    std::copy(rows[c].begin(), rows[c].end(), m.row(c));
    m.lengths.push_back(static_cast<uint32_t>(rows[c].size()));
  }
  return m;
}

// n symbols drawn from the model itself; with_escapes = false redraws escape-interval draws.
std::vector<int32_t> sample(Model &m, std::mt19937_64 &rng, size_t n, bool with_escapes) {
  std::uniform_int_distribution<uint32_t> slot(0, (1u << m.precision) - 1);
  std::vector<int32_t> s(n);
  const size_t channels = m.lengths.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t c = i % channels;
    const uint32_t len = m.lengths[c];
    for (;;) {
      const uint32_t u = slot(rng);
      const uint32_t *r = m.row(c);
      const uint32_t j = static_cast<uint32_t>(std::upper_bound(r, r + len, u) - r) - 1;
      if (j + 2 < len) {
        s[i] = m.offsets[c] + static_cast<int32_t>(j);
        break;
      }
      if (with_escapes) {
        s[i] = m.offsets[c] + static_cast<int32_t>(len) - 2 + static_cast<int32_t>(u % 1000);
        break;
      }
    }
  }
  return s;
}

double cross_entropy_bits(Model &m, const std::vector<int32_t> &s) {
  double bits = 0;
  const size_t channels = m.lengths.size();
  for (size_t i = 0; i < s.size(); ++i) {
    const size_t c = i % channels;
    const auto j = static_cast<size_t>(s[i] - m.offsets[c]);
    bits -= std::log2(static_cast<double>(m.width(c, j)) /
                      std::ldexp(1.0, static_cast<int>(m.precision)));
  }
  return bits;
}

} // namespace

TEST_CASE("rans: descriptor, interface and options") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  CHECK(inst.descriptor().kind == NWC_KIND_ENTROPY_CODER);
  CHECK((inst.descriptor().flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(inst.descriptor().option_count == 1);
  CHECK(std::string(inst.descriptor().options[0].key) == "interleave");
  CHECK((inst.descriptor().options[0].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0);
  CHECK(inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE) != nullptr);
  for (int64_t k : {1, 2, 4}) CHECK(Instance(kId, interleave(k)).ok());
  for (int64_t k : {0, 3, 5, -1}) {
    Instance bad(kId, interleave(k));
    CHECK(bad.status == NWC_E_INVALID_OPTION);
  }
}

TEST_CASE("rans: static mode round trips over many distributions and every interleave") {
  std::mt19937_64 rng(11);
  for (int64_t k : {1, 2, 4}) {
    CAPTURE(k);
    Instance inst(kId, interleave(k));
    REQUIRE(inst.ok());
    for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{1000}}) {
      CAPTURE(n);
      for (uint32_t w = 1; w <= 16; ++w) {
        CAPTURE(w);
        round_trip(inst, uniform_bits(rng, n, w, -37));
      }
      round_trip(inst, laplace_like(rng, n, 0.3, 5));
      round_trip(inst, geometric(rng, n, 0.05));
      round_trip(inst, std::vector<int32_t>(n, -7));
      round_trip(inst, std::vector<int32_t>(n, INT32_MIN));
      auto ext = laplace_like(rng, n, 0.5, 0);
      for (size_t i = 0; i < n; i += 3) ext[i] = i % 2 ? INT32_MIN : INT32_MAX;
      round_trip(inst, ext);
      std::uniform_int_distribution<int32_t> any(INT32_MIN, INT32_MAX);
      std::vector<int32_t> wide(n);
      for (auto &v : wide) v = any(rng);
      round_trip(inst, wide);
    }
    // Two symbols, 1:65535 skew; and a dominant symbol with a rare extreme.
    std::vector<int32_t> skew(65536, 3);
    skew[40000] = 4;
    CHECK(mode_of(round_trip(inst, skew)) == 1);
    std::vector<int32_t> rare(100000, 0);
    rare[7] = INT32_MIN;
    rare[99999] = INT32_MAX;
    CHECK(mode_of(round_trip(inst, rare)) == 1);
    // Long streams.
    CHECK(mode_of(round_trip(inst, laplace_like(rng, 1000000, 0.2, -3))) == 1);
    round_trip(inst, uniform_bits(rng, 1000000, 16, 1000)); // raw or static, whichever is smaller
    // More distinct values than a 16-bit table holds: raw fallback.
    CHECK(mode_of(round_trip(inst, uniform_bits(rng, 300000, 20, 0))) == 0);
  }
}

TEST_CASE("rans: static mode picks raw packing for incompressible or tiny streams") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::vector<uint8_t> s = round_trip(inst, {});
  CHECK(mode_of(s) == 0);
  CHECK(s.size() == 2 + 1 + 4 + 1);
  s = round_trip(inst, std::vector<int32_t>(1000, 9));
  CHECK(mode_of(s) == 0);
  CHECK(s.size() == 2 + 1 + 4 + 2);
  s = round_trip(inst, {INT32_MIN, INT32_MAX});
  CHECK(mode_of(s) == 0);
}

TEST_CASE("rans: static mode size is within 1% of the empirical entropy plus table") {
  std::mt19937_64 rng(5);
  Instance inst(kId);
  REQUIRE(inst.ok());
  struct Case {
    const char *name;
    std::vector<int32_t> s;
  };
  std::vector<Case> cases;
  cases.push_back({"laplace p=0.3", laplace_like(rng, 1000000, 0.3, 0)});
  cases.push_back({"laplace p=0.02", laplace_like(rng, 1000000, 0.02, 100)});
  cases.push_back({"geometric p=0.7", geometric(rng, 1000000, 0.7)});
  cases.push_back({"uniform 4 bits", uniform_bits(rng, 1000000, 4, -8)});
  {
    std::uniform_int_distribution<int32_t> ten(-5, 4);
    std::vector<int32_t> s(1000000);
    for (auto &v : s) v = ten(rng);
    cases.push_back({"uniform 10 values", s});
  }
  cases.push_back({"uniform 12 bits", uniform_bits(rng, 1000000, 12, 0)});
  cases.push_back({"uniform 16 bits", uniform_bits(rng, 2000000, 16, 0)});
  for (auto &c : cases) {
    CAPTURE(c.name);
    const std::vector<uint8_t> stream = round_trip(inst, c.s);
    const uint8_t mode = mode_of(stream);
    REQUIRE((mode == 0 || mode == 1));
    const double h = empirical_entropy_bits(c.s);
    const size_t table = mode == 1 ? static_table_bytes(stream) : 0;
    const double bound = h / 8 + static_cast<double>(table);
    std::printf(
        "rans mode %u %-16s n=%zu H=%.4f bits/sym  entropy %.0f B + table %zu B  coded %zu B"
        "  ratio %.5f\n",
        mode, c.name, c.s.size(), h / static_cast<double>(c.s.size()), h / 8, table, stream.size(),
        static_cast<double>(stream.size()) / bound);
    CHECK(static_cast<double>(stream.size()) <= 1.01 * bound);
  }
}

TEST_CASE("rans: model mode round trips with escapes and zero-width intervals") {
  std::mt19937_64 rng(3);
  for (uint32_t precision : {16u, 12u, 8u}) {
    CAPTURE(precision);
    Model m = make_model(16, precision);
    // Channel 3: zero-width intervals in the middle and at the ends of the value range.
    uint32_t *r = m.row(3);
    const uint32_t len = m.lengths[3];
    REQUIRE(len >= 6);
    r[1] = r[0];
    r[len - 2] = r[len - 3];
    r[len / 2] = r[len / 2 - 1];
    // Channel 5: an empty escape interval; channel 6: only the escape interval.
    uint32_t *r5 = m.row(5);
    r5[m.lengths[5] - 2] = r5[m.lengths[5] - 1];
    m.lengths[6] = 2;
    m.row(6)[1] = 1u << precision;
    for (int64_t k : {1, 2, 4}) {
      CAPTURE(k);
      Instance inst(kId, interleave(k));
      REQUIRE(inst.ok());
      for (size_t n :
           {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{17}, size_t{5000}}) {
        CAPTURE(n);
        auto s = sample(m, rng, n, true);
        CHECK(mode_of(round_trip(inst, s, m.get())) == 2);
        // Far outside, extremes, just outside both ends, and the zero-width values.
        for (size_t i = 0; i < n; i += 4) {
          const size_t c = i % 16;
          const int32_t lo = m.offsets[c], hi = lo + static_cast<int32_t>(m.lengths[c]) - 3;
          const int32_t pick[] = {INT32_MIN, INT32_MAX, lo - 1, hi + 1, hi + 2,
                                  -1000000,  1 << 30,   lo,     hi};
          s[i] = pick[(i / 4) % 9];
        }
        // Channel 3's zero-width values (indexes 0, len / 2 - 1 and len - 3).
        const int32_t zero_width[] = {m.offsets[3],
                                      m.offsets[3] + static_cast<int32_t>(len) / 2 - 1,
                                      m.offsets[3] + static_cast<int32_t>(len) - 3};
        for (size_t i = 3, z = 0; i < n; i += 16, ++z) s[i] = zero_width[z % 3];
        round_trip(inst, s, m.get());
      }
      // A long stream with every channel's zero-width value and an all-escape channel.
      auto s = sample(m, rng, 200000, true);
      for (size_t i = 3; i < s.size(); i += 160)
        s[i] = m.offsets[3] + static_cast<int32_t>(len) - 3;
      round_trip(inst, s, m.get());
    }
  }
}

// The decoder keeps the tables of the last model it was given (prepared for decoding) while the
// caller hands the same ones: another model, or the same arrays changed in place, must be noticed.
TEST_CASE("rans: one instance decodes streams of different models in turn") {
  std::mt19937_64 rng(5);
  Model a = make_model(16, 16), b = make_model(16, 12);
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto sa = sample(a, rng, 3000, true), sb = sample(b, rng, 3000, true);
  std::vector<uint8_t> stream_a, stream_b;
  REQUIRE(encode_with(inst, sa, a.get(), stream_a) == NWC_OK);
  REQUIRE(encode_with(inst, sb, b.get(), stream_b) == NWC_OK);
  for (int round = 0; round < 2; ++round) {
    std::vector<int32_t> out(sa.size());
    REQUIRE(decode_with(inst, stream_a, a.get(), out) == NWC_OK);
    CHECK(out == sa);
    REQUIRE(decode_with(inst, stream_b, b.get(), out) == NWC_OK);
    CHECK(out == sb);
  }
  // The same arrays, changed in place: channel 0's offset moves by one, so every value of
  // channel 0 decodes one higher (or the stream is rejected).
  Model c = make_model(16, 16);
  const auto sc = sample(c, rng, 3000, false);
  std::vector<uint8_t> stream_c;
  REQUIRE(encode_with(inst, sc, c.get(), stream_c) == NWC_OK);
  std::vector<int32_t> out(sc.size());
  REQUIRE(decode_with(inst, stream_c, c.get(), out) == NWC_OK);
  CHECK(out == sc);
  c.offsets[0] += 1;
  const nwc_status st = decode_with(inst, stream_c, c.get(), out);
  if (st == NWC_OK) {
    for (size_t i = 0; i < sc.size(); ++i) CHECK(out[i] == sc[i] + (i % 16 == 0 ? 1 : 0));
  } else {
    CHECK(st == NWC_E_CORRUPT_STREAM);
  }
  // And an invalid change is refused, not served from the kept tables.
  c.offsets[0] -= 1;
  c.row(1)[1] = c.row(1)[2] + 1; // not monotone
  CHECK(decode_with(inst, stream_c, c.get(), out) == NWC_E_INVALID_ARG);
}

TEST_CASE("rans: model mode size is within 1% of the cross-entropy") {
  std::mt19937_64 rng(9);
  for (uint32_t precision : {16u, 12u}) {
    Model m = make_model(16, precision, 1e-4);
    for (int64_t k : {1, 4}) {
      Instance inst(kId, interleave(k));
      REQUIRE(inst.ok());
      const auto s = sample(m, rng, 1000000, false);
      const std::vector<uint8_t> stream = round_trip(inst, s, m.get());
      const double ce = cross_entropy_bits(m, s) / 8;
      std::printf("rans model precision %u interleave %lld: n=%zu cross-entropy %.0f B  coded %zu B"
                  "  ratio %.5f\n",
                  precision, static_cast<long long>(k), s.size(), ce, stream.size(),
                  static_cast<double>(stream.size()) / ce);
      CHECK(static_cast<double>(stream.size()) <= 1.01 * ce);
      CHECK(static_cast<double>(stream.size()) >= 0.99 * ce);
    }
  }
}

// Tables per quality level (ABI 1.7): make_model's 12 tables as 3 levels x 4 channels; rows of 8
// symbols (two passes over the channels), each row at its own level.
TEST_CASE("rans: tables per level code each row of symbols with its level's tables") {
  constexpr uint32_t kLevels = 3, kChannels = 4;
  constexpr int64_t kRow = 8;
  std::mt19937_64 rng(21);
  Model m = make_model(kLevels * kChannels, 16, 1e-4);
  const size_t n = 400000 + 5; // a last row shorter than the others
  std::vector<uint8_t> levels((n + kRow - 1) / kRow);
  for (auto &l : levels) l = static_cast<uint8_t>(rng() % kLevels);
  // Symbol i drawn from, and priced under, table level(i) * channels + i % channels.
  std::uniform_int_distribution<uint32_t> slot(0, (1u << 16) - 1);
  std::vector<int32_t> s(n);
  double bits = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t t = levels[i / kRow] * kChannels + i % kChannels;
    const uint32_t *r = m.row(t);
    for (;;) {
      const uint32_t j =
          static_cast<uint32_t>(std::upper_bound(r, r + m.lengths[t], slot(rng)) - r) - 1;
      if (j + 2 >= m.lengths[t]) continue; // no escapes: the cross-entropy is then exact
      s[i] = m.offsets[t] + static_cast<int32_t>(j);
      bits -= std::log2(m.width(t, j) / 65536.0);
      break;
    }
  }
  nwc_cdf_model cm = *m.get();
  cm.channel_count = kChannels;
  cm.level_count = kLevels;
  cm.row_length = kRow;
  cm.row_levels = levels.data();
  for (int64_t k : {1, 4}) {
    CAPTURE(k);
    Instance inst(kId, interleave(k));
    REQUIRE(inst.ok());
    const std::vector<uint8_t> stream = round_trip(inst, s, &cm);
    std::printf("rans level tables interleave %lld: cross-entropy %.0f B  coded %zu B\n",
                static_cast<long long>(k), bits / 8, stream.size());
    CHECK(static_cast<double>(stream.size()) <= 1.01 * bits / 8);
    CHECK(static_cast<double>(stream.size()) >= 0.99 * bits / 8);
    // The same symbols read with other row levels are not these symbols.
    std::vector<uint8_t> other = levels;
    for (auto &l : other) l = static_cast<uint8_t>((l + 1) % kLevels);
    nwc_cdf_model wrong = cm;
    wrong.row_levels = other.data();
    std::vector<int32_t> back(n);
    if (decode_with(inst, stream, &wrong, back) == NWC_OK) CHECK(back != s);
  }
  Instance inst(kId, interleave(4));
  REQUIRE(inst.ok());
  std::vector<uint8_t> stream;
  SUBCASE("without row levels every symbol uses default_level") {
    std::vector<uint8_t> twos(levels.size(), 2);
    nwc_cdf_model rows2 = cm;
    rows2.row_levels = twos.data();
    nwc_cdf_model def2 = cm;
    def2.row_levels = nullptr;
    def2.default_level = 2;
    const std::vector<int32_t> few(s.begin(), s.begin() + 4000);
    std::vector<uint8_t> a, b;
    REQUIRE(encode_with(inst, few, &rows2, a) == NWC_OK);
    REQUIRE(encode_with(inst, few, &def2, b) == NWC_OK);
    CHECK(a == b);
    round_trip(inst, few, &def2);
  }
  SUBCASE("a level outside the tables is refused") {
    levels[levels.size() / 2] = kLevels;
    CHECK(encode_with(inst, s, &cm, stream) == NWC_E_INVALID_ARG);
    CHECK(std::string(inst.last_error()).find("level 3") != std::string::npos);
    nwc_cdf_model def = cm;
    def.row_levels = nullptr;
    def.default_level = kLevels;
    CHECK(encode_with(inst, s, &def, stream) == NWC_E_INVALID_ARG);
    nwc_cdf_model no_row = cm;
    no_row.row_length = 0;
    CHECK(encode_with(inst, s, &no_row, stream) == NWC_E_INVALID_ARG);
  }
  SUBCASE("a model from a transform built before 1.7 is read as one set of tables") {
    nwc_cdf_model old = cm;
    old.struct_size = offsetof(nwc_cdf_model, level_count);
    old.level_count = 0xFFFFu; // beyond the old struct: never read
    std::vector<int32_t> plain(s.begin(), s.begin() + 4000);
    for (size_t i = 0; i < plain.size(); ++i) plain[i] = m.offsets[i % kChannels] + 1;
    const std::vector<uint8_t> a = round_trip(inst, plain, &old);
    nwc_cdf_model one = cm;
    one.level_count = 1;
    std::vector<uint8_t> b;
    REQUIRE(encode_with(inst, plain, &one, b) == NWC_OK);
    CHECK(a == b);
  }
}

TEST_CASE("rans: a model stream needs the model, and forged models are rejected") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::mt19937_64 rng(1);
  Model good = make_model(4, 16);
  const auto s = sample(good, rng, 100, true);
  std::vector<uint8_t> stream = round_trip(inst, s, good.get());
  std::vector<int32_t> out(s.size());
  CHECK(decode_with(inst, stream, nullptr, out) == NWC_E_INVALID_ARG);

  auto expect_rejected = [&](Model &m) {
    std::vector<uint8_t> tmp;
    CHECK(encode_with(inst, s, m.get(), tmp) == NWC_E_INVALID_ARG);
    CHECK(decode_with(inst, stream, m.get(), out) == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("CDF model") != std::string::npos);
  };
  SUBCASE("precision 0") {
    Model m = good;
    m.precision = 0;
    expect_rejected(m);
  }
  SUBCASE("precision 17") {
    Model m = good;
    m.precision = 17;
    expect_rejected(m);
  }
  SUBCASE("last entry is not 2^precision") {
    Model m = good;
    m.row(1)[m.lengths[1] - 1] -= 1;
    expect_rejected(m);
  }
  SUBCASE("cdf[0] != 0") {
    Model m = good;
    m.row(2)[0] = 1;
    expect_rejected(m);
  }
  SUBCASE("not monotone") {
    Model m = good;
    std::swap(m.row(0)[2], m.row(0)[3]);
    expect_rejected(m);
  }
  SUBCASE("length above max_length") {
    Model m = good;
    m.lengths[3] = m.max_length + 1;
    expect_rejected(m);
  }
  SUBCASE("length below 2") {
    Model m = good;
    m.lengths[0] = 1;
    expect_rejected(m);
  }
  SUBCASE("huge length") {
    Model m = good;
    m.lengths[0] = 0xFFFFFFFFu;
    expect_rejected(m);
  }
  SUBCASE("null tables and no channels") {
    Model m = good;
    const nwc_cdf_model *p = m.get();
    nwc_cdf_model copy = *p;
    std::vector<uint8_t> tmp;
    copy.cdfs = nullptr;
    CHECK(encode_with(inst, s, &copy, tmp) == NWC_E_INVALID_ARG);
    copy = *p;
    copy.channel_count = 0;
    CHECK(encode_with(inst, s, &copy, tmp) == NWC_E_INVALID_ARG);
    CHECK(decode_with(inst, stream, &copy, out) == NWC_E_INVALID_ARG);
    copy = *p;
    copy.struct_size = 4;
    CHECK(decode_with(inst, stream, &copy, out) == NWC_E_INVALID_ARG);
  }
}

TEST_CASE("rans: forged static streams are rejected") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  std::vector<int32_t> out(4);
  const std::vector<uint8_t> state = {0x00, 0x00, 0x80, 0x00}; // kL, little-endian
  auto stream = [&](std::vector<uint8_t> table, size_t states = 1, uint8_t tag = 0x01) {
    std::vector<uint8_t> b = {1, tag};
    b.insert(b.end(), table.begin(), table.end());
    for (size_t i = 0; i < states; ++i) b.insert(b.end(), state.begin(), state.end());
    return b;
  };
  auto rejected = [&](const std::vector<uint8_t> &b, size_t n = 4) {
    std::vector<int32_t> o(n);
    const nwc_status st = decode_with(inst, b, nullptr, o);
    CHECK(st == NWC_E_CORRUPT_STREAM);
    return inst.last_error();
  };
  // A = 2, min 0 (zigzag 0), frequencies 32768 + 32768 (varint 0x80 0x80 0x02).
  const std::vector<uint8_t> ok_table = {2, 0, 0x80, 0x80, 0x02, 0x80, 0x80, 0x02};
  {
    std::vector<int32_t> none;
    CHECK(decode_with(inst, stream(ok_table), nullptr, none) == NWC_OK); // 0 symbols: valid
  }
  rejected(stream(ok_table), 1); // no payload bytes for a symbol
  rejected({});
  rejected({1});
  rejected({2, 0x01});                 // unknown version
  rejected(stream(ok_table, 1, 0x07)); // unknown mode
  rejected(stream(ok_table, 1, 0x31)); // interleave code 3
  rejected(stream({}, 0, 0x10));       // raw mode with an interleave code
  rejected(stream(ok_table, 4, 0x21)); // interleave 4, no payload for 4 symbols
  rejected(stream({2, 0, 0x80, 0x80, 0x02, 0x80, 0x80, 0x01}));          // sum != 2^16
  rejected(stream({2, 0, 0x80, 0x80, 0x04, 0x01}));                      // freq 65536
  rejected(stream({2, 0, 0xFF, 0xFF, 0x03, 0x00, 0x00, 0x00}));          // zero freq via two gaps
  rejected(stream({1, 0, 0x80, 0x80, 0x04}));                            // alphabet 1
  rejected(stream({0x80, 0x80, 0x04, 0}));                               // alphabet 65536
  rejected(stream({0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0}));                   // alphabet 2^32-1
  rejected(stream({0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}));          // endless varint
  rejected(stream({0x82, 0x00, 0, 0x80, 0x80, 0x02, 0x80, 0x80, 0x02})); // overlong varint
  // min INT32_MAX then a second value above it.
  rejected(stream({2, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 0x80, 0x80, 0x02, 0x80, 0x80, 0x02}));
  // min below INT32_MIN (zig-zag 2^32 + 1).
  rejected(stream({2, 0x81, 0x80, 0x80, 0x80, 0x10, 0x80, 0x80, 0x02, 0x80, 0x80, 0x02}));
  // A gap that leaves int32.
  rejected(stream({2, 0, 0x80, 0x80, 0x02, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x80, 0x80, 0x02}));
  // States out of range.
  {
    std::vector<uint8_t> b = {1, 0x01};
    b.insert(b.end(), ok_table.begin(), ok_table.end());
    for (int x : {0x00, 0x00, 0x00, 0x80}) b.push_back(static_cast<uint8_t>(x)); // 2^31
    rejected(b, 0);
    b.back() = 0x00;
    b[b.size() - 2] = 0x10; // 0x00100000, below 2^23
    rejected(b, 0);
  }
  CHECK(kL == 0x00800000u);
  // Trailing garbage after a valid zero-symbol stream.
  auto t = stream(ok_table);
  t.push_back(0);
  rejected(t, 0);
}

TEST_CASE("rans: wrong symbol counts are rejected in every mode") {
  std::mt19937_64 rng(2);
  Model m = make_model(16, 16);
  for (int64_t k : {1, 2, 4}) {
    Instance inst(kId, interleave(k));
    REQUIRE(inst.ok());
    struct Case {
      std::vector<int32_t> s;
      const nwc_cdf_model *model;
    };
    std::vector<Case> cases = {
        {laplace_like(rng, 3001, 0.3, 0), nullptr}, {std::vector<int32_t>(500, 4), nullptr},
        {uniform_bits(rng, 257, 1, 0), nullptr},    {{INT32_MIN, INT32_MAX, 0}, nullptr},
        {sample(m, rng, 3001, true), m.get()},      {sample(m, rng, 7, true), m.get()}};
    for (auto &c : cases) {
      std::vector<uint8_t> stream;
      REQUIRE(encode_with(inst, c.s, c.model, stream) == NWC_OK);
      for (size_t n :
           {size_t{0}, c.s.size() - 1, c.s.size() + 1, c.s.size() + 2, c.s.size() + 64}) {
        CAPTURE(n);
        std::vector<int32_t> out(n);
        CHECK(decode_with(inst, stream, c.model, out) == NWC_E_CORRUPT_STREAM);
      }
    }
  }
}

// A corrupt stream is NWC_E_CORRUPT_STREAM; one that claims a CDF model when none was given is
// NWC_E_INVALID_ARG (the caller's arguments do not match the stream).
bool acceptable(nwc_status st, const nwc_cdf_model *model) {
  return st == NWC_OK || st == NWC_E_CORRUPT_STREAM || (!model && st == NWC_E_INVALID_ARG);
}

TEST_CASE("rans: every truncation and random bit flips never crash") {
  std::mt19937_64 rng(7);
  Model m = make_model(16, 16);
  for (int64_t k : {1, 2, 4}) {
    Instance inst(kId, interleave(k));
    REQUIRE(inst.ok());
    std::vector<std::pair<std::vector<int32_t>, const nwc_cdf_model *>> cases;
    cases.push_back({laplace_like(rng, 700, 0.3, 0), nullptr});
    cases.push_back({uniform_bits(rng, 300, 9, -5), nullptr});
    cases.push_back({uniform_bits(rng, 300, 30, -5), nullptr}); // raw
    {
      auto s = sample(m, rng, 700, true);
      s[5] = INT32_MIN;
      s[77] = INT32_MAX;
      cases.push_back({s, m.get()});
    }
    for (auto &[sym, model] : cases) {
      std::vector<uint8_t> stream;
      REQUIRE(encode_with(inst, sym, model, stream) == NWC_OK);
      std::vector<int32_t> out(sym.size());
      for (size_t len = 0; len < stream.size(); ++len) {
        const std::vector<uint8_t> cut(stream.begin(), stream.begin() + static_cast<long>(len));
        CHECK(decode_with(inst, cut, model, out) == NWC_E_CORRUPT_STREAM);
      }
      std::uniform_int_distribution<size_t> pos(0, stream.size() - 1);
      std::uniform_int_distribution<int> bit(0, 7);
      int ok = 0, same = 0;
      for (int trial = 0; trial < 3000; ++trial) {
        std::vector<uint8_t> bad = stream;
        const int flips = 1 + trial % 4;
        for (int f = 0; f < flips; ++f) bad[pos(rng)] ^= static_cast<uint8_t>(1u << bit(rng));
        const nwc_status st = decode_with(inst, bad, model, out);
        CAPTURE(st);
        CAPTURE(inst.last_error());
        CHECK(acceptable(st, model));
        ok += st == NWC_OK;
        same += st == NWC_OK && out == sym;
      }
      // Random garbage of every small length.
      for (size_t len = 0; len < 64; ++len) {
        std::vector<uint8_t> junk(len);
        for (auto &b : junk) b = static_cast<uint8_t>(rng());
        if (len > 0) junk[0] = 1;
        const nwc_status st = decode_with(inst, junk, model, out);
        CAPTURE(st);
        CHECK(acceptable(st, model));
      }
      MESSAGE("mode " << int{mode_of(stream)} << ": bit-flipped streams that still decoded: " << ok
                      << " / 3000 (" << same << " to the original symbols)");
    }
  }
}

TEST_CASE("rans: a failing sink is reported") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  std::vector<int32_t> s(1000, 0);
  for (size_t i = 0; i < s.size(); i += 7) s[i] = static_cast<int32_t>(i % 13);
  View in(s.data(), 1, static_cast<int64_t>(s.size()));
  VecSink sink;
  sink.fail_after = 10;
  CHECK(e->encode(inst.get(), in.get(), nullptr, sink.get()) == NWC_E_IO);
}
