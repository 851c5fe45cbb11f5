// nwc compress MODEL --pipeline FILE.toml -o OUT.nwc [--calibration H | --calibrate ...]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/target_rate.hpp"
#include "nwc/runtime/blockft.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>

namespace nwc::cli {

using namespace nwc::host;
using namespace nwc::runtime;

namespace {

// The calibration text: `given`, else $NWC_DATA/text/tinystories-calib.txt; never the evaluation
// half of TinyStories (calibrating on it would flatter every method evaluated on it afterwards).
std::string calibration_text(const std::string &given, const std::string &option) {
  std::string path = given;
  if (path.empty()) {
    const char *data = std::getenv("NWC_DATA");
    if (!data || !*data)
      throw UsageError(option + " is required (or set NWC_DATA to use its " +
                       "text/tinystories-calib.txt)");
    path = (std::filesystem::path(data) / "text" / "tinystories-calib.txt").string();
  }
  if (std::filesystem::path(path).filename() == "tinystories-eval.txt")
    throw Error(NWC_E_INVALID_ARG, path + ": this is the evaluation half of TinyStories; "
                                          "calibrate on tinystories-calib.txt");
  return path;
}

std::string text_hash(const std::string &text) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(container_checksum(text.data(), text.size())));
  return hex;
}

} // namespace

