// nwc.chunk.column through its C ABI: column-major vectors down each input column, zero padding
// dropped on merge, row normalization with the scales a 1.2 host stores (rounded to their storage
// dtype), the row_scales and chunk_columns hooks, and the errors for inputs it refuses.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <utility>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.chunk.column";

// What the host does to a scale before storing it: round to nearest even in fp16 (finite range).
float round_f16(float f) {
  const double a = std::fabs(static_cast<double>(f));
  if (a == 0.0) return f;
  int e = 0;
  std::frexp(a, &e); // a = m 2^e, m in [0.5, 1)
  const int quantum = std::max(e - 1, -14) - 10;
  const double r = std::ldexp(std::nearbyint(std::ldexp(a, -quantum)), quantum);
  return static_cast<float>(std::copysign(r, static_cast<double>(f)));
}
// ... and in bf16 (finite values only).
float round_bf16(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r = 0.0f;
  std::memcpy(&r, &u, 4);
  return r;
}
float round_to(uint32_t dtype, float f) {
  if (dtype == NWC_DTYPE_F16) return round_f16(f);
  if (dtype == NWC_DTYPE_BF16) return round_bf16(f);
  return f;
}

struct Chunked {
  nwc_status status = NWC_E_INTERNAL;
  nwc_chunk_geometry geo{};
  std::vector<float> chunks;
  std::vector<uint8_t> side;
};

Chunked split(Instance &inst, const Block &block, const std::vector<float> &values) {
  Chunked out;
  const auto &c = chunker_interface(inst);
  out.status = c.plan(inst.get(), block.get(), &out.geo);
  if (out.status != NWC_OK) return out;
  out.chunks.assign(static_cast<size_t>(out.geo.count * out.geo.length), -999.0f);
  View in(values.data(), block.info.rows, block.info.col_end - block.info.col_begin);
  View ch(out.chunks.data(), out.geo.count, out.geo.length);
  VecSink side;
  out.status = c.split(inst.get(), block.get(), in.get(), ch.get(), side.get());
  out.side = side.bytes;
  return out;
}

nwc_status merge(Instance &inst, const Block &block, const Chunked &ch, std::vector<float> &values,
                 nwc_bytes side = nwc_bytes{nullptr, 0}) {
  const auto &c = chunker_interface(inst);
  const int64_t width = block.info.col_end - block.info.col_begin;
  values.assign(static_cast<size_t>(block.info.rows * width), -777.0f);
  View cv(ch.chunks.data(), ch.geo.count, ch.geo.length);
  View out(values.data(), block.info.rows, width);
  return c.merge(inst.get(), block.get(), cv.get(), side, out.get());
}

std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto &x : v) x = d(rng);
  return v;
}

// A [rows, cols] weight whose rows have very different spreads and offsets.
std::vector<float> uneven_rows(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const double spread =
        std::ldexp(1.0 + 0.37 * static_cast<double>(r % 3), static_cast<int>(r % 11) - 6);
    const double offset = 0.25 * static_cast<double>(r % 5) - 0.5;
    for (int64_t c = 0; c < cols; ++c)
      w[static_cast<size_t>(r * cols + c)] = static_cast<float>(offset + spread * d(rng));
  }
  return w;
}

// Columns [begin, end) of a row-major [rows, cols] matrix.
std::vector<float> columns_of(const std::vector<float> &w, int64_t rows, int64_t cols,
                              int64_t begin, int64_t end) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = begin; c < end; ++c) out.push_back(w[static_cast<size_t>(r * cols + c)]);
  return out;
}

// Unbiased standard deviation, the test's own oracle.
double std_dev(const std::vector<double> &x) {
  double mean = 0.0;
  for (double v : x) mean += v;
  mean /= static_cast<double>(x.size());
  double ss = 0.0;
  for (double v : x) ss += (v - mean) * (v - mean);
  return std::sqrt(ss / static_cast<double>(x.size() - 1));
}

double float_ulp(float x) {
  return std::ldexp(1.0, std::ilogb(std::max(std::fabs(x), 1e-37f)) - 23);
}

} // namespace

