// nwc::runtime::run_compress, the library call behind `nwc compress`: calibrate-first into a
// scratch file or a kept one, the fingerprint check of a given calibration, requests that cannot
// run, block fine-tuning reports, and the figures of the written container.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/runtime/calibrate_job.hpp"
#include "nwc/runtime/compress_job.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <algorithm>
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

fs::path pipeline(const std::string &name) {
  return nwc::test::source_dir() / "pipelines" / (name + ".toml");
}
fs::path tokenizer() {
  return nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
}
fs::path calib_text() {
  return nwc::test::data_dir() / "text" / "tinystories-calib.txt";
}

// GPTQ on stories260K, calibrating first on 2048 tokens.
CompressRequest gptq_request(const TempDir &dir) {
  CompressRequest req;
  req.model = nwc::test::stories260k();
  req.pipeline = pipeline("gptq-3bit-g32");
  req.output = dir / "g.nwc";
  req.calibrate = true;
  req.tokenizer = tokenizer();
  req.calib_text = calib_text().string();
  req.calib_tokens = 2048;
  req.threads = 2;
  return req;
}

std::vector<std::string> sorted_entries(const TempDir &dir) {
  auto e = dir.entries();
  std::sort(e.begin(), e.end());
  return e;
}

// Stream bytes x 8 / weights of the pipeline-coded tensors, from the container itself.
double coded_bpw(const fs::path &file) {
  ContainerReader reader(file);
  double bytes = 0, weights = 0;
  for (const auto &t : reader.manifest().tensors)
    if (t.storage == "pipeline") {
      bytes += static_cast<double>(t.stream_bytes());
      weights += static_cast<double>(t.numel());
    }
  return 8.0 * bytes / weights;
}

} // namespace

TEST_CASE("compress job: calibrate first into a scratch file, compress, report the figures") {
  TempDir dir;
  size_t progress_calls = 0, last_done = 0, last_total = 0;
  CompressCallbacks cb;
  cb.progress = [&](size_t done, size_t total, const std::string &) {
    ++progress_calls;
    last_done = done;
    last_total = total;
  };
  cb.note = [](const std::string &line) { FAIL("unexpected note: " << line); };
  const CompressOutcome o = run_compress(gptq_request(dir), registry(), cb);
  REQUIRE(o.written);
  CHECK(o.pipeline == "gptq-3bit-g32");
  CHECK(o.tensors == 47); // embedding, 5 x (2 norms + 7 linears), final norm
  CHECK(o.weights == 260032);
  CHECK(o.result.tensors.size() == 47);
  CHECK(o.bytes == fs::file_size(dir / "g.nwc"));
  CHECK(o.bits_per_weight == doctest::Approx(8.0 * static_cast<double>(o.bytes) / 260032));
  CHECK(o.coded_bits_per_weight == doctest::Approx(coded_bpw(dir / "g.nwc")));
  CHECK(o.coded_bits_per_weight > 3.0);
  CHECK(o.coded_bits_per_weight < 5.0);
  REQUIRE(o.calibration_seconds.has_value());
  CHECK(*o.calibration_seconds <= o.seconds);
  CHECK_FALSE(o.rate.has_value());
  CHECK(o.processes == 1);
  CHECK(progress_calls >= 47);
  CHECK(last_done == last_total);
  // The Hessians went to a scratch file beside the output, removed at the end.
  CHECK(sorted_entries(dir) == std::vector<std::string>{"g.nwc"});
}

TEST_CASE("compress job: save_calibration keeps the Hessians, which compress the same bytes") {
  TempDir dir;
  CompressRequest req = gptq_request(dir);
  req.save_calibration = dir / "h.safetensors";
  REQUIRE(run_compress(req, registry()).written);
  CHECK(sorted_entries(dir) == std::vector<std::string>{"g.nwc", "h.safetensors"});
  const CalibrationFile cal = open_calibration(dir / "h.safetensors");
  CHECK(cal.info.model_hash == model_fingerprint(load_model(nwc::test::stories260k())));
  CHECK(cal.info.tokens == 2048);
  CHECK(cal.info.hessians.size() == 20);
  // The kept file given back as --calibration: the same container, byte for byte.
  CompressRequest again = gptq_request(dir);
  again.calibrate = false;
  again.calibration = dir / "h.safetensors";
  again.output = dir / "again.nwc";
  const CompressOutcome o = run_compress(again, registry());
  CHECK_FALSE(o.calibration_seconds.has_value());
  CHECK(nwc::test::read_bytes(dir / "again.nwc") == nwc::test::read_bytes(dir / "g.nwc"));
}

