#include "commands/compress_cli.hpp"

#include <filesystem>
#include <iostream>

namespace nwc::cli {

CompressFlags parse_compress_flags(const Command &self, const std::vector<std::string> &args,
                                   Common &c) {
  CompressFlags f;
  po::options_description d(self.title());
  d.add_options()("model", po::value(&f.model)->required(), "model file or directory")(
      "pipeline,p", po::value(&f.pipeline)->required(),
      "pipeline TOML file")("output,o", po::value(&f.output)->required(), "output .nwc file")(
      "calibration", po::value(&f.calibration),
      "Hessians from `nwc calibrate` of this same model (for compensators that use them)")(
      "embed-codec", "store the codec files the pipeline names inside the container")(
      "tokenizer,t", po::value(&f.tokenizer),
      "tokenizer of the model (pipelines with [blockft] or [awq] run on calibration text)")(
      "calib-text", po::value(&f.calib_text),
      "calibration text for --calibrate, [blockft] and [awq] (default: "
      "$NWC_DATA/text/tinystories-calib.txt)")(
      "target-bpw", po::value<double>(),
      "NWC pipelines: choose the ladder codec and level fractions whose measured bits per "
      "coded weight land closest to this")(
      "calibrate", "compute the Hessians first from --calib-text, layer by layer (needs "
                   "--tokenizer); under mpirun each rank runs a share of the text")(
      "calib-tokens", po::value(&f.calib_tokens)->default_value(65536),
      "tokens --calibrate and [awq] run (whole windows)")(
      "save-calibration", po::value(&f.save_calibration),
      "keep the Hessians of --calibrate in this file (default: a temporary file beside OUT)");
  add_common(d, c);
  auto vm = parse(args, d, {"model"}, self.usage);
  f.calibrate = vm.count("calibrate") > 0;
  f.embed_codec = vm.count("embed-codec") > 0;
  if (vm.count("target-bpw")) f.target_bpw = vm["target-bpw"].as<double>();
  return f;
}

json rate_control_json(double target, const host::RateCandidate &chosen, size_t candidates) {
  return {{"target_bpw", target},
          {"codec", chosen.codec},
          {"fraction_scale", chosen.fraction_scale},
          {"level", chosen.level},
          {"search_bpw", chosen.bits_per_weight},
          {"candidates", candidates}};
}

void print_rate_choice(double target, const host::RateChoice &choice) {
  const auto &ch = choice.chosen;
  std::cerr << "target " << fmt(target, 3)
            << " bits/weight: " << std::filesystem::path(ch.codec).filename().string()
            << (ch.level >= 0 ? ", level " + std::to_string(ch.level)
                              : ", level fractions x" + fmt(ch.fraction_scale, 2))
            << " (" << fmt(ch.bits_per_weight, 3) << " bits/weight, best of " << choice.tried.size()
            << " candidates)\n";
}

void print_compress(const CompressFigures &f, const std::string &output, const Common &c) {
  if (c.json) {
    json j = {{"output", output},
              {"tensors", f.tensors},
              {"weights", f.weights},
              {"bytes", f.bytes},
              {"bits_per_weight", f.bits_per_weight},
              {"seconds", f.seconds},
              {"pipeline", f.pipeline},
              {"coded_bits_per_weight", f.coded_bits_per_weight},
              {"processes", f.processes}};
    if (f.calibration_seconds) j["calibration_seconds"] = *f.calibration_seconds;
    if (f.awq_seconds) j["awq_seconds"] = *f.awq_seconds;
    if (f.allocate_seconds) j["allocate_seconds"] = *f.allocate_seconds;
    if (!f.rate_control.is_null()) j["rate_control"] = f.rate_control;
    if (!f.allocation.is_null()) j["allocation"] = f.allocation;
    print_json(j);
  } else if (!c.quiet) {
    std::cout << "wrote " << output << ": " << f.tensors << " tensors, " << f.weights
              << " weights, " << f.bytes << " bytes, " << fmt(f.bits_per_weight, 3)
              << " bits/weight (pipeline " << f.pipeline << ", " << fmt(f.seconds, 2) << " s)\n";
    if (f.awq_seconds) std::cout << "awq: scale search " << fmt(*f.awq_seconds, 2) << " s\n";
    if (f.allocate_seconds)
      std::cout << "allocate: sensitivities " << fmt(*f.allocate_seconds, 2) << " s\n";
    if (!f.rate_control.is_null())
      std::cout << "target " << fmt(f.rate_control["target_bpw"].get<double>(), 3)
                << " bits per coded weight, achieved " << fmt(f.coded_bits_per_weight, 3) << "\n";
  }
}

} // namespace nwc::cli