TEST_CASE("column: descriptor and interface") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_CHUNKER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 3);
  CHECK(std::string(d.options[0].key) == "chunk");
  CHECK(d.options[0].default_value.u.i == 16);
  CHECK(d.options[0].min == 1);
  CHECK(d.options[0].max == 4096);
  CHECK(std::string(d.options[1].key) == "normalize");
  CHECK(std::string(d.options[1].default_value.u.s) == "row");
  CHECK(std::string(d.options[2].key) == "scale_dtype");
  CHECK(std::string(d.options[2].default_value.u.s) == "f16");
  for (uint32_t i = 0; i < d.option_count; ++i) {
    CAPTURE(i);
    CHECK(d.options[i].doc != nullptr);
    CHECK((d.options[i].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0);
  }
  const auto &c = chunker_interface(inst);
  REQUIRE(c.struct_size >= sizeof(nwc_chunker_interface));
  CHECK(static_cast<bool>(c.row_scales));
  CHECK(static_cast<bool>(c.chunk_columns));
}

TEST_CASE("column: chunks run down each column, column-major, zero-padded") {
  Instance inst(kId, {opt_int("chunk", 2), opt_enum("normalize", "none")});
  REQUIRE(inst.ok());
  Block block("w", 5, 10, 4, 7); // 5 rows, block width 3
  std::vector<float> values;
  for (int r = 0; r < 5; ++r)
    for (int j = 0; j < 3; ++j) values.push_back(static_cast<float>(10 * r + j + 1));
  Chunked ch = split(inst, block, values);
  REQUIRE(ch.status == NWC_OK);
  CHECK(ch.geo.count == 9); // 3 columns x ceil(5 / 2)
  CHECK(ch.geo.length == 2);
  CHECK(ch.side.empty());
  CHECK(ch.chunks == std::vector<float>{1, 11, 21, 31, 41, 0,   // column 4
                                        2, 12, 22, 32, 42, 0,   // column 5
                                        3, 13, 23, 33, 43, 0}); // column 6
  std::vector<float> back;
  REQUIRE(merge(inst, block, ch, back) == NWC_OK);
  CHECK(back == values);
}

TEST_CASE("column: round trip without normalization is exact and drops the padding") {
  struct Case {
    int64_t rows, cols, col_begin, col_end, chunk;
  };
  const Case cases[] = {
      {64, 96, 0, 96, 16}, {172, 96, 0, 96, 16}, {172, 300, 128, 300, 16}, {64, 40, 17, 18, 16},
      {172, 8, 0, 8, 5},   {172, 8, 3, 8, 1},    {64, 12, 0, 12, 200},     {1, 3, 0, 3, 16},
  };
  for (const Case &t : cases) {
    CAPTURE(t.rows);
    CAPTURE(t.cols);
    CAPTURE(t.col_begin);
    CAPTURE(t.col_end);
    CAPTURE(t.chunk);
    Instance inst(kId, {opt_int("chunk", t.chunk), opt_enum("normalize", "none")});
    REQUIRE(inst.ok());
    Block block("model.layers.0.mlp.up_proj.weight", t.rows, t.cols, t.col_begin, t.col_end);
    const int64_t width = t.col_end - t.col_begin;
    const int64_t per_col = (t.rows + t.chunk - 1) / t.chunk;
    const auto values = random_values(static_cast<size_t>(t.rows * width),
                                      static_cast<uint64_t>(t.rows * 1000 + width));
    Chunked ch = split(inst, block, values);
    REQUIRE(ch.status == NWC_OK);
    CHECK(ch.geo.count == width * per_col);
    CHECK(ch.geo.length == t.chunk);
    CHECK(ch.side.empty());
    // Chunk j * per_col + v holds rows [v chunk, (v + 1) chunk) of block column j, then zeros.
    for (int64_t j = 0; j < width; ++j)
      for (int64_t v = 0; v < per_col; ++v)
        for (int64_t i = 0; i < t.chunk; ++i) {
          const int64_t r = v * t.chunk + i;
          const float want = r < t.rows ? values[static_cast<size_t>(r * width + j)] : 0.0f;
          REQUIRE(ch.chunks[static_cast<size_t>((j * per_col + v) * t.chunk + i)] == want);
        }
    // Whatever the decoded padding holds never comes back as weights.
    Chunked decoded = ch;
    for (int64_t j = 0; j < width; ++j)
      for (int64_t r = t.rows; r < per_col * t.chunk; ++r)
        decoded.chunks[static_cast<size_t>(j * per_col * t.chunk + r)] = 1e9f;
    std::vector<float> back;
    REQUIRE(merge(inst, block, decoded, back) == NWC_OK);
    CHECK(back == values);
  }
}

