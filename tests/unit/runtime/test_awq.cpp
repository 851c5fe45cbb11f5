// AWQ (activation-aware weight scaling): its pseudo-quantizer against a transcription of
// AutoAWQ's formulas, folding the scales leaves the model's function unchanged, and on
// stories260K AWQ-scaled weights quantized with round-to-nearest predict better than the original
// weights quantized the same way.
#include "nwc/cpp/error.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/awq.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>
#include <random>

using namespace nwc;
using namespace nwc::host;
using namespace nwc::runtime;

namespace {

std::vector<int32_t> stream_of(const char *text) {
  auto tok = load_tokenizer(test::data_dir() / "models" / "stories260K" / "tok512.bin", 512);
  return ppl_token_stream(read_text_file(test::data_dir() / "text" / text), *tok);
}

double nll(const Model &m, const std::vector<int32_t> &eval) {
  LlamaModel lm(m, 2);
  EvalSettings es;
  es.max_tokens = 8192;
  es.threads = 2;
  return evaluate_ppl(lm, eval, es).nll;
}

} // namespace

TEST_CASE("awq_pseudo_quantize is AutoAWQ min/max grid in float32 with a short last group") {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 0.05f);
  const int64_t rows = 7, cols = 45, group = 16; // groups of 16, 16 and 13 columns
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto &v : w) v = g(rng);
  w[3] = 0.9f;                                                                // an outlier
  for (int64_t c = 16; c < 32; ++c) w[static_cast<size_t>(cols + c)] = 0.25f; // a constant group
  for (int64_t bits : {2, 3, 4}) {
    const auto q = awq_pseudo_quantize(w, rows, cols, bits, group);
    const float max_int = static_cast<float>((1 << bits) - 1);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c0 = 0; c0 < cols; c0 += group) {
        const int64_t c1 = std::min(cols, c0 + group);
        const float *x = w.data() + r * cols;
        const float mx = *std::max_element(x + c0, x + c1), mn = *std::min_element(x + c0, x + c1);
        const float scale = std::max(mx - mn, 1e-5f) / max_int;
        const float zero = std::clamp(-std::nearbyint(mn / scale), 0.0f, max_int);
        for (int64_t c = c0; c < c1; ++c) {
          const float qi = std::clamp(std::nearbyint(x[c] / scale) + zero, 0.0f, max_int);
          INFO("bits " << bits << " row " << r << " col " << c);
          REQUIRE(q[static_cast<size_t>(r * cols + c)] == (qi - zero) * scale);
        }
      }
  }
  CHECK_THROWS_AS(awq_pseudo_quantize(w, rows, cols + 1, 4, group), nwc::Error);
}

TEST_CASE("AWQ on stories260K: folded scales keep the function and AWQ + RTN beats RTN") {
  Model model = load_model(test::stories260k());
  const auto calib = stream_of("tinystories-calib.txt");
  const auto eval = stream_of("tinystories-eval.txt");
  CalibrationSettings cs;
  cs.tokens = 2048;
  cs.threads = 2;
  AwqSettings as;
  as.bits = 3;
  as.group = 32;

  // Scales alone (no clipping): the same predictions up to float rounding.
  as.clip = false;
  AwqResult scaled = awq_search(model, calib, cs, as);
  CHECK(scaled.tokens == 2048);
  REQUIRE(scaled.groups.size() == 5 * 3); // qkv, gate_up, down per block; o_proj needs kv = heads
  bool some_scale_changed = false;
  for (const auto &g : scaled.groups) {
    INFO(g.block << " " << g.group);
    CHECK(g.ratio >= 0.0);
    CHECK(g.ratio < 1.0);
    CHECK(std::isfinite(g.loss_best));
    some_scale_changed = some_scale_changed || g.ratio > 0.0;
  }
  CHECK(some_scale_changed);
  // input_layernorm absorbed the q/k/v scales: its values changed.
  const auto &norm0 = scaled.replaced.at("model.layers.0.input_layernorm.weight");
  CHECK(norm0 != model.find("model.layers.0.input_layernorm.weight")->load());
  const double base = nll(model, eval);
  CHECK(std::abs(nll(with_replaced_tensors(model, scaled.replaced), eval) - base) < 1e-4);

  // With clipping, then 3-bit RTN (GPTQ's grid, groups of 32) on both.
  as.clip = true;
  AwqResult awq = awq_search(model, calib, cs, as);
  Registry reg;
  set_log_level(NWC_LOG_ERROR);
  reg.scan({test::plugin_dir()});
  const Pipeline rtn = load_pipeline(
      test::source_dir() / "benchmarks" / "suites" / "baselines" / "rtn-g32-3b.toml", reg);
  test::TempDir dir;
  CompressSettings s;
  s.threads = 2;
  compress_model(model, rtn, reg, dir.path() / "rtn.nwc", s);
  compress_model(with_replaced_tensors(model, awq.replaced), rtn, reg, dir.path() / "awq.nwc", s);
  const double nll_rtn = nll(open_container_model(dir.path() / "rtn.nwc", reg), eval);
  const double nll_awq = nll(open_container_model(dir.path() / "awq.nwc", reg), eval);
  MESSAGE("fp32 " << base << ", RTN g32 3-bit " << nll_rtn << ", AWQ + RTN " << nll_awq);
  CHECK(nll_awq < nll_rtn);
}
