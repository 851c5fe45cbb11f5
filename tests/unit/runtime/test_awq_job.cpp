// Pipelines with [awq] through nwc::runtime::run_compress (the library call behind `nwc compress`)
// on stories260K: the container holds the scaled model coded by the pipeline (norms divided by the
// scales, linears' columns multiplied by them), the Hessians of --calibrate are those of the scaled
// model, AWQ + RTN at 3 bits g128 predicts better than RTN, and what cannot combine is refused.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/awq.hpp"
#include "nwc/runtime/calibrate_job.hpp"
#include "nwc/runtime/compress_job.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <cmath>
#include <doctest/doctest.h>
#include <fstream>
#include <map>

namespace fs = std::filesystem;
using namespace nwc;
using namespace nwc::runtime;
using nwc::test::TempDir;

namespace {

const nwc::host::Registry &registry() {
  return nwc::test::bundled_registry();
}

fs::path baseline(const std::string &name) {
  return nwc::test::source_dir() / "benchmarks" / "suites" / "baselines" / (name + ".toml");
}
fs::path tokenizer() {
  return nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
}
fs::path text(const char *name) {
  return nwc::test::data_dir() / "text" / name;
}

// `base` with an [awq] table (and `extra` lines) appended, written into dir.
fs::path with_awq(const TempDir &dir, const std::string &base, const std::string &extra = "") {
  const fs::path p = dir / (base + "-awq.toml");
  std::ofstream(p) << std::ifstream(baseline(base)).rdbuf() << "\n[awq]\n" << extra;
  return p;
}

CompressRequest request(const fs::path &pipeline, const fs::path &out) {
  CompressRequest req;
  req.model = nwc::test::stories260k();
  req.pipeline = pipeline;
  req.output = out;
  req.tokenizer = tokenizer();
  req.calib_text = text("tinystories-calib.txt").string();
  req.calib_tokens = 2048;
  req.threads = 2;
  return req;
}

std::map<std::string, std::vector<float>> decoded(const fs::path &file) {
  ContainerReader reader(file);
  host::ContainerDecoder decoder(reader, registry());
  std::map<std::string, std::vector<float>> out;
  for (const auto &t : reader.manifest().tensors) out[t.name] = decoder.decode_tensor(t, 1);
  return out;
}

std::vector<float> load(const Model &m, const std::string &name) {
  const ModelTensor *t = m.find(name);
  REQUIRE(t != nullptr);
  return t->load();
}

double nll(const fs::path &container) {
  auto tok = load_tokenizer(tokenizer(), 512);
  const auto eval = ppl_token_stream(read_text_file(text("tinystories-eval.txt")), *tok);
  LlamaModel lm(host::open_container_model(container, registry()), 2);
  EvalSettings es;
  es.max_tokens = 8192;
  es.threads = 2;
  return evaluate_ppl(lm, eval, es).nll;
}

bool close(double a, double b) {
  return std::abs(a - b) <= 1e-5 * std::max(std::abs(b), 1e-3);
}

} // namespace