TEST_CASE("column: normalized round trip with host-rounded scales") {
  for (const char *dtype : {"f16", "bf16", "f32"})
    for (int64_t rows : {64, 172}) {
      const std::string dtype_name = dtype;
      CAPTURE(dtype_name);
      CAPTURE(rows);
      const int64_t cols = 48;
      Instance inst(kId, {opt_enum("normalize", "row"), opt_enum("scale_dtype", dtype)});
      REQUIRE(inst.ok());
      const auto weight = uneven_rows(rows, cols, static_cast<uint64_t>(rows));
      Block whole("t", rows, cols, 0, cols);
      std::vector<float> scales;
      uint32_t storage = 0;
      REQUIRE(chunker_row_scales(inst, whole, weight, scales, storage) == NWC_OK);
      for (float &s : scales) s = round_to(storage, s); // as the host stores them

      for (const auto &range : {std::pair<int64_t, int64_t>{0, 20}, {20, 48}}) {
        const int64_t begin = range.first, end = range.second;
        CAPTURE(begin);
        Block block("t", rows, cols, begin, end);
        set_tensor_side(block, scales.data());
        const int64_t width = end - begin;
        const int64_t per_col = (rows + 15) / 16;
        const auto values = columns_of(weight, rows, cols, begin, end);
        Chunked ch = split(inst, block, values);
        REQUIRE(ch.status == NWC_OK);
        CHECK(ch.side.empty());
        for (int64_t j = 0; j < width; ++j)
          for (int64_t r = 0; r < per_col * 16; ++r) {
            const float got = ch.chunks[static_cast<size_t>(j * per_col * 16 + r)];
            if (r >= rows) {
              REQUIRE(got == 0.0f); // zero padding in the normalized domain
              continue;
            }
            const float x = values[static_cast<size_t>(r * width + j)];
            const auto s = static_cast<double>(scales[static_cast<size_t>(r)]);
            REQUIRE(got == static_cast<float>(static_cast<double>(x) / s));
          }
        std::vector<float> back;
        REQUIRE(merge(inst, block, ch, back) == NWC_OK);
        int exact = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < width; ++j) {
            const size_t i = static_cast<size_t>(r * width + j);
            const float c = ch.chunks[static_cast<size_t>(j * per_col * 16 + r)];
            const auto s = static_cast<double>(scales[static_cast<size_t>(r)]);
            REQUIRE(back[i] == static_cast<float>(static_cast<double>(c) * s));
            // x -> x / s is not injective on floats, so at most one ulp is lost.
            REQUIRE(std::fabs(static_cast<double>(back[i]) - values[i]) <= float_ulp(values[i]));
            exact += back[i] == values[i];
          }
        CHECK(exact > rows * width / 2);
      }
    }

  // With power-of-two scales the division is exact and so is the round trip.
  Instance inst(kId);
  REQUIRE(inst.ok());
  const int64_t rows = 172, cols = 24;
  std::vector<float> scales(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    scales[static_cast<size_t>(r)] = std::ldexp(1.0f, static_cast<int>(r % 9) - 4);
  Block block("t", rows, cols, 0, cols);
  set_tensor_side(block, scales.data());
  const auto values = uneven_rows(rows, cols, 9);
  Chunked ch = split(inst, block, values);
  REQUIRE(ch.status == NWC_OK);
  std::vector<float> back;
  REQUIRE(merge(inst, block, ch, back) == NWC_OK);
  CHECK(back == values);
}

