// nwc train-codec --model M [--model M2 ...] --lambda L -o CODEC.nwcc [training options]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/runtime/train_codec.hpp"

#include <iomanip>
#include <iostream>
#include <sstream>

namespace nwc::cli {

namespace {

struct TrainFlags {
  runtime::TrainCodecSettings ts;
  std::vector<std::string> models;
  std::string out, coefficients, layer_norm = "on", init;
};

void add_train_options(po::options_description &d, TrainFlags &f) {
  auto &ts = f.ts;
  d.add_options()("model,m", po::value(&f.models)->required()->composing(),
                  "model whose decoder-block linear weights form the training set (repeatable)")(
      "lambda", po::value(&ts.lambda)->required(),
      "rate-distortion trade-off (larger = more bits)")("output,o", po::value(&f.out)->required(),
                                                        "output codec file (.nwcc)")(
      "steps", po::value(&ts.steps)->default_value(2000),
      "training steps")("batch", po::value(&ts.batch)->default_value(256), "samples per step")(
      "sample-length", po::value(&ts.sample_length)->default_value(0),
      "weights per sample, a multiple of 16 (0 = min(1024, shortest column))")(
      "width", po::value(&ts.width)->default_value(64),
      "hidden width D")("blocks", po::value(&ts.blocks)->default_value(1), "residual blocks")(
      "latent", po::value(&ts.latent)->default_value(16),
      "latent dimension M")("levels", po::value(&ts.levels)->default_value(4), "quality levels Q")(
      "layer-norm", po::value(&f.layer_norm)->default_value("on"),
      "LayerNorm in the blocks: on|off")(
      "coefficients", po::value(&f.coefficients),
      "rate weight per level, comma-separated (default 3.4,1.2,0.1,0.05 for Q = 4)")(
      "normalize", po::value(&ts.normalize)->default_value("scalar"),
      "scalar (dataset mean/std, as the reference) or row (per-row std, as at compression)")(
      "lr", po::value(&ts.lr)->default_value(1e-4), "Adam learning rate of the transforms")(
      "aux-lr", po::value(&ts.aux_lr)->default_value(1e-3), "Adam learning rate of the quantiles")(
      "lr-drop", po::value(&ts.lr_drop)->default_value(0),
      "step after which both learning rates drop tenfold (0 = constant rate)")(
      "clip", po::value(&ts.clip)->default_value(1.0),
      "gradient norm clip (0 = off)")("eval-every", po::value(&ts.eval_every)->default_value(250),
                                      "steps between held-out evaluations (and checkpoints)")(
      "validation-samples", po::value(&ts.validation_samples)->default_value(1000),
      "held-out samples (at most 10% of the data)")("seed", po::value(&ts.seed)->default_value(100),
                                                    "random seed")(
      "restart", "ignore an existing checkpoint and start afresh")(
      "latent-quantizer", po::value(&ts.latent_quantizer),
      "train for this quantizer plugin's latents (e.g. nwc.quant.tcq) instead of rounding")(
      "latent-quantizer-option", po::value(&ts.latent_quantizer_options)->composing(),
      "KEY=VALUE: an option of --latent-quantizer (repeatable; e.g. states=64), as the pipeline's "
      "[quantizer] sets it")(
      "level-priors", po::bool_switch(&ts.level_priors),
      "one entropy prior per quality level (codec format 2); with --init a shared-prior codec "
      "starts every level's prior")(
      "prior-only", po::bool_switch(&ts.prior_only),
      "train only the entropy model of the --init codec: it codes as before, at a new rate")(
      "init", po::value(&f.init), "start from this codec file (same configuration)");
}

std::vector<double> parse_coefficients(const std::string &text) {
  std::vector<double> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      out.push_back(std::stod(item));
    } catch (const std::exception &) {
      throw UsageError("--coefficients: '" + item + "' is not a number");
    }
  }
  return out;
}

void print_training(const runtime::TrainCodecResult &r, const std::string &out, bool as_json) {
  if (as_json) {
    json levels = json::array();
    for (const auto &l : r.validation)
      levels.push_back({{"level", l.level},
                        {"bits_per_weight", l.bits_per_weight},
                        {"estimate_bpw", l.estimate_bpw},
                        {"mse", l.mse}});
    print_json({{"output", out},
                {"steps", r.steps},
                {"best_step", r.best_step},
                {"resumed_from", r.resumed_from},
                {"best_loss", r.best_loss},
                {"seconds", r.seconds},
                {"train_samples", r.train_samples},
                {"validation_samples", r.validation_samples},
                {"sample_length", r.sample_length},
                {"dataset_std", r.dataset_std},
                {"train_loss", r.train_loss},
                {"validation", levels}});
    return;
  }
  std::cout << "wrote " << out << " (best held-out loss " << fmt(r.best_loss, 4) << " at step "
            << r.best_step << " of " << r.steps << ", " << fmt(r.seconds, 1) << " s)\n";
  std::cout << "level  bits/w (rANS)  bits/w (estimate)  MSE/sigma^2\n";
  for (const auto &l : r.validation)
    std::cout << std::left << std::setw(7) << l.level << std::setw(15) << fmt(l.bits_per_weight, 3)
              << std::setw(19) << fmt(l.estimate_bpw, 3) << sci(l.mse) << "\n";
}

} // namespace

int cmd_train_codec(const Command &self, const Args &args) {
  Common c;
  TrainFlags f;
  po::options_description d(self.title());
  add_train_options(d, f);
  add_common(d, c);
  auto vm = parse(args, d, {}, self.usage);
  auto &ts = f.ts;
  if (f.layer_norm != "on" && f.layer_norm != "off") throw UsageError("--layer-norm: on or off");
  ts.layer_norm = f.layer_norm == "on";
  ts.resume = !vm.count("restart");
  ts.threads = c.threads;
  for (const auto &m : f.models) ts.models.emplace_back(m);
  ts.output = f.out;
  if (!f.init.empty()) ts.init = f.init;
  if (!f.coefficients.empty()) ts.level_coefficients = parse_coefficients(f.coefficients);
  host::Registry reg = load_registry(c);
  if (!c.quiet && !c.json) ts.log = [](const std::string &line) { std::cerr << line << "\n"; };
  print_training(runtime::train_codec(ts, reg), f.out, c.json);
  return 0;
}

} // namespace nwc::cli
