// nwc.transform.neural through its C ABI, with small codecs made here; and the codec model's CDF
// tables and codec files. (Trained-codec behaviour is tested in tests/integration/test_nwc_codec.)
#include "codec_model.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/testing/stage_harness.hpp"
#include "test_support.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <fstream>

using namespace nwc::test;
namespace neural = nwc::neural;

namespace {

nwc_option opt_path(const char *key, const char *v) {
  nwc_option o{};
  o.key = key;
  o.value.type = NWC_OPT_PATH;
  o.value.u.s = v;
  return o;
}

neural::CodecConfig tiny_config() {
  neural::CodecConfig c;
  c.width = 8;
  c.blocks = 1;
  c.latent = 4;
  return c;
}

std::string make_codec(const TempDir &dir, const std::string &name = "tiny.nwcc") {
  torch::manual_seed(7);
  neural::NwcCodec m(tiny_config());
  m->eval();
  auto path = (dir.path() / name).string();
  neural::save_codec(path, m, neural::compute_tables(m), {{"lambda", 1.0}});
  return path;
}

} // namespace

TEST_CASE("quantize_pmf keeps every symbol codable and the total exact") {
  auto cdf = neural::quantize_pmf({0.5, 0.25, 1e-12, 0.25, 0.0}, 16);
  REQUIRE(cdf.size() == 6);
  CHECK(cdf.front() == 0);
  CHECK(cdf.back() == 65536);
  for (size_t i = 0; i + 1 < cdf.size(); ++i) CHECK(cdf[i + 1] > cdf[i]);
  // Proportional away from the floor of one unit.
  CHECK(std::abs(static_cast<double>(cdf[1] - cdf[0]) - 32766) <= 2);
  CHECK(std::abs(static_cast<double>(cdf[2] - cdf[1]) - 16383) <= 2);
  CHECK_THROWS(neural::quantize_pmf({0.5, -0.1}, 16));
  CHECK_THROWS(neural::quantize_pmf({}, 16));
}

TEST_CASE("CDF tables of a fresh codec cover its quantile range") {
  torch::manual_seed(1);
  neural::NwcCodec m(tiny_config());
  auto t = neural::compute_tables(m);
  CHECK(t.channels == 4);
  for (int64_t c = 0; c < t.channels; ++c) {
    // Quantiles start at -10, 0, 10: 21 values, plus the escape and the end point.
    CHECK(t.lengths[c] == 23);
    CHECK(t.offsets[c] == -10);
    CHECK(t.medians[c] == 0.0f);
    const uint32_t *row = t.cdf.data() + c * t.max_length;
    CHECK(row[t.lengths[c] - 1] == 65536);
  }
}