int cmd_compress(const Command &self, const Args &args) {
  Common c;
  std::string model_path, pipeline_path, out, calibration_path;
  po::options_description d(self.title());
  d.add_options()("model", po::value(&model_path)->required(), "model file or directory")(
      "pipeline,p", po::value(&pipeline_path)->required(),
      "pipeline TOML file")("output,o", po::value(&out)->required(), "output .nwc file")(
      "calibration", po::value(&calibration_path),
      "Hessians from `nwc calibrate` of this same model (for compensators that use them)")(
      "embed-codec", "store the codec files the pipeline names inside the container")(
      "tokenizer,t", po::value<std::string>(),
      "tokenizer of the model (pipelines with [blockft] fine-tune on calibration text)")(
      "calib-text", po::value<std::string>(),
      "calibration text for [blockft] (default: $NWC_DATA/text/tinystories-calib.txt)")(
      "target-bpw", po::value<double>(),
      "NWC pipelines: choose the ladder codec and level fractions whose measured bits per "
      "coded weight land closest to this")(
      "calibrate", "compute the Hessians first from --calib-text, layer by layer (needs "
                   "--tokenizer); under mpirun each rank runs a share of the text")(
      "calib-tokens", po::value<int64_t>()->default_value(65536),
      "tokens --calibrate runs (whole windows)")(
      "save-calibration", po::value<std::string>(),
      "keep the Hessians of --calibrate in this file (default: a temporary file beside OUT)");
  add_common(d, c);
  auto vm = parse(args, d, {"model"}, self.usage);
  Job *job = current_job();
  const bool lead = !job || job->rank() == 0; // the process that writes and reports
  const bool calibrate_first = vm.count("calibrate") > 0;
  if (calibrate_first && !calibration_path.empty())
    throw UsageError("--calibrate computes the Hessians; do not also pass --calibration");
  if (vm.count("save-calibration") && !calibrate_first)
    throw UsageError("--save-calibration needs --calibrate");
  if (job && vm.count("target-bpw"))
    throw UsageError("--target-bpw runs in one process; start it without mpirun");
  Registry reg = load_registry(c);
  Pipeline pl = load_pipeline(pipeline_path, reg);
  Model model = load_model(model_path);
  Progress progress(lead && !c.quiet && !c.json, "compress");
  CompressSettings s;
  s.threads = c.threads;
  s.progress = std::ref(progress);
  s.embed_resources = vm.count("embed-codec") > 0;
  s.job = job;
  // Calibration and fine-tuning inputs are checked before any coding (a rate search can take
  // minutes).
  std::vector<int32_t> tokens;
  std::string text;
  if (pl.blockft.enabled || calibrate_first) {
    if (!vm.count("tokenizer"))
      throw UsageError(
          std::string(calibrate_first ? "--calibrate" : pipeline_path + " has [blockft]") +
          ": --tokenizer is required");
    const std::string text_path = calibration_text(
        vm.count("calib-text") ? vm["calib-text"].as<std::string>() : "", "--calib-text");
    auto tok = load_tokenizer(vm["tokenizer"].as<std::string>(), model.arch.vocab_size);
    text = read_text_file(text_path);
    tokens = ppl_token_stream(text, *tok);
  }
  auto t0 = std::chrono::steady_clock::now();
  std::optional<ScratchFile> scratch; // the Hessians of --calibrate, unless they are kept
  double calib_secs = 0;
  if (calibrate_first) {
    CalibrationSettings cs;
    cs.tokens = vm["calib-tokens"].as<int64_t>();
    cs.threads = c.threads;
    if (cs.tokens < 1) throw UsageError("--calib-tokens must be >= 1");
    if (vm.count("save-calibration")) {
      calibration_path = vm["save-calibration"].as<std::string>();
    } else {
      const std::filesystem::path o(out);
      calibration_path =
          (o.parent_path() / ("." + o.filename().string() + ".calibration.safetensors")).string();
      if (lead) scratch.emplace(calibration_path);
    }
    const std::string fp = lead ? model_fingerprint(model) : "";
    calibrate_to_file(model, tokens, cs, fp, text_hash(text), calibration_path, job);
    if (job) job->barrier(); // rank 0 has written the file every rank reads from
    calib_secs = seconds_since(t0);
  }
  if (!calibration_path.empty()) {
    CalibrationFile cal = open_calibration(calibration_path);
    if (lead && !calibrate_first) {
      std::string fp = model_fingerprint(model);
      if (fp != cal.info.model_hash)
        throw Error(NWC_E_INVALID_ARG, calibration_path + ": calibrated on model " +
                                           cal.info.model_hash + ", but " + model_path + " is " +
                                           fp + " (rerun nwc calibrate on this model)");
    }
    s.hessians = hessians_by_linear(cal); // loaded tensor by tensor as coders need them
  }
  if (job && pl.blockft.enabled) {
    // Block fine-tuning walks the model in order, each block after the one before: rank 0 runs it.
    if (!lead) return 0;
    s.job = nullptr;
    if (!c.quiet)
      std::cerr << "nwc: [blockft] runs on rank 0; the other ranks helped with calibration only\n";
  }
  json rate = nullptr;
  if (vm.count("target-bpw")) {
    const double target = vm["target-bpw"].as<double>();
    RateChoice choice = choose_for_target_bpw(model, pl, reg, s, target, out);
    pl = choice.pipeline;
    const auto &ch = choice.chosen;
    rate = {{"target_bpw", target},
            {"codec", ch.codec},
            {"fraction_scale", ch.fraction_scale},
            {"level", ch.level},
            {"search_bpw", ch.bits_per_weight},
            {"candidates", choice.tried.size()}};
    if (!c.quiet && !c.json)
      std::cerr << "target " << fmt(target, 3)
                << " bits/weight: " << std::filesystem::path(ch.codec).filename().string()
                << (ch.level >= 0 ? ", level " + std::to_string(ch.level)
                                  : ", level fractions x" + fmt(ch.fraction_scale, 2))
                << " (" << fmt(ch.bits_per_weight, 3) << " bits/weight, best of "
                << choice.tried.size() << " candidates)\n";
  }
  CompressResult r;
  if (pl.blockft.enabled) {
    auto ft = compress_model_blockft(model, pl, reg, out, s, tokens, [&](const BlockFtReport &b) {
      if (!c.quiet && !c.json)
        std::cerr << "blockft: " << b.linear << " held-out block MSE " << sci(b.mse_before)
                  << " -> " << sci(b.mse_after) << " (epoch " << b.best_epoch << ")\n";
    });
    r = ft.compress;
  } else {
    r = compress_model(model, pl, reg, out, s);
  }
  if (!lead) return 0; // rank 0 wrote the container and reports
  double secs = seconds_since(t0);
  uint64_t numel = 0;
  for (const auto &t : r.tensors) numel += t.numel;
  double bpw = numel ? static_cast<double>(r.file_bytes) * 8.0 / static_cast<double>(numel) : 0;
  double coded_bytes = 0, coded_weights = 0;
  for (const auto &t : r.tensors)
    if (t.storage == "pipeline") {
      coded_bytes += static_cast<double>(t.stream_bytes);
      coded_weights += static_cast<double>(t.numel);
    }
  const double coded_bpw = coded_weights > 0 ? 8.0 * coded_bytes / coded_weights : 0.0;
  if (!rate.is_null()) rate["achieved_bpw"] = coded_bpw;
  if (c.json) {
    json j = {{"output", out},
              {"tensors", r.tensors.size()},
              {"weights", numel},
              {"bytes", r.file_bytes},
              {"bits_per_weight", bpw},
              {"seconds", secs},
              {"pipeline", pl.name},
              {"coded_bits_per_weight", coded_bpw},
              {"processes", job ? job->size() : 1}};
    if (calibrate_first) j["calibration_seconds"] = calib_secs;
    if (!rate.is_null()) j["rate_control"] = rate;
    std::cout << j.dump(2) << "\n";
  } else if (!c.quiet) {
    std::cout << "wrote " << out << ": " << r.tensors.size() << " tensors, " << numel
              << " weights, " << r.file_bytes << " bytes, " << fmt(bpw, 3)
              << " bits/weight (pipeline " << pl.name << ", " << fmt(secs, 2) << " s)\n";
    if (!rate.is_null())
      std::cout << "target " << fmt(rate["target_bpw"].get<double>(), 3)
                << " bits per coded weight, achieved " << fmt(coded_bpw, 3) << "\n";
  }
  return 0;
}

} // namespace nwc::cli