TEST_CASE("column: normalized rows have unit std over the whole tensor") {
  const int64_t rows = 172, cols = 150;
  const auto weight = uneven_rows(rows, cols, 42);
  for (const char *dtype : {"f16", "bf16", "f32"}) {
    const std::string dtype_name = dtype;
    CAPTURE(dtype_name);
    Instance inst(kId, {opt_enum("scale_dtype", dtype)});
    REQUIRE(inst.ok());
    Block whole("t", rows, cols, 0, cols);
    std::vector<float> scales;
    uint32_t storage = 0;
    REQUIRE(chunker_row_scales(inst, whole, weight, scales, storage) == NWC_OK);
    for (float &s : scales) s = round_to(storage, s);
    // Chunk the tensor in three blocks and collect every row's normalized values from the chunks.
    std::vector<std::vector<double>> normalized(static_cast<size_t>(rows));
    const int64_t per_col = (rows + 15) / 16;
    for (const auto &range : {std::pair<int64_t, int64_t>{0, 64}, {64, 128}, {128, 150}}) {
      const int64_t begin = range.first, end = range.second;
      Block block("t", rows, cols, begin, end);
      set_tensor_side(block, scales.data());
      Chunked ch = split(inst, block, columns_of(weight, rows, cols, begin, end));
      REQUIRE(ch.status == NWC_OK);
      for (int64_t j = 0; j < end - begin; ++j)
        for (int64_t r = 0; r < rows; ++r)
          normalized[static_cast<size_t>(r)].push_back(
              ch.chunks[static_cast<size_t>(j * per_col * 16 + r)]);
    }
    // The stored scale differs from the exact deviation by its rounding: 2^-11 (f16), 2^-8 (bf16).
    const double tol = std::string(dtype) == "f16"    ? std::ldexp(1.0, -10)
                       : std::string(dtype) == "bf16" ? std::ldexp(1.0, -7)
                                                      : 1e-6;
    for (int64_t r = 0; r < rows; ++r) {
      CAPTURE(r);
      REQUIRE(normalized[static_cast<size_t>(r)].size() == static_cast<size_t>(cols));
      CHECK(std::fabs(std_dev(normalized[static_cast<size_t>(r)]) - 1.0) <= tol);
    }
  }
}

TEST_CASE("column: row_scales reports the storage dtype and the row deviations") {
  const int64_t rows = 20, cols = 33;
  const auto weight = uneven_rows(rows, cols, 5);
  Block whole("t", rows, cols, 0, cols);
  struct Want {
    const char *normalize, *dtype;
    uint32_t code;
  };
  for (const Want &w :
       {Want{"row", "f32", NWC_DTYPE_F32}, Want{"row", "f16", NWC_DTYPE_F16},
        Want{"row", "bf16", NWC_DTYPE_BF16}, Want{"row", "log8", NWC_ROW_SCALES_LOG8},
        Want{"none", "f32", 0u}, Want{"none", "f16", 0u}, Want{"none", "bf16", 0u}}) {
    const std::string normalize = w.normalize, dtype = w.dtype;
    CAPTURE(normalize);
    CAPTURE(dtype);
    Instance inst(kId, {opt_enum("normalize", w.normalize), opt_enum("scale_dtype", w.dtype)});
    REQUIRE(inst.ok());
    std::vector<float> scales;
    uint32_t storage = 12345;
    REQUIRE(chunker_row_scales(inst, whole, weight, scales, storage) == NWC_OK);
    CHECK(storage == w.code);
    if (w.code == 0) continue;
    for (int64_t r = 0; r < rows; ++r) {
      CAPTURE(r);
      std::vector<double> row(weight.begin() + r * cols, weight.begin() + (r + 1) * cols);
      const double want = std_dev(row);
      CHECK(std::fabs(scales[static_cast<size_t>(r)] - want) <= 1e-6 * want);
    }
  }
  // log8 needs a host that stores it (ABI 1.6); an older host gets a clear refusal, not a code it
  // would reject later as a corrupt stream.
  {
    Instance old_host(kId, {opt_enum("scale_dtype", "log8")});
    REQUIRE(old_host.ok());
    old_host.host.host.abi_version = (1u << 16) | 5u;
    std::vector<float> scales;
    uint32_t storage = 0;
    CHECK(chunker_row_scales(old_host, whole, weight, scales, storage) == NWC_E_VERSION);
    CHECK(old_host.last_error().find(
              "needs a host of ABI 1.6 or later; this host speaks ABI 1.5") != std::string::npos);
  }
  // A 1-D view of the wrong length and a partial weight are refused.
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &c = chunker_interface(inst);
  std::vector<float> short_scales(rows - 1);
  uint32_t storage = 0;
  View wv(weight.data(), rows, cols);
  View1D sv(short_scales.data(), rows - 1);
  CHECK(c.row_scales(inst.get(), whole.get(), wv.get(), sv.get(), &storage) == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("expected [20]") != std::string::npos);
  std::vector<float> scales(rows);
  View part(weight.data(), rows, cols - 1);
  View1D sv2(scales.data(), rows);
  CHECK(c.row_scales(inst.get(), whole.get(), part.get(), sv2.get(), &storage) ==
        NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("whole tensor [20, 33]") != std::string::npos);
}

