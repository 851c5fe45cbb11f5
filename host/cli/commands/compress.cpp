// nwc compress MODEL --pipeline FILE.toml -o OUT.nwc [--calibration H | --calibrate ...]
// [--target-bpw X] [--embed-codec]: flags into a request for nwc::runtime::run_compress, its
// reports and figures printed.
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/host/distributed.hpp"
#include "nwc/runtime/compress_job.hpp"

#include <filesystem>
#include <iostream>

namespace nwc::cli {

namespace {

runtime::CompressRequest parse_compress(const Command &self, const Args &args, Common &c) {
  std::string model, pipeline, output, calibration;
  runtime::CompressRequest req;
  po::options_description d(self.title());
  d.add_options()("model", po::value(&model)->required(), "model file or directory")(
      "pipeline,p", po::value(&pipeline)->required(),
      "pipeline TOML file")("output,o", po::value(&output)->required(), "output .nwc file")(
      "calibration", po::value(&calibration),
      "Hessians from `nwc calibrate` of this same model (for compensators that use them)")(
      "embed-codec", "store the codec files the pipeline names inside the container")(
      "tokenizer,t", po::value<std::string>(),
      "tokenizer of the model (pipelines with [blockft] fine-tune on calibration text)")(
      "calib-text", po::value(&req.calib_text),
      "calibration text for [blockft] (default: $NWC_DATA/text/tinystories-calib.txt)")(
      "target-bpw", po::value<double>(),
      "NWC pipelines: choose the ladder codec and level fractions whose measured bits per "
      "coded weight land closest to this")(
      "calibrate", "compute the Hessians first from --calib-text, layer by layer (needs "
                   "--tokenizer); under mpirun each rank runs a share of the text")(
      "calib-tokens", po::value(&req.calib_tokens)->default_value(65536),
      "tokens --calibrate runs (whole windows)")(
      "save-calibration", po::value<std::string>(),
      "keep the Hessians of --calibrate in this file (default: a temporary file beside OUT)");
  add_common(d, c);
  auto vm = parse(args, d, {"model"}, self.usage);
  req.model = model;
  req.pipeline = pipeline;
  req.output = output;
  req.calibration = calibration;
  req.calibrate = vm.count("calibrate") > 0;
  if (vm.count("save-calibration")) req.save_calibration = vm["save-calibration"].as<std::string>();
  if (vm.count("tokenizer")) req.tokenizer = vm["tokenizer"].as<std::string>();
  if (vm.count("target-bpw")) req.target_bpw = vm["target-bpw"].as<double>();
  req.embed_codec = vm.count("embed-codec") > 0;
  req.threads = c.threads;
  req.job = host::current_job();
  return req;
}

// Progress, fine-tuning and rate-search reports on stderr (not with --quiet; not with --json,
// except the remark about [blockft] under mpirun).
runtime::CompressCallbacks reporters(const Common &c, Progress &progress) {
  runtime::CompressCallbacks cb;
  cb.progress = std::ref(progress);
  if (c.quiet) return cb;
  cb.note = [](const std::string &line) { std::cerr << "nwc: " << line << "\n"; };
  if (c.json) return cb;
  cb.blockft = [](const runtime::BlockFtReport &b) {
    std::cerr << "blockft: " << b.linear << " held-out block MSE " << sci(b.mse_before) << " -> "
              << sci(b.mse_after) << " (epoch " << b.best_epoch << ")\n";
  };
  cb.rate_chosen = [](double target, const host::RateChoice &choice) {
    const auto &ch = choice.chosen;
    std::cerr << "target " << fmt(target, 3)
              << " bits/weight: " << std::filesystem::path(ch.codec).filename().string()
              << (ch.level >= 0 ? ", level " + std::to_string(ch.level)
                                : ", level fractions x" + fmt(ch.fraction_scale, 2))
              << " (" << fmt(ch.bits_per_weight, 3) << " bits/weight, best of "
              << choice.tried.size() << " candidates)\n";
  };
  return cb;
}

void print_outcome(const runtime::CompressOutcome &o, const std::string &output, const Common &c) {
  json rate = nullptr;
  if (o.rate)
    rate = {{"target_bpw", o.rate->target_bpw},
            {"codec", o.rate->chosen.codec},
            {"fraction_scale", o.rate->chosen.fraction_scale},
            {"level", o.rate->chosen.level},
            {"search_bpw", o.rate->chosen.bits_per_weight},
            {"candidates", o.rate->candidates},
            {"achieved_bpw", o.rate->achieved_bpw}};
  if (c.json) {
    json j = {{"output", output},
              {"tensors", o.tensors},
              {"weights", o.weights},
              {"bytes", o.bytes},
              {"bits_per_weight", o.bits_per_weight},
              {"seconds", o.seconds},
              {"pipeline", o.pipeline},
              {"coded_bits_per_weight", o.coded_bits_per_weight},
              {"processes", o.processes}};
    if (o.calibration_seconds) j["calibration_seconds"] = *o.calibration_seconds;
    if (o.rate) j["rate_control"] = rate;
    print_json(j);
  } else if (!c.quiet) {
    std::cout << "wrote " << output << ": " << o.tensors << " tensors, " << o.weights
              << " weights, " << o.bytes << " bytes, " << fmt(o.bits_per_weight, 3)
              << " bits/weight (pipeline " << o.pipeline << ", " << fmt(o.seconds, 2) << " s)\n";
    if (o.rate)
      std::cout << "target " << fmt(o.rate->target_bpw, 3) << " bits per coded weight, achieved "
                << fmt(o.coded_bits_per_weight, 3) << "\n";
  }
}

} // namespace

int cmd_compress(const Command &self, const Args &args) {
  Common c;
  const runtime::CompressRequest req = parse_compress(self, args, c);
  try {
    runtime::check_request(req);
    host::Registry reg = load_registry(c);
    const bool lead = !req.job || req.job->rank() == 0;
    Progress progress(lead && !c.quiet && !c.json, "compress");
    const runtime::CompressOutcome o = runtime::run_compress(req, reg, reporters(c, progress));
    if (o.written) print_outcome(o, req.output.string(), c);
  } catch (const runtime::RequestError &e) {
    throw UsageError(e.what());
  }
  return 0;
}

} // namespace nwc::cli
