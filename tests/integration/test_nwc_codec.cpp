// The NWC codec end to end through the `nwc` executable: a short training run; a shipped codec
// (trained on stories260K's weights) used on aidreams260K's, which it never saw, against plain
// rounding of the same normalized weights; quality levels; thread-independent decoding; wrong
// codecs and corrupted streams.
#include "cli_runner.hpp"
#include "nwc/formats/container.hpp"
#include "test_support.hpp"

#include <cmath>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <optional>

namespace fs = std::filesystem;
using nlohmann::json;
using nwc::test::Result;
using nwc::test::run_nwc;
using nwc::test::TempDir;

namespace {

std::string stories() {
  return nwc::test::stories260k().string();
}
fs::path shipped(int lambda, const std::string &family = "s") {
  return nwc::test::source_dir() / "codecs" /
         ("nwc-" + family + "-l" + std::to_string(lambda) + ".nwcc");
}
std::string aidreams() {
  return (nwc::test::data_dir() / "models" / "aidreams260K" / "aidreams260K.bin").string();
}

json run_json(const std::vector<std::string> &args) {
  Result r = run_nwc(args);
  INFO("nwc " << args[0] << " stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

// A codec trained here (a short run), reused by the test cases that need any codec.
struct TrainedCodec {
  TempDir dir;
  fs::path path;
  json report;
  TrainedCodec() : path(dir.path() / "tiny.nwcc") {
    report = run_json({"train-codec", "--model",  stories(),     "--lambda", "300", "--width",
                       "16",          "--blocks", "1",           "--steps",  "600", "--eval-every",
                       "150",         "--lr",     "3e-3",        "--batch",  "128", "--threads",
                       "2",           "-o",       path.string(), "--json"});
  }
};
const TrainedCodec &codec() {
  static TrainedCodec c;
  return c;
}

void write_text(const fs::path &p, const std::string &text) {
  std::ofstream f(p);
  f << text;
}

fs::path neural_pipeline(const fs::path &dir, const std::string &name, const fs::path &codec_file,
                         int level, const std::string &quantizer = "plugin = \"nwc.quant.round\"") {
  fs::path p = dir / (name + ".toml");
  write_text(p, "[pipeline]\nname = \"" + name +
                    "\"\nselect = [\"model.layers.*_proj.weight\"]\n"
                    "[chunker]\nplugin = \"nwc.chunk.column\"\n"
                    "[transform]\nplugin = \"nwc.transform.neural\"\ncodec = \"" +
                    codec_file.string() + "\"\nlevel = " + std::to_string(level) +
                    "\n[quantizer]\n" + quantizer +
                    "\n[entropy]\nplugin = \"nwc.entropy.rans\"\n"
                    "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n");
  return p;
}

// Plain rounding of the same row-normalized 16-vectors with step `step`, rANS-coded.
fs::path rounding_pipeline(const fs::path &dir, double step) {
  fs::path p = dir / ("round-" + std::to_string(step) + ".toml");
  write_text(p, "[pipeline]\nname = \"round\"\nselect = [\"model.layers.*_proj.weight\"]\n"
                "[chunker]\nplugin = \"nwc.chunk.column\"\n"
                "[quantizer]\nplugin = \"nwc.quant.round\"\nstep = " +
                    std::to_string(step) +
                    "\n[entropy]\nplugin = \"nwc.entropy.rans\"\n"
                    "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n");
  return p;
}

struct Point {
  double bpw = 0; // measured bytes of the coded linears (streams + row scales), per weight
  double mse = 0; // mean squared error of the coded linears against the original
};

// Compresses `model_path` and measures the coded linears against the original.
Point measure(const fs::path &pipeline, const std::string &model_path, const fs::path &out) {
  run_json({"compress", model_path, "-p", pipeline.string(), "-o", out.string(), "--json"});
  json j = run_json({"inspect", out.string(), "--reference", model_path, "--json"});
  double bytes = 0, err = 0, n = 0;
  for (const auto &t : j["tensors"]) {
    if (t["storage"] != "pipeline") continue;
    double numel = 1;
    for (const auto &d : t["shape"]) numel *= d.get<double>();
    bytes += t["stream_bytes"].get<double>();
    err += t["mse"].get<double>() * numel;
    n += numel;
  }
  REQUIRE(n > 0);
  return {bytes * 8 / n, err / n};
}

} // namespace

TEST_CASE("train-codec lowers the training loss and reports real held-out bits per level") {
  const json &r = codec().report;
  REQUIRE(r["train_loss"].size() == 4);
  CHECK(r["train_loss"].back().get<double>() < r["train_loss"].front().get<double>());
  REQUIRE(r["validation"].size() == 4);
  for (const auto &l : r["validation"]) {
    // Real rANS bytes against the density's own estimate: a few percent at most.
    const double bits = l["bits_per_weight"], est = l["estimate_bpw"];
    CHECK(bits > 0.5);
    CHECK(bits < est * 1.05 + 0.05);
  }
  CHECK(fs::file_size(codec().path) > 1000);
}

TEST_CASE("a trained codec beats plain rounding of the normalized weights on held-out weights - by "
          "10 percent with trellis-coded latents") {
  TempDir dir;
  // Rounding steps bracketing the codecs' rates; the distortion interpolated at a codec's rate.
  // Both code whole 64-column tensors as one stream each (a static rANS table per stream is
  // rounding's side information, so narrow blocks would handicap it).
  std::vector<std::pair<double, Point>> sweep;
  for (double step : {0.045, 0.06, 0.08, 0.12, 0.16, 0.2, 0.3, 0.45, 0.6})
    sweep.push_back(
        {step, measure(rounding_pipeline(dir.path(), step), aidreams(), dir.path() / "round.nwc")});
  // The D 64 ladder's and the fast (D 32) ladder's lambda 1000 codecs: 0.93 of rounding's MSE at
  // 5.18 and 5.44 b/w; with trellis-coded latents (nwc.quant.tcq) the trellis ladder's lambda 100,
  // 300 and 1000 codecs: 0.88, 0.83 and 0.77 at 3.38, 4.13 and 5.04 b/w; the lambda 300 codec
  // with a 64-state trellis on 16-column paths (the trellis presets' quantizer): 0.76
  // (benchmarks/codecs/rounding_compare.py).
  struct Case {
    std::string label;
    fs::path pipeline;
    double bound;
  };
  const std::string tcq = "plugin = \"nwc.quant.tcq\"\nstep = 0.5",
                    tcq64 = tcq + "\nstates = 64\npath_columns = 16";
  const std::vector<Case> cases{
      {"nwc-s-l1000", neural_pipeline(dir.path(), "s", shipped(1000, "s"), 0), 0.97},
      {"nwc-f-l1000", neural_pipeline(dir.path(), "f", shipped(1000, "f"), 0), 0.97},
      {"nwc-t-l100 + tcq", neural_pipeline(dir.path(), "t2", shipped(100, "t"), 0, tcq), 0.90},
      {"nwc-t-l300 + tcq", neural_pipeline(dir.path(), "t3", shipped(300, "t"), 0, tcq), 0.90},
      {"nwc-t-l1000 + tcq", neural_pipeline(dir.path(), "t4", shipped(1000, "t"), 0, tcq), 0.90},
      {"nwc-t-l300 + tcq with 64 states",
       neural_pipeline(dir.path(), "t5", shipped(300, "t"), 0, tcq64), 0.80}};
  for (const Case &c : cases) {
    Point nwc = measure(c.pipeline, aidreams(), dir.path() / "nwc.nwc");
    std::optional<double> rounding_mse;
    for (size_t i = 0; i + 1 < sweep.size(); ++i) {
      const Point &hi = sweep[i].second, &lo = sweep[i + 1].second; // hi: more bits
      if (hi.bpw >= nwc.bpw && lo.bpw <= nwc.bpw) {
        const double t = (hi.bpw - nwc.bpw) / (hi.bpw - lo.bpw);
        rounding_mse = std::exp(std::log(hi.mse) + t * (std::log(lo.mse) - std::log(hi.mse)));
      }
    }
    INFO("codec " << c.label << ": " << nwc.bpw << " b/w, MSE " << nwc.mse);
    REQUIRE(rounding_mse.has_value());
    INFO("rounding at that rate: MSE " << *rounding_mse);
    CHECK(nwc.mse < c.bound * *rounding_mse);
  }
}

TEST_CASE("a higher quality level spends more bits for a lower error") {
  TempDir dir;
  Point low = measure(neural_pipeline(dir.path(), "q0", shipped(300), 0), aidreams(),
                      dir.path() / "q0.nwc");
  Point high = measure(neural_pipeline(dir.path(), "q3", shipped(300), 3), aidreams(),
                       dir.path() / "q3.nwc");
  INFO("level 0: " << low.bpw << " b/w, MSE " << low.mse << "; level 3: " << high.bpw
                   << " b/w, MSE " << high.mse);
  CHECK(high.bpw > low.bpw);
  CHECK(high.mse < low.mse);
}

TEST_CASE("NWC containers decode identically with 1 and 2 threads, and with the codec embedded") {
  TempDir dir;
  auto p = neural_pipeline(dir.path(), "nwc", codec().path, 1);
  auto c = dir.path() / "m.nwc", e = dir.path() / "e.nwc";
  run_json({"compress", stories(), "-p", p.string(), "-o", c.string(), "--json"});
  run_json({"compress", stories(), "-p", p.string(), "-o", e.string(), "--embed-codec", "--json"});
  auto out1 = dir.path() / "t1.safetensors", out2 = dir.path() / "t2.safetensors",
       out3 = dir.path() / "t3.safetensors";
  run_json({"decompress", c.string(), "-o", out1.string(), "--threads", "1", "--json"});
  run_json({"decompress", c.string(), "-o", out2.string(), "--threads", "2", "--json"});
  CHECK(nwc::test::read_bytes(out1) == nwc::test::read_bytes(out2));
  // The embedded copy decodes without the codec file anywhere.
  fs::create_directory(dir.path() / "sub");
  fs::path moved = dir.path() / "sub" / "elsewhere.nwcc";
  fs::copy_file(codec().path, moved);
  auto p2 = neural_pipeline(dir.path() / "sub", "nwc", moved, 1);
  auto e2 = dir.path() / "sub" / "m.nwc"; // same file name: it is recorded in the output
  run_json(
      {"compress", stories(), "-p", p2.string(), "-o", e2.string(), "--embed-codec", "--json"});
  fs::remove(moved);
  run_json({"decompress", e2.string(), "-o", out3.string(), "--json"});
  CHECK(nwc::test::read_bytes(out1) == nwc::test::read_bytes(out3));
}

TEST_CASE("a wrong or missing codec and a corrupted NWC stream are refused with a clear error") {
  TempDir dir;
  fs::path local = dir.path() / "codec.nwcc";
  fs::copy_file(codec().path, local);
  auto p = neural_pipeline(dir.path(), "nwc", local, 0);
  auto c = dir.path() / "m.nwc";
  run_json({"compress", stories(), "-p", p.string(), "-o", c.string(), "--json"});
  auto out = dir.path() / "out.safetensors";

  // Another codec under the same name: refused, naming the expected hash.
  run_json({"train-codec", "--model", stories(), "--lambda", "30", "--width", "8", "--blocks", "1",
            "--steps", "20", "--eval-every", "20", "-o", (dir.path() / "other.nwcc").string(),
            "--json"});
  fs::copy_file(dir.path() / "other.nwcc", local, fs::copy_options::overwrite_existing);
  Result r = run_nwc({"decompress", c.string(), "-o", out.string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("needs codec.nwcc with xxh64") != std::string::npos);
  CHECK(r.err.find("a different codec") != std::string::npos);
  CHECK_FALSE(fs::exists(out));

  // Missing altogether.
  fs::remove(local);
  r = run_nwc({"decompress", c.string(), "-o", out.string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--embed-codec") != std::string::npos);

  // A flipped byte inside an NWC entropy stream: the checksum names the tensor and block.
  fs::copy_file(codec().path, local);
  std::vector<uint8_t> bytes = nwc::test::read_bytes(c);
  nwc::StreamRef target;
  std::string target_tensor;
  {
    nwc::ContainerReader reader(c);
    for (const auto &t : reader.manifest().tensors)
      for (const auto &st : t.streams)
        if (st.role == "entropy" && target_tensor.empty()) {
          target = st;
          target_tensor = t.name;
        }
  }
  REQUIRE(!target_tensor.empty());
  bytes[target.offset + target.length / 2] ^= 0x40;
  fs::path bad = dir.path() / "bad.nwc";
  nwc::test::write_bytes(bad, bytes.data(), bytes.size());
  r = run_nwc({"decompress", bad.string(), "-o", out.string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("tensor " + target_tensor + ": stream entropy block 0") != std::string::npos);
  CHECK(r.err.find("checksum mismatch") != std::string::npos);
  CHECK_FALSE(fs::exists(out));

  // The same damage with a valid checksum (a container rewritten around it): the rANS decoder
  // itself must refuse the stream, never return garbage weights silently.
  {
    nwc::ContainerReader reader(c);
    nwc::ContainerWriter writer(bad);
    for (const auto &t : reader.manifest().tensors) {
      nwc::TensorRecord rec = t;
      rec.streams.clear();
      for (const auto &st : t.streams) {
        std::vector<uint8_t> data = reader.read_stream(t, st);
        if (t.name == target_tensor && st.role == "entropy" && st.block == 0)
          data.resize(data.size() / 2); // truncated: the symbols cannot all be decoded
        rec.streams.push_back(writer.append_stream(st.role, st.block, data.data(), data.size()));
      }
      writer.add_tensor(std::move(rec));
    }
    nwc::ContainerManifest m = reader.manifest();
    writer.finish(std::move(m));
  }
  r = run_nwc({"decompress", bad.string(), "-o", out.string()});
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find(target_tensor) != std::string::npos);
  CHECK(r.err.find("nwc.entropy.rans") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("train-codec fine-tunes a codec for trellis-coded latents: --init and "
          "--latent-quantizer with its options") {
  TempDir dir;
  const std::string init = codec().path.string(); // D 16, lambda 300
  auto run = [&](const std::string &name, std::vector<std::string> extra) {
    std::vector<std::string> args{
        "train-codec", "--model", stories(), "--lambda",
        "300",         "--width", "16",      "--blocks",
        "1",           "--batch", "128",     "--threads",
        "2",           "--json",  "-o",      (dir.path() / name).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_json(args);
  };
  // Started from the trained codec, the first held-out loss is the trained codec's, far below a
  // fresh start's after as many steps.
  json fresh = run("fresh.nwcc", {"--steps", "20", "--eval-every", "20", "--lr", "3e-3"});
  json tuned = run("tuned.nwcc", {"--steps", "20", "--eval-every", "20", "--lr", "3e-3", "--init",
                                  init, "--latent-quantizer", "nwc.quant.tcq"});
  CHECK(tuned["best_loss"].get<double>() < 0.8 * fresh["best_loss"].get<double>());
  // Held-out samples are coded with the trellis: the same codec (a learning rate of ~0) measures
  // more bits and less error than with rounding, as tcq's half-unit grid does.
  const std::vector<std::string> frozen{"--steps", "1",        "--eval-every", "1",      "--lr",
                                        "1e-12",   "--aux-lr", "1e-12",        "--init", init};
  auto with_tcq = frozen;
  with_tcq.insert(with_tcq.end(), {"--latent-quantizer", "nwc.quant.tcq"});
  // With the trellis presets' options (--latent-quantizer-option) the held-out samples are coded
  // by the 64-state trellis on paths of 16 samples: less error at about the same rate.
  auto with_tcq64 = with_tcq;
  with_tcq64.insert(with_tcq64.end(), {"--latent-quantizer-option", "states=64",
                                       "--latent-quantizer-option", "path_columns=16"});
  json rounded = run("rounded.nwcc", frozen);
  json trellis = run("trellis.nwcc", with_tcq);
  json trellis64 = run("trellis64.nwcc", with_tcq64);
  for (size_t l = 0; l < 4; ++l) {
    CAPTURE(l);
    const json &a = rounded["validation"][l], &b = trellis["validation"][l],
               &c = trellis64["validation"][l];
    CHECK(b["bits_per_weight"].get<double>() > a["bits_per_weight"].get<double>());
    CHECK(b["mse"].get<double>() < a["mse"].get<double>());
    CHECK(c["mse"].get<double>() < b["mse"].get<double>());
    CHECK(c["bits_per_weight"].get<double>() ==
          doctest::Approx(b["bits_per_weight"].get<double>()).epsilon(0.03));
  }
  // Refusals: a plugin that is not a quantizer, a codec of another configuration.
  Result r = run_nwc({"train-codec", "--model", stories(), "--lambda", "300", "--width", "16",
                      "--steps", "1", "--latent-quantizer", "nwc.entropy.rans", "-o",
                      (dir.path() / "x.nwcc").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("nwc.entropy.rans is not a quantizer plugin") != std::string::npos);
  r = run_nwc({"train-codec", "--model", stories(), "--lambda", "300", "--width", "16", "--steps",
               "1", "--latent-quantizer", "nwc.quant.tcq", "--latent-quantizer-option", "stats=64",
               "-o", (dir.path() / "x.nwcc").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--latent-quantizer-option for nwc.quant.tcq: no option 'stats' (its options: "
                   "step, lambda, trellis, states, path_columns)") != std::string::npos);
  r = run_nwc({"train-codec", "--model", stories(), "--lambda", "300", "--width", "16", "--steps",
               "1", "--latent-quantizer-option", "states=64", "-o",
               (dir.path() / "x.nwcc").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--latent-quantizer-option needs --latent-quantizer") != std::string::npos);
  r = run_nwc({"train-codec", "--model", stories(), "--lambda", "300", "--width", "32", "--steps",
               "1", "--init", init, "-o", (dir.path() / "y.nwcc").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--init " + init + " has configuration") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "x.nwcc"));
  CHECK_FALSE(fs::exists(dir.path() / "y.nwcc"));
}

TEST_CASE("a prior per level (--level-priors --prior-only): every level codes as before in fewer "
          "bits, and containers with column levels decode with each level's tables") {
  TempDir dir;
  const std::string init = codec().path.string(); // D 16, lambda 300, one shared prior
  auto run = [&](const std::string &name, std::vector<std::string> extra) {
    std::vector<std::string> args{
        "train-codec", "--model",   stories(), "--lambda",
        "300",         "--width",   "16",      "--batch",
        "128",         "--threads", "2",       "--init",
        init,          "--json",    "-o",      (dir.path() / name).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_json(args);
  };
  json shared = run("shared.nwcc",
                    {"--steps", "1", "--eval-every", "1", "--lr", "1e-12", "--aux-lr", "1e-12"});
  json per_level = run("levels.nwcc", {"--steps", "100", "--eval-every", "100", "--lr", "1e-3",
                                       "--level-priors", "--prior-only"});
  double bits_shared = 0, bits_levels = 0;
  for (size_t l = 0; l < 4; ++l) {
    CAPTURE(l);
    const json &a = shared["validation"][l], &b = per_level["validation"][l];
    CHECK(b["mse"].get<double>() == doctest::Approx(a["mse"].get<double>()).epsilon(1e-9));
    bits_shared += a["bits_per_weight"].get<double>();
    bits_levels += b["bits_per_weight"].get<double>();
  }
  // The shared prior fits the mixture of levels: the top level's own prior codes it in fewer bits.
  CHECK(per_level["validation"][3]["bits_per_weight"].get<double>() <
        shared["validation"][3]["bits_per_weight"].get<double>());
  CHECK(bits_levels < bits_shared);
  // In a container with Hessian-ranked column levels: the same reconstruction as the codec it
  // started from (the same symbols on the same grid), fewer stream bytes, the same bytes decoded
  // at 1 and 2 threads.
  const std::string tok =
      (nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin").string();
  const std::string calib = (nwc::test::data_dir() / "text" / "tinystories-calib.txt").string();
  auto measure_levels = [&](const std::string &name, const std::string &codec_file) {
    const fs::path p = dir.path() / (name + ".toml");
    write_text(p, "[pipeline]\nname = \"" + name +
                      "\"\nselect = [\"model.layers.*_proj.weight\"]\n"
                      "[levels]\nfractions = [0.01, 0.05, 0.2]\n"
                      "[chunker]\nplugin = \"nwc.chunk.column\"\n"
                      "[transform]\nplugin = \"nwc.transform.neural\"\ncodec = \"" +
                      codec_file +
                      "\"\n[quantizer]\nplugin = \"nwc.quant.round\"\n"
                      "[entropy]\nplugin = \"nwc.entropy.rans\"\n"
                      "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n");
    const fs::path out = dir.path() / (name + ".nwc");
    run_json({"compress", stories(), "-p", p.string(), "-o", out.string(), "--calibrate",
              "--tokenizer", tok, "--calib-text", calib, "--threads", "2", "--json"});
    json j = run_json({"inspect", out.string(), "--reference", stories(), "--json"});
    double bytes = 0, err = 0;
    for (const auto &t : j["tensors"])
      if (t["storage"] == "pipeline") {
        bytes += t["stream_bytes"].get<double>();
        err += t["mse"].get<double>();
      }
    return std::make_pair(bytes, err);
  };
  const auto [bytes_shared, err_shared] = measure_levels("shared", init);
  const auto [bytes_levels, err_levels] =
      measure_levels("levels", (dir.path() / "levels.nwcc").string());
  CHECK(err_levels == err_shared);
  CHECK(bytes_levels < bytes_shared);
  const fs::path c = dir.path() / "levels.nwc";
  const fs::path d1 = dir.path() / "d1.safetensors", d2 = dir.path() / "d2.safetensors";
  run_json({"decompress", c.string(), "-o", d1.string(), "--threads", "1", "--json"});
  run_json({"decompress", c.string(), "-o", d2.string(), "--threads", "2", "--json"});
  CHECK(nwc::test::read_bytes(d1) == nwc::test::read_bytes(d2));
  // --prior-only needs a codec to start from.
  Result r = run_nwc({"train-codec", "--model", stories(), "--lambda", "300", "--width", "16",
                      "--steps", "1", "--prior-only", "-o", (dir.path() / "z.nwcc").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--prior-only") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "z.nwcc"));
}

TEST_CASE("train-codec resumes from its checkpoint and refuses bad settings") {
  TempDir dir;
  const std::string out = (dir.path() / "r.nwcc").string();
  std::vector<std::string> base{"train-codec", "--model", stories(), "--lambda",
                                "100",         "--width", "8",       "--eval-every",
                                "10",          "-o",      out,       "--json"};
  auto first = base;
  first.insert(first.end(), {"--steps", "20"});
  json a = run_json(first);
  CHECK(a["resumed_from"] == 0);
  CHECK(a["steps"] == 20);
  auto more = base;
  more.insert(more.end(), {"--steps", "30"});
  json b = run_json(more);
  CHECK(b["resumed_from"] == 20);
  CHECK(b["steps"] == 30);
  // Other settings: the checkpoint is not reused.
  auto other = more;
  other[4] = "200";
  json c = run_json(other);
  CHECK(c["resumed_from"] == 0);

  Result r = run_nwc({"train-codec", "--model", stories(), "--lambda", "-1", "-o", out});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--lambda must be positive") != std::string::npos);
  r = run_nwc({"train-codec", "--model", (dir.path() / "none.bin").string(), "--lambda", "1", "-o",
               (dir.path() / "x.nwcc").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("none.bin") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / "x.nwcc"));
}