TEST_CASE("column: zero-std rows, one-column tensors and extreme rows get safe scales") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const int64_t cols = 8;
  std::vector<float> weight;
  for (int c = 0; c < cols; ++c) weight.push_back(0.0f);                           // all zero
  for (int c = 0; c < cols; ++c) weight.push_back(-3.25f);                         // constant
  for (int c = 0; c < cols; ++c) weight.push_back(c % 2 ? 2.0f : 0.0f);            // std > 0
  for (int c = 0; c < cols; ++c) weight.push_back(1e-12f * static_cast<float>(c)); // tiny
  for (int c = 0; c < cols; ++c) weight.push_back(1e7f * static_cast<float>(c));   // huge
  Block whole("t", 5, cols, 0, cols);
  std::vector<float> scales;
  uint32_t storage = 0;
  REQUIRE(chunker_row_scales(inst, whole, weight, scales, storage) == NWC_OK);
  CHECK(storage == NWC_DTYPE_F16);
  CHECK(scales[0] == 1.0f);
  CHECK(scales[1] == 1.0f);
  CHECK(std::fabs(scales[2] - std::sqrt(8.0f / 7.0f)) < 1e-6f);
  CHECK(scales[3] == std::ldexp(1.0f, -24)); // clamped to the smallest positive fp16
  CHECK(scales[4] == 65504.0f);              // clamped to the largest finite fp16
  Instance bf(kId, {opt_enum("scale_dtype", "bf16")});
  REQUIRE(chunker_row_scales(bf, whole, weight, scales, storage) == NWC_OK);
  CHECK(scales[3] > 1e-12f); // inside the bf16 range: not clamped
  CHECK(scales[3] < 1e-11f);
  CHECK(scales[4] > 1e7f);

  // A single column has no spread to measure.
  const std::vector<float> column{5.0f, -1.0f, 0.0f};
  Block one("t", 3, 1, 0, 1);
  REQUIRE(chunker_row_scales(inst, one, column, scales, storage) == NWC_OK);
  CHECK(scales == std::vector<float>{1.0f, 1.0f, 1.0f});

  // Non-finite weights are refused.
  std::vector<float> bad = weight;
  bad[13] = NAN;
  CHECK(chunker_row_scales(inst, whole, bad, scales, storage) == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("non-finite value at row 1, column 5") != std::string::npos);
}