TEST_CASE("compress job: a calibration of another model is refused before any output") {
  TempDir dir;
  const Model stories = load_model(nwc::test::stories260k());
  CalibrationSettings cs;
  cs.tokens = 1024;
  const CalibrationText text = load_calibration_text(calib_text(), tokenizer(), 512);
  const CalibrateOutcome cal = calibrate_into_file(stories, text, cs, dir / "h.safetensors");
  CHECK(cal.written);
  CHECK(cal.plan.model_hash == model_fingerprint(stories));
  CHECK(cal.inputs.size() == 20);
  CHECK(cal.inputs.front().trace > 0);
  CompressRequest req;
  req.model = nwc::test::data_dir() / "models" / "aidreams260K" / "aidreams260K.bin";
  req.pipeline = pipeline("gptq-3bit-g32");
  req.output = dir / "x.nwc";
  req.calibration = dir / "h.safetensors";
  std::string message;
  try {
    run_compress(req, registry());
  } catch (const Error &e) {
    message = e.what();
  }
  CHECK(message.find((dir / "h.safetensors").string() + ": calibrated on model " +
                     cal.plan.model_hash + ", but ") == 0);
  CHECK(message.find("(rerun nwc calibrate on this model)") != std::string::npos);
  CHECK(sorted_entries(dir) == std::vector<std::string>{"h.safetensors"});
}

TEST_CASE("compress job: requests that cannot run are RequestErrors naming the option") {
  TempDir dir;
  auto refused = [&](const CompressRequest &req) {
    try {
      run_compress(req, registry());
    } catch (const RequestError &e) {
      return std::string(e.what());
    }
    return std::string("(ran)");
  };
  CompressRequest both = gptq_request(dir);
  both.calibration = dir / "h.safetensors";
  CHECK(refused(both) == "--calibrate computes the Hessians; do not also pass --calibration");
  CompressRequest keep = gptq_request(dir);
  keep.calibrate = false;
  keep.save_calibration = dir / "h.safetensors";
  CHECK(refused(keep) == "--save-calibration needs --calibrate");
  CompressRequest no_tok = gptq_request(dir);
  no_tok.tokenizer.clear();
  CHECK(refused(no_tok) == "--calibrate: --tokenizer is required");
  CompressRequest no_tokens = gptq_request(dir);
  no_tokens.calib_tokens = 0;
  CHECK(refused(no_tokens) == "--calib-tokens must be >= 1");
  CompressRequest eval_text = gptq_request(dir);
  eval_text.calib_text = (nwc::test::data_dir() / "text" / "tinystories-eval.txt").string();
  CHECK_THROWS_WITH_AS(run_compress(eval_text, registry()),
                       doctest::Contains("this is the evaluation half of TinyStories"), Error);
  CHECK(dir.entries().empty());
}

TEST_CASE("compress job: [blockft] reports every linear and writes the container") {
  TempDir dir;
  std::ofstream(dir / "ft.toml") << std::ifstream(pipeline("rtn-4bit-g32")).rdbuf()
                                 << "\n[blockft]\nepochs = 1\nlr = 1e-3\nbatch = 2\n"
                                    "sequences = 4\nvalidation = 2\nseq_len = 32\n";
  CompressRequest req;
  req.model = nwc::test::stories260k();
  req.pipeline = dir / "ft.toml";
  req.output = dir / "ft.nwc";
  req.calib_text = calib_text().string();
  req.threads = 2;
  CHECK_THROWS_WITH_AS(run_compress(req, registry()),
                       (req.pipeline.string() + " has [blockft]: --tokenizer is required").c_str(),
                       RequestError);
  req.tokenizer = tokenizer();
  std::vector<BlockFtReport> reports;
  CompressCallbacks cb;
  cb.blockft = [&](const BlockFtReport &r) { reports.push_back(r); };
  const CompressOutcome o = run_compress(req, registry(), cb);
  REQUIRE(o.written);
  CHECK(reports.size() == 35); // 5 blocks x 7 linears
  for (const auto &r : reports) CHECK(r.mse_after <= r.mse_before);
  CHECK(o.bytes == fs::file_size(dir / "ft.nwc"));
  CHECK_FALSE(o.calibration_seconds.has_value());
}