TEST_CASE("codec files round-trip and hostile ones are rejected") {
  TempDir dir;
  auto path = make_codec(dir);
  auto f = neural::load_codec(path);
  CHECK(f.config.width == 8);
  CHECK(f.metadata["lambda"] == 1.0);
  CHECK(f.tables.lengths.size() == 4);

  // Not a codec: a safetensors file without the metadata.
  std::vector<uint8_t> bytes = read_bytes(path);
  auto bad = dir.path() / "bad.nwcc";
  auto text = std::string(bytes.begin(), bytes.end());
  auto at = text.find("nwc.codec");
  REQUIRE(at != std::string::npos);
  text[at] = 'x';
  write_bytes(bad, std::vector<uint8_t>(text.begin(), text.end()));
  try {
    neural::load_codec(bad);
    FAIL("expected an error");
  } catch (const nwc::Error &e) {
    CHECK(std::string(e.what()).find("bad.nwcc") != std::string::npos);
    CHECK(std::string(e.what()).find("not an NWC codec") != std::string::npos);
  }
  // Truncated.
  write_bytes(bad, std::vector<uint8_t>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  CHECK_THROWS_AS(neural::load_codec(bad), nwc::Error);
}

TEST_CASE("a prior per level: tables per level on one grid, format 2, handed to the coder") {
  TempDir dir;
  neural::CodecConfig cfg = tiny_config();
  cfg.level_priors = true;
  torch::manual_seed(3);
  neural::NwcCodec m(cfg);
  m->eval();
  {
    // Level 2's densities wider than the rest (channels 8..11): its tables must be too.
    torch::NoGradGuard no_grad;
    using torch::indexing::Slice;
    auto &q = m->bottleneck->quantiles;
    q.index({Slice(8, 12), 0, 0}).fill_(-20.0f);
    q.index({Slice(8, 12), 0, 2}).fill_(20.0f);
  }
  auto t = neural::compute_tables(m);
  CHECK(t.channels == 4);
  CHECK(t.levels == 4);
  REQUIRE(t.lengths.size() == 16);
  CHECK(t.medians.size() == 4);
  for (size_t k = 0; k < 16; ++k) {
    CAPTURE(k);
    const bool wide = k >= 8 && k < 12;
    CHECK(t.lengths[k] == (wide ? 43u : 23u));
    CHECK(t.offsets[k] == (wide ? -20 : -10));
  }
  // The file: version 2, the same tables back, and the estimate of each level's prior in plain
  // C++ equal to the LibTorch densities' at those levels.
  const auto path = (dir.path() / "lp.nwcc").string();
  neural::save_codec(path, m, t, {{"lambda", 1.0}});
  auto f = neural::load_codec(path);
  CHECK(f.metadata["version"] == 2);
  CHECK(f.config.level_priors);
  CHECK(f.tables.levels == 4);
  CHECK(f.tables.lengths == t.lengths);
  CHECK(f.tables.cdf == t.cdf);
  auto y = torch::round(torch::randn({6, 4}) * 3);
  auto levels = torch::tensor({0, 1, 2, 3, 2, 0}, torch::kInt64);
  const double torch_bits = (-torch::log2(m->likelihoods(y, levels))).sum().item<double>();
  std::vector<float> yv(y.data_ptr<float>(), y.data_ptr<float>() + 24);
  const std::vector<uint8_t> lv{0, 1, 2, 3, 2, 0};
  CHECK(f.estimate_bits(yv.data(), 6, lv.data()) == doctest::Approx(torch_bits).epsilon(1e-5));
  CHECK(f.estimate_bits(yv.data(), 6, lv.data()) != doctest::Approx(f.estimate_bits(yv.data(), 6)));
  // The transform hands all the tables over, with its level as the default.
  Instance tr("nwc.transform.neural", {opt_path("codec", path.c_str()), opt_int("level", 2)});
  REQUIRE_MESSAGE(tr.ok(), tr.last_error());
  auto *tf = tr.iface<nwc_transform_interface>(NWC_TRANSFORM_INTERFACE);
  const nwc_cdf_model *pm = tf->probability_model(tr.get());
  REQUIRE(pm);
  CHECK(pm->struct_size == sizeof(nwc_cdf_model));
  CHECK(pm->channel_count == 4);
  CHECK(pm->level_count == 4);
  CHECK(pm->default_level == 2);
  CHECK(pm->lengths[8] == 43);
  // A version 1 label on a codec with level priors is refused, naming the file.
  std::vector<uint8_t> bytes = read_bytes(path);
  std::string text(bytes.begin(), bytes.end());
  const auto at = text.find("\\\"version\\\":2");
  REQUIRE(at != std::string::npos);
  text[at + 12] = '1';
  auto bad = dir.path() / "v1.nwcc";
  write_bytes(bad, std::vector<uint8_t>(text.begin(), text.end()));
  try {
    neural::load_codec(bad);
    FAIL("expected an error");
  } catch (const nwc::Error &e) {
    CHECK(std::string(e.what()).find("v1.nwcc") != std::string::npos);
    CHECK(std::string(e.what()).find("cannot hold priors per level") != std::string::npos);
  }
}

TEST_CASE("the transform maps chunks to median-centred latents and back") {
  TempDir dir;
  auto path = make_codec(dir);
  Instance t("nwc.transform.neural", {opt_path("codec", path.c_str()), opt_int("level", 2)});
  REQUIRE_MESSAGE(t.ok(), t.last_error());
  auto *tf = t.iface<nwc_transform_interface>(NWC_TRANSFORM_INTERFACE);
  REQUIRE(tf);
  int64_t m = 0;
  CHECK(tf->latent_length(t.get(), 16, &m) == NWC_OK);
  CHECK(m == 4);
  CHECK(tf->latent_length(t.get(), 8, &m) == NWC_E_UNSUPPORTED_SHAPE);
  CHECK(t.last_error().find("chunks of 16") != std::string::npos);

  const nwc_cdf_model *pm = tf->probability_model(t.get());
  REQUIRE(pm);
  CHECK(pm->channel_count == 4);
  CHECK(pm->precision == 16);

  const int64_t n = 5;
  std::vector<float> chunks(n * 16);
  for (size_t i = 0; i < chunks.size(); ++i) chunks[i] = std::sin(0.37f * static_cast<float>(i));
  std::vector<float> lat(n * 4), back(n * 16);
  View cv(chunks.data(), n, 16), lv(lat.data(), n, 4), bv(back.data(), n, 16);
  nwc_block_info info{sizeof(nwc_block_info), 0, "w", 16, 5, 0, 5, nullptr, nullptr};
  REQUIRE(tf->forward(t.get(), &info, &cv.view, &lv.view) == NWC_OK);
  REQUIRE(tf->inverse(t.get(), &info, &lv.view, &bv.view) == NWC_OK);

  // Same result as the LibTorch module at level 2 (latents minus medians; inverse adds them).
  auto f = neural::load_codec(path);
  auto mod = neural::load_codec_module(path);
  torch::NoGradGuard ng;
  auto x = torch::from_blob(chunks.data(), {n, 16});
  auto y = mod->analyze(x, torch::full({n}, 2, torch::kInt64));
  auto med = torch::from_blob(f.tables.medians.data(), {4});
  auto want = (y - med).contiguous();
  for (int64_t i = 0; i < n * 4; ++i) CHECK(lat[i] == doctest::Approx(want.data_ptr<float>()[i]));
  auto xr = mod->synthesize(y, torch::full({n}, 2, torch::kInt64)).contiguous();
  for (int64_t i = 0; i < n * 16; ++i)
    CHECK(back[i] == doctest::Approx(xr.data_ptr<float>()[i]).epsilon(1e-5));

  // Per-chunk levels from the host override the option; out-of-range levels are refused.
  std::vector<uint8_t> levels{0, 1, 2, 3, 0};
  info.chunk_levels = levels.data();
  std::vector<float> lat2(n * 4);
  View lv2(lat2.data(), n, 4);
  REQUIRE(tf->forward(t.get(), &info, &cv.view, &lv2.view) == NWC_OK);
  for (int64_t k = 0; k < 4; ++k) CHECK(lat2[2 * 4 + k] == lat[2 * 4 + k]); // chunk 2: level 2
  levels[4] = 4;
  CHECK(tf->forward(t.get(), &info, &cv.view, &lv2.view) == NWC_E_INVALID_ARG);
  CHECK(t.last_error().find("quality level 4") != std::string::npos);

  // Non-finite input is refused.
  info.chunk_levels = nullptr;
  chunks[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK(tf->forward(t.get(), &info, &cv.view, &lv.view) == NWC_E_INVALID_ARG);
}

TEST_CASE("the transform passes the SDK's transform checks (nwc/testing)") {
  TempDir dir;
  auto path = make_codec(dir);
  for (int64_t level : {0, 3}) {
    CAPTURE(level);
    Instance t("nwc.transform.neural", {opt_path("codec", path.c_str()), opt_int("level", level)});
    REQUIRE_MESSAGE(t.ok(), t.last_error());
    const int64_t n = 9;
    std::vector<float> chunks(n * 16);
    for (size_t i = 0; i < chunks.size(); ++i) chunks[i] = std::cos(0.91f * static_cast<float>(i));
    Block block("w", 16, 9, 0, 9);
    CHECK(check_transform(t, block, chunks, n, 16) == "");
  }
}

TEST_CASE("synthesis gives the same bits whatever the batch it runs in") {
  TempDir dir;
  auto f = neural::load_codec(make_codec(dir));
  const int64_t n = 37;
  std::vector<float> y(n * 4);
  std::vector<uint8_t> levels(n);
  for (int64_t i = 0; i < n; ++i) {
    levels[i] = static_cast<uint8_t>(i % 4);
    for (int k = 0; k < 4; ++k) y[i * 4 + k] = static_cast<float>((i * 7 + k * 3) % 11) - 5.0f;
  }
  std::vector<float> all(n * 16), one(16);
  f.synthesize(y.data(), n, levels.data(), all.data());
  for (int64_t i = 0; i < n; ++i) {
    f.synthesize(y.data() + i * 4, 1, levels.data() + i, one.data());
    CHECK(std::memcmp(one.data(), all.data() + i * 16, sizeof(float) * 16) == 0);
  }
  // Levels change the reconstruction (the embedding multiplies the hidden state).
  std::vector<float> other(16);
  uint8_t l0 = 0, l3 = 3;
  f.synthesize(y.data(), 1, &l0, one.data());
  f.synthesize(y.data(), 1, &l3, other.data());
  CHECK(std::memcmp(one.data(), other.data(), sizeof(float) * 16) != 0);
}

TEST_CASE("the transform refuses bad options and codec files") {
  TempDir dir;
  auto path = make_codec(dir);
  Instance too_high("nwc.transform.neural", {opt_path("codec", path.c_str()), opt_int("level", 4)});
  CHECK_FALSE(too_high.ok());
  CHECK(too_high.host.last().find("has 4 levels") != std::string::npos);
  auto missing = (dir.path() / "missing.nwcc").string();
  Instance gone("nwc.transform.neural", {opt_path("codec", missing.c_str())});
  CHECK_FALSE(gone.ok());
  CHECK(gone.host.last().find("missing.nwcc") != std::string::npos);
}