TEST_CASE("column: chunk_columns maps every chunk to its input column") {
  struct Case {
    int64_t rows, cols, col_begin, col_end, chunk;
  };
  for (const Case &t : {Case{172, 300, 128, 300, 16}, Case{64, 64, 0, 64, 16}, Case{5, 9, 2, 5, 2},
                        Case{3, 4, 1, 2, 16}}) {
    CAPTURE(t.rows);
    CAPTURE(t.chunk);
    Instance inst(kId, {opt_int("chunk", t.chunk)});
    REQUIRE(inst.ok());
    Block block("t", t.rows, t.cols, t.col_begin, t.col_end);
    nwc_chunk_geometry geo{};
    REQUIRE(chunker_interface(inst).plan(inst.get(), block.get(), &geo) == NWC_OK);
    std::vector<int64_t> columns;
    REQUIRE(chunker_chunk_columns(inst, block, geo.count, columns) == NWC_OK);
    const int64_t per_col = (t.rows + t.chunk - 1) / t.chunk;
    for (int64_t k = 0; k < geo.count; ++k) {
      CAPTURE(k);
      REQUIRE(columns[static_cast<size_t>(k)] == t.col_begin + k / per_col);
    }
    CHECK(columns.back() == t.col_end - 1);
  }
  Instance inst(kId);
  REQUIRE(inst.ok());
  Block block("t", 5, 9, 2, 5);
  std::vector<int64_t> columns;
  CHECK(chunker_chunk_columns(inst, block, 4, columns) == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("expected [3]") != std::string::npos);
}

TEST_CASE("column: normalize row without host row scales is refused") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto values = random_values(64 * 4, 1);
  Block block("blk.0.attn_q", 64, 4, 0, 4);
  Chunked ch = split(inst, block, values);
  CHECK(ch.status == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("'blk.0.attn_q'") != std::string::npos);
  CHECK(inst.last_error().find("row scales") != std::string::npos);
  CHECK(inst.last_error().find("ABI 1.2") != std::string::npos);
  ch.geo = {4 * 4, 16};
  ch.chunks.assign(64 * 4, 0.0f);
  std::vector<float> back;
  CHECK(merge(inst, block, ch, back) == NWC_E_INVALID_ARG);
  CHECK(inst.last_error().find("row scales") != std::string::npos);

  // A 1.1 host's block info ends before row_scales: the pointer behind it is not read.
  std::vector<float> ones(64, 1.0f);
  set_tensor_side(block, ones.data());
  block.info.struct_size = static_cast<uint32_t>(offsetof(nwc_block_info, row_scales));
  CHECK(split(inst, block, values).status == NWC_E_INVALID_ARG);
  block.info.struct_size = sizeof(nwc_block_info);
  CHECK(split(inst, block, values).status == NWC_OK);

  // normalize = "none" needs no scales.
  Instance none(kId, {opt_enum("normalize", "none")});
  Block plain("blk.0.attn_q", 64, 4, 0, 4);
  CHECK(split(none, plain, values).status == NWC_OK);
}

