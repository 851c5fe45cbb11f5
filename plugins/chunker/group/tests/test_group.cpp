// nwc.chunk.group through its C ABI: geometry, exact split/merge round trips, padding values and
// the errors for shapes and options it refuses.
#include "nwc/testing/stage_harness.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace nwc::test;

namespace {

constexpr const char *kId = "nwc.chunk.group";

struct Chunked {
  nwc_status status = NWC_E_INTERNAL;
  nwc_chunk_geometry geo{};
  std::vector<float> chunks;
  std::vector<uint8_t> side;
};

const nwc_chunker_interface &chunker(Instance &inst) {
  const auto *c = inst.iface<nwc_chunker_interface>(NWC_CHUNKER_INTERFACE);
  REQUIRE(c != nullptr);
  return *c;
}

Chunked split(Instance &inst, const Block &block, std::vector<float> &values) {
  Chunked out;
  const auto &c = chunker(inst);
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

nwc_status merge(Instance &inst, const Block &block, Chunked &ch, std::vector<float> &values,
                 nwc_bytes side) {
  const auto &c = chunker(inst);
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

} // namespace

TEST_CASE("group: descriptor") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &d = inst.descriptor();
  CHECK(d.kind == NWC_KIND_CHUNKER);
  CHECK((d.flags & NWC_PLUGIN_DETERMINISTIC) != 0);
  REQUIRE(d.option_count == 2);
  CHECK(std::string(d.options[0].key) == "group");
  CHECK(d.options[0].default_value.u.i == 128);
  CHECK((d.options[0].flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0);
  CHECK(std::string(d.options[1].key) == "tail");
  CHECK(std::string(d.options[1].default_value.u.s) == "fit");
}

TEST_CASE("group: split/merge round trip is exact") {
  struct Case {
    int64_t rows, cols, col_begin, col_end, group;
  };
  const Case cases[] = {
      {4, 256, 0, 256, 128},  // two whole groups per row
      {3, 172, 0, 172, 32},   // 5 full groups + a 12-wide tail
      {5, 100, 0, 100, 128},  // one group, wider than the block
      {2, 300, 128, 300, 64}, // block starts at column 128, width 172
      {7, 64, 10, 43, 0},     // group 0: whole row of the block
      {1, 1, 0, 1, 16},       // a single value
      {6, 50, 49, 50, 1},     // width-1 block
  };
  for (const char *tail : {"fit", "pad"})
    for (const Case &t : cases) {
      CAPTURE(tail);
      CAPTURE(t.rows);
      CAPTURE(t.cols);
      CAPTURE(t.col_begin);
      CAPTURE(t.col_end);
      CAPTURE(t.group);
      Instance inst(kId, {opt_int("group", t.group), opt_enum("tail", tail)});
      REQUIRE(inst.ok());
      Block block("model.w", t.rows, t.cols, t.col_begin, t.col_end);
      const int64_t width = t.col_end - t.col_begin;
      auto values =
          random_values(static_cast<size_t>(t.rows * width), static_cast<uint64_t>(width));
      Chunked ch = split(inst, block, values);
      REQUIRE(ch.status == NWC_OK);
      // "fit": a block narrower than the group is one group of its width; "pad" pads it.
      const int64_t g = t.group == 0                 ? width
                        : std::string(tail) == "fit" ? std::min(t.group, width)
                                                     : t.group;
      const int64_t groups = (width + g - 1) / g;
      CHECK(ch.geo.length == g);
      CHECK(ch.geo.count == t.rows * groups);
      CHECK(ch.side.empty());

      // Chunk (r, k) holds columns [k g, k g + g) of row r, the tail padded with the last value.
      for (int64_t r = 0; r < t.rows; ++r)
        for (int64_t k = 0; k < groups; ++k)
          for (int64_t j = 0; j < g; ++j) {
            const int64_t col = std::min(k * g + j, width - 1);
            REQUIRE(ch.chunks[static_cast<size_t>((r * groups + k) * g + j)] ==
                    values[static_cast<size_t>(r * width + col)]);
          }

      std::vector<float> back;
      REQUIRE(merge(inst, block, ch, back, nwc_bytes{nullptr, 0}) == NWC_OK);
      CHECK(back == values);
    }
}

TEST_CASE("group: padding repeats the last real value") {
  Instance inst(kId, {opt_int("group", 4)});
  REQUIRE(inst.ok());
  Block block("t", 2, 6, 0, 6);
  std::vector<float> values{1, 2, 3, 4, 5, -6, 7, 8, 9, 10, -11, 12};
  Chunked ch = split(inst, block, values);
  REQUIRE(ch.status == NWC_OK);
  CHECK(ch.chunks == std::vector<float>{1, 2, 3, 4, 5, -6, -6, -6, 7, 8, 9, 10, -11, 12, 12, 12});
  // Merge ignores whatever the padding positions hold after decoding.
  ch.chunks[6] = 1e9f;
  ch.chunks[15] = -1e9f;
  std::vector<float> back;
  REQUIRE(merge(inst, block, ch, back, nwc_bytes{nullptr, 0}) == NWC_OK);
  CHECK(back == values);
}

TEST_CASE("group: tail = error refuses a short last group") {
  Instance inst(kId, {opt_int("group", 32), opt_enum("tail", "error")});
  REQUIRE(inst.ok());
  const auto &c = chunker(inst);
  nwc_chunk_geometry geo{};
  Block bad("blk.0.ffn_up", 8, 172, 0, 172);
  CHECK(c.plan(inst.get(), bad.get(), &geo) == NWC_E_UNSUPPORTED_SHAPE);
  CHECK(
      inst.last_error() ==
      "tensor 'blk.0.ffn_up': block width 172 is not a multiple of group 32 (set tail = \"pad\")");
  std::vector<float> values(8 * 172, 1.0f), chunks(8 * 6 * 32);
  View in(values.data(), 8, 172);
  View out(chunks.data(), 48, 32);
  VecSink side;
  CHECK(c.split(inst.get(), bad.get(), in.get(), out.get(), side.get()) == NWC_E_UNSUPPORTED_SHAPE);

  Block good("blk.0.ffn_up", 8, 172, 12, 172); // width 160 = 5 groups
  CHECK(c.plan(inst.get(), good.get(), &geo) == NWC_OK);
  CHECK(geo.count == 40);
  CHECK(geo.length == 32);
}

TEST_CASE("group: empty blocks, bad shapes and side bytes are refused") {
  Instance inst(kId);
  REQUIRE(inst.ok());
  const auto &c = chunker(inst);
  nwc_chunk_geometry geo{};
  Block no_rows("w", 0, 16, 0, 16);
  CHECK(c.plan(inst.get(), no_rows.get(), &geo) == NWC_E_UNSUPPORTED_SHAPE);
  CHECK(inst.last_error().find("'w'") != std::string::npos);
  CHECK(inst.last_error().find("empty") != std::string::npos);
  Block no_cols("w", 4, 16, 5, 5);
  CHECK(c.plan(inst.get(), no_cols.get(), &geo) == NWC_E_UNSUPPORTED_SHAPE);
  Block inconsistent("w", 4, 16, 8, 20);
  CHECK(c.plan(inst.get(), inconsistent.get(), &geo) == NWC_E_INVALID_ARG);

  Block block("w", 2, 16, 0, 16);
  std::vector<float> values(32, 0.5f);
  Chunked ch = split(inst, block, values);
  REQUIRE(ch.status == NWC_OK);
  std::vector<float> back;
  const uint8_t junk[1] = {0};
  CHECK(merge(inst, block, ch, back, nwc_bytes{junk, 1}) == NWC_E_CORRUPT_STREAM);

  // A chunk view of the wrong shape.
  std::vector<float> small(8);
  View in(values.data(), 2, 16);
  View out(small.data(), 1, 8);
  VecSink side;
  CHECK(c.split(inst.get(), block.get(), in.get(), out.get(), side.get()) == NWC_E_INVALID_ARG);
}

TEST_CASE("group: out-of-range options fail create") {
  Instance neg(kId, {opt_int("group", -1)});
  CHECK(neg.status == NWC_E_INVALID_OPTION);
  CHECK(neg.get() == nullptr);
  CHECK(neg.host.last().find("group") != std::string::npos);
  Instance tail(kId, {opt_enum("tail", "truncate")});
  CHECK(tail.status == NWC_E_INVALID_OPTION);
  Instance unknown(kId, {opt_int("groups", 64)});
  CHECK(unknown.status == NWC_E_INVALID_OPTION);
}

TEST_CASE("group: passes the SDK's chunker checks (nwc/testing)") {
  for (int64_t group : {32, 0})
    for (const char *tail : {"pad", "fit"}) {
      CAPTURE(group);
      const std::string tail_name = tail;
      CAPTURE(tail_name);
      Instance inst(kId, {opt_int("group", group), opt_enum("tail", tail)});
      REQUIRE(inst.ok());
      Block block("t", 6, 100, 0, 100);
      CHECK(check_chunker(inst, block, random_values(600, 7)) == "");
      Block part("t", 6, 100, 32, 100); // a later column block
      CHECK(check_chunker(inst, part, random_values(6 * 68, 8)) == "");
    }
}