namespace {

// gptq-3bit-g32 with [calibration] mode = "sequential".
fs::path sequential_pipeline(const TempDir &dir) {
  const fs::path p = dir / "seq.toml";
  std::ofstream(p) << std::ifstream(pipeline("gptq-3bit-g32")).rdbuf()
                   << "\n[calibration]\nmode = \"sequential\"\n";
  return p;
}

std::map<std::string, std::vector<float>> decoded(const fs::path &file) {
  ContainerReader reader(file);
  host::ContainerDecoder decoder(reader, registry());
  std::map<std::string, std::vector<float>> out;
  for (const auto &t : reader.manifest().tensors) out[t.name] = decoder.decode_tensor(t, 1);
  return out;
}

} // namespace

TEST_CASE("compress job: sequential calibration codes the first linears as the original Hessians "
          "do and the later ones from the partly coded model") {
  TempDir dir;
  CompressRequest original = gptq_request(dir);
  original.output = dir / "original.nwc";
  REQUIRE(run_compress(original, registry()).written);
  CompressRequest seq = gptq_request(dir);
  seq.pipeline = sequential_pipeline(dir);
  seq.output = dir / "sequential.nwc";
  const CompressOutcome o = run_compress(seq, registry());
  REQUIRE(o.written);
  CHECK(o.tensors == 47);
  CHECK(o.bytes == fs::file_size(dir / "sequential.nwc"));
  CHECK(o.coded_bits_per_weight == doctest::Approx(coded_bpw(dir / "sequential.nwc")));
  CHECK_FALSE(o.calibration_seconds.has_value()); // calibration and coding are one pass
  const auto a = decoded(dir / "original.nwc"), b = decoded(dir / "sequential.nwc");
  REQUIRE(a.size() == b.size());
  // Nothing is coded upstream of block 0's q, k and v: the same Hessian, the same weights.
  for (const char *p : {"q", "k", "v"}) {
    const std::string name = std::string("model.layers.0.self_attn.") + p + "_proj.weight";
    CHECK_MESSAGE(a.at(name) == b.at(name), name);
  }
  // Everything after them sees coded inputs (block 0's o_proj already sees coded v).
  size_t differ = 0, linears = 0;
  for (const auto &[name, values] : a) {
    if (name.find("_proj.weight") == std::string::npos) continue;
    const bool first_group =
        name.rfind("model.layers.0.self_attn.", 0) == 0 && name.find("o_proj") == std::string::npos;
    if (first_group) continue;
    ++linears;
    differ += values != b.at(name);
  }
  CHECK(linears == 32);
  CHECK(differ >= 30);
  // Tensors outside the pipeline are stored as they are either way.
  CHECK(a.at("model.norm.weight") == b.at("model.norm.weight"));
  CHECK(sorted_entries(dir) ==
        std::vector<std::string>{"original.nwc", "seq.toml", "sequential.nwc"});
}

TEST_CASE("compress job: what does not combine with sequential calibration is refused") {
  TempDir dir;
  const fs::path seq = sequential_pipeline(dir);
  auto refused = [&](CompressRequest req) {
    req.pipeline = seq;
    try {
      run_compress(req, registry());
    } catch (const RequestError &e) {
      return std::string(e.what());
    }
    return std::string("(ran)");
  };
  const std::string what = seq.string() + " has [calibration] mode = \"sequential\"";
  CompressRequest given = gptq_request(dir);
  given.calibrate = false;
  given.calibration = dir / "h.safetensors";
  CHECK(refused(given) == what + ", which computes the Hessians while coding; drop --calibration "
                                 "(or use mode = \"original\" with it)");
  CompressRequest none = gptq_request(dir);
  none.calibrate = false;
  CHECK(refused(none) == what + ": pass --calibrate (with --tokenizer) to calibrate while coding");
  CompressRequest keep = gptq_request(dir);
  keep.save_calibration = dir / "h.safetensors";
  CHECK(refused(keep) == what + ", which writes no Hessian file; drop --save-calibration");
  CompressRequest rate = gptq_request(dir);
  rate.target_bpw = 3.0;
  CHECK(refused(rate) == what + "; --target-bpw needs mode = \"original\"");
  CHECK(sorted_entries(dir) == std::vector<std::string>{"seq.toml"});
}