TEST_CASE("column: bad row scales, inputs, shapes and side bytes are refused") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &c = chunker_interface(inst);
  const int64_t rows = 20, width = 3;
  const auto values = random_values(rows * width, 2);
  std::vector<float> scales(rows, 0.5f);
  Block block("model.w", rows, 10, 7, 10);
  set_tensor_side(block, scales.data());
  Chunked good = split(inst, block, values);
  REQUIRE(good.status == NWC_OK);
  std::vector<float> back;

  SUBCASE("non-empty side bytes") {
    const uint8_t junk[2] = {0, 0};
    CHECK(merge(inst, block, good, back, nwc_bytes{junk, 2}) == NWC_E_CORRUPT_STREAM);
    CHECK(inst.last_error().find("no side info") != std::string::npos);
  }
  SUBCASE("row scales that are not positive and finite") {
    for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
      CAPTURE(bad);
      scales[11] = bad;
      CHECK(split(inst, block, values).status == NWC_E_INVALID_ARG);
      CHECK(inst.last_error().find("row 11") != std::string::npos);
      CHECK(merge(inst, block, good, back) == NWC_E_CORRUPT_STREAM);
    }
  }
  SUBCASE("non-finite values and overflow after normalization") {
    std::vector<float> bad = values;
    bad[7] = INFINITY; // row 2, block column 1 = absolute column 8
    CHECK(split(inst, block, bad).status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("non-finite value at row 2, column 8") != std::string::npos);
    bad = values;
    bad[0] = 3e38f;
    scales[0] = 1e-3f;
    CHECK(split(inst, block, bad).status == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("overflows") != std::string::npos);
  }
  SUBCASE("views of the wrong shape or dtype") {
    std::vector<float> chunks(static_cast<size_t>(good.geo.count * good.geo.length));
    VecSink side;
    View in(values.data(), rows, width);
    View small(chunks.data(), good.geo.count - 1, good.geo.length);
    CHECK(c.split(inst.get(), block.get(), in.get(), small.get(), side.get()) == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("expected [6, 16]") != std::string::npos);
    View wide(values.data(), rows / 2, width * 2);
    View ch(chunks.data(), good.geo.count, good.geo.length);
    CHECK(c.split(inst.get(), block.get(), wide.get(), ch.get(), side.get()) == NWC_E_INVALID_ARG);
    CHECK(inst.last_error().find("expected [20, 3]") != std::string::npos);
    std::vector<int32_t> ints(values.size());
    View iv(ints.data(), rows, width);
    CHECK(c.split(inst.get(), block.get(), iv.get(), ch.get(), side.get()) ==
          NWC_E_UNSUPPORTED_DTYPE);
    std::vector<float> out(values.size());
    View ov(out.data(), rows, width + 1);
    CHECK(c.merge(inst.get(), block.get(), ch.get(), nwc_bytes{nullptr, 0}, ov.get()) ==
          NWC_E_INVALID_ARG);
  }
  SUBCASE("empty and inconsistent blocks") {
    nwc_chunk_geometry geo{};
    Block no_rows("w", 0, 16, 0, 16);
    CHECK(c.plan(inst.get(), no_rows.get(), &geo) == NWC_E_UNSUPPORTED_SHAPE);
    CHECK(inst.last_error().find("empty") != std::string::npos);
    Block no_cols("w", 4, 16, 5, 5);
    CHECK(c.plan(inst.get(), no_cols.get(), &geo) == NWC_E_UNSUPPORTED_SHAPE);
    Block inconsistent("w", 4, 16, 8, 20);
    CHECK(c.plan(inst.get(), inconsistent.get(), &geo) == NWC_E_INVALID_ARG);
  }
}

TEST_CASE("column: out-of-range options fail create") {
  CHECK(Instance(kId, {opt_int("chunk", 0)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("chunk", 4097)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_enum("normalize", "column")}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_enum("scale_dtype", "f8")}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("rows", 16)}).status == NWC_E_INVALID_OPTION);
  CHECK(Instance(kId, {opt_int("chunk", 4096), opt_enum("normalize", "none"),
                       opt_enum("scale_dtype", "bf16")})
            .ok());
}

TEST_CASE("column: passes the SDK's chunker checks (nwc/testing)") {
  const int64_t rows = 40, cols = 24;
  const auto weight = uneven_rows(rows, cols, 3);
  { // without normalization chunks only move values: exact
    Instance inst(kId, {opt_enum("normalize", "none")});
    REQUIRE(inst.ok());
    Block block("t", rows, cols, 0, cols);
    CHECK(check_chunker(inst, block, weight) == "");
  }
  // normalized by the host-rounded row scales: back up to float rounding
  Instance inst(kId, {opt_enum("normalize", "row"), opt_enum("scale_dtype", "f16")});
  REQUIRE(inst.ok());
  Block whole("t", rows, cols, 0, cols);
  std::vector<float> scales;
  uint32_t storage = 0;
  REQUIRE(chunker_row_scales(inst, whole, weight, scales, storage) == NWC_OK);
  for (float &s : scales) s = round_to(storage, s);
  set_tensor_side(whole, scales.data());
  CHECK(check_chunker(inst, whole, weight, 1e-6) == "");
}