TEST_CASE("awq job: RTN g128 4-bit codes the scaled model and the norms carry the folded scales") {
  TempDir dir;
  const fs::path pipeline = baseline("awq-rtn-g128-4b");
  std::vector<std::vector<AwqGroupReport>> blocks;
  CompressCallbacks cb;
  cb.awq = [&](const std::vector<AwqGroupReport> &groups) { blocks.push_back(groups); };
  const CompressOutcome o = run_compress(request(pipeline, dir / "awq.nwc"), registry(), cb);
  REQUIRE(o.written);
  REQUIRE(o.awq_seconds.has_value());
  CHECK(*o.awq_seconds > 0);
  CHECK(*o.awq_seconds <= o.seconds);
  CHECK_FALSE(o.calibration_seconds.has_value());
  // One report per block: q/k/v, gate/up and down (o_proj is not scaled under grouped-query
  // attention).
  REQUIRE(blocks.size() == 5);
  for (size_t b = 0; b < blocks.size(); ++b) {
    REQUIRE(blocks[b].size() == 3);
    for (const auto &g : blocks[b]) CHECK(g.block == static_cast<int64_t>(b));
  }

  // The same search outside the job (deterministic), coded by the same pipeline without [awq]:
  // the container is that model coded, tensor for tensor.
  const Model model = load_model(nwc::test::stories260k());
  const host::Pipeline pl = host::load_pipeline(pipeline, registry());
  CHECK(pl.awq.bits == 4);
  CHECK(pl.awq.group == 128);
  const CalibrationText calib =
      load_calibration_text(text("tinystories-calib.txt"), tokenizer(), 512);
  CalibrationSettings cs;
  cs.tokens = 2048;
  cs.threads = 2;
  const AwqScaled scaled = awq_scale_model(model, calib.tokens, cs, pl.awq);
  host::CompressSettings s;
  s.threads = 2;
  host::compress_model(scaled.model, pl, registry(), dir / "ref.nwc", s);
  const auto got = decoded(dir / "awq.nwc"), ref = decoded(dir / "ref.nwc");
  REQUIRE(got.size() == ref.size());
  for (const auto &[name, values] : ref) CHECK_MESSAGE(got.at(name) == values, name);

  // Closed forms on the tensors AWQ replaced: with s = original norm / stored norm, the stored
  // norms are the scaled model's exactly (raw float32), q_proj and k_proj (never clipped) are
  // W·diag(s) before quantization, so norm·W is unchanged; v_proj is W·diag(s) clamped to a range.
  size_t scaled_columns = 0;
  for (int l = 0; l < 5; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto norm0 = load(model, p + "input_layernorm.weight");
    const auto &norm = got.at(p + "input_layernorm.weight");
    CHECK(norm == load(scaled.model, p + "input_layernorm.weight"));
    std::vector<double> sc(norm.size());
    for (size_t c = 0; c < sc.size(); ++c) {
      sc[c] = static_cast<double>(norm0[c]) / norm[c];
      scaled_columns += std::abs(sc[c] - 1.0) > 1e-3;
    }
    for (const char *lin : {"self_attn.q_proj.weight", "self_attn.k_proj.weight"}) {
      const auto w0 = load(model, p + lin), w = load(scaled.model, p + lin);
      size_t bad = 0, bad_product = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        const size_t c = i % sc.size();
        bad += !close(w[i], w0[i] * sc[c]);
        bad_product +=
            !close(static_cast<double>(norm[c]) * w[i], static_cast<double>(norm0[c]) * w0[i]);
      }
      CHECK_MESSAGE(bad == 0, p << lin);
      CHECK_MESSAGE(bad_product == 0, p << lin);
    }
    const auto v0 = load(model, p + "self_attn.v_proj.weight");
    const auto v = load(scaled.model, p + "self_attn.v_proj.weight");
    size_t outside = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const double full = v0[i] * sc[i % sc.size()];
      outside += std::abs(v[i]) > std::abs(full) * (1 + 1e-5) + 1e-12 || v[i] * full < 0;
    }
    CHECK_MESSAGE(outside == 0, p << "self_attn.v_proj.weight");
  }
  CHECK(scaled_columns > 100); // of 5 x 64: the scales are not all 1
  // Tensors AWQ leaves alone are stored as they are.
  CHECK(got.at("model.norm.weight") == load(model, "model.norm.weight"));
}

TEST_CASE("awq job: AWQ + RTN g128 3-bit predicts better than RTN g128 3-bit") {
  TempDir dir;
  CompressRequest rtn = request(baseline("rtn-g128-3b"), dir / "rtn.nwc");
  REQUIRE(run_compress(rtn, registry()).written);
  REQUIRE(run_compress(request(baseline("awq-rtn-g128-3b"), dir / "awq.nwc"), registry()).written);
  const double nll_rtn = nll(dir / "rtn.nwc"), nll_awq = nll(dir / "awq.nwc");
  MESSAGE("RTN g128 3-bit NLL " << nll_rtn << ", AWQ + RTN " << nll_awq);
  CHECK(nll_awq < nll_rtn - 0.1);
}

TEST_CASE("awq job: the Hessians of --calibrate are those of the scaled model") {
  TempDir dir;
  // GPTQ with the Hessians of the original mode, computed after AWQ and kept.
  CompressRequest req = request(with_awq(dir, "gptq-ao-g128-4b-orig"), dir / "g.nwc");
  req.calibrate = true;
  req.save_calibration = dir / "h.safetensors";
  const CompressOutcome o = run_compress(req, registry());
  REQUIRE(o.written);
  CHECK(o.calibration_seconds.has_value());
  CHECK(o.awq_seconds.has_value());
  const Calibration scaled = load_calibration(dir / "h.safetensors");
  const Model model = load_model(nwc::test::stories260k());
  CHECK(scaled.model_hash != model_fingerprint(model));
  // Block 0's q/k/v input is the normalized embedding times input_layernorm / s, so its Hessian
  // is S⁻¹ H S⁻¹ with H the original model's on the same tokens.
  const CalibrationText calib =
      load_calibration_text(text("tinystories-calib.txt"), tokenizer(), 512);
  CalibrationSettings cs;
  cs.tokens = 2048;
  cs.threads = 2;
  const Calibration original = calibrate(model, calib.tokens, cs);
  const Hessian *h0 = original.for_linear("model.layers.0.self_attn.q_proj.weight");
  const Hessian *h1 = scaled.for_linear("model.layers.0.self_attn.q_proj.weight");
  REQUIRE(h0 != nullptr);
  REQUIRE(h1 != nullptr);
  REQUIRE(h0->dim == h1->dim);
  const auto norm0 = load(model, "model.layers.0.input_layernorm.weight");
  const auto norm = decoded(dir / "g.nwc").at("model.layers.0.input_layernorm.weight");
  const size_t n = static_cast<size_t>(h0->dim);
  // Float32 activations: each entry is within a small multiple of float32 rounding of
  // sqrt(H'ii H'jj) (Cauchy-Schwarz bounds the sum of |x_i x_j| that cancels).
  std::vector<double> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<double>(norm0[i]) / norm[i];
  size_t changed = 0;
  double worst = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      const double want = h0->h[i * n + j] / (s[i] * s[j]), got = h1->h[i * n + j];
      const double bound = std::sqrt(h0->h[i * n + i] * h0->h[j * n + j]) / (s[i] * s[j]);
      worst = std::max(worst, std::abs(got - want) / bound);
      changed += std::abs(got - h0->h[i * n + j]) > 1e-3 * std::abs(h0->h[i * n + j]);
    }
  MESSAGE("largest |H' - S^-1 H S^-1| / sqrt(H'ii H'jj): " << worst);
  CHECK(worst < 1e-6);
  CHECK(changed > n * n / 2);
}

TEST_CASE("awq job: what cannot combine with [awq] is refused naming the table") {
  TempDir dir;
  const fs::path awq = with_awq(dir, "gptq-ao-g128-4b-orig");
  auto refused = [&](const CompressRequest &req) {
    try {
      run_compress(req, registry());
    } catch (const RequestError &e) {
      return std::string(e.what());
    }
    return std::string("(ran)");
  };
  CompressRequest no_tok = request(awq, dir / "a.nwc");
  no_tok.tokenizer.clear();
  CHECK(refused(no_tok) == awq.string() + " has [awq]: --tokenizer is required");
  // A Hessian file describes the unscaled model.
  CompressRequest given = request(awq, dir / "a.nwc");
  given.calibration = dir / "h.safetensors";
  CHECK(refused(given) == awq.string() +
                              " has [awq], which scales the model the Hessians of --calibration "
                              "describe; use --calibrate (Hessians of the scaled model) instead");
  const fs::path ft =
      with_awq(dir, "rtn-g128-4b", "\n[blockft]\nepochs = 1\nsequences = 4\nvalidation = 2\n");
  CHECK(refused(request(ft, dir / "a.nwc")) ==
        ft.string() + " has [awq] and [blockft], which do not combine");
  CHECK(dir.entries().size() == 2); // the two pipeline files: no output
}
