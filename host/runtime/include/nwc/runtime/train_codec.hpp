// nwc/runtime/train_codec.hpp — `nwc train-codec`: trains an NWC neural codec on the linear weights
// of one or more models and writes a finalized `.nwcc` codec file (docs/reference/nwc-method.md
// §2).
//
// Dataset: every decoder-block linear weight W [m, n] of each model, transposed and cut into
// samples of `sample_length` consecutive column entries (viewed as vectors of 16), normalized by
// the dataset's scalar mean and std (or per row, as at compression time). A quality level is drawn
// per sample; the loss is lambda * MSE / sigma^2 + sum_b c[q_b] * bits_b / #weights, with Adam on
// the transforms and a separate Adam on the entropy model's quantiles (auxiliary loss). Validation
// codes held-out samples for real (rounding + the bytes of `measure_entropy`, rANS by default), per
// level; the best
// checkpoint by validation loss is the codec written. Rerunning with the same output resumes.
#pragma once

#include "nwc/host/defaults.hpp"
#include "nwc/host/registry.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace nwc::runtime {

struct TrainCodecSettings {
  std::vector<std::filesystem::path> models;
  std::filesystem::path output; // .nwcc; checkpoints go beside it (OUTPUT.ckpt*)
  double lambda = 100.0;
  int64_t steps = 2000;
  int64_t batch = 256;       // samples per step
  int64_t sample_length = 0; // entries per sample; 0 = min(1024, shortest column), multiple of 16
  int64_t width = 64;        // hidden width D
  int64_t blocks = 1;        // residual blocks
  int64_t latent = 16;       // latent dimension M
  int64_t levels = 4;        // quality levels Q
  bool layer_norm = true;
  // One prior per quality level instead of one shared by all (codec format version 2). With
  // `init` a codec with a shared prior may start it: each level's prior starts as that prior.
  bool level_priors = false;
  // Train the entropy model alone (the transforms keep `init`'s parameters): the codec codes
  // exactly as before and only its rate changes. Needs `init`.
  bool prior_only = false;
  std::vector<double> level_coefficients; // empty = the reference table for `levels`
  std::string normalize = "scalar";       // "scalar" (dataset mean/std) or "row" (per-row std)
  double lr = 1e-4;
  // Steps after which both learning rates drop tenfold (0 = never). The reference trains 200k
  // steps at a constant rate; a short CPU run needs the drop to reach fine reconstructions.
  int64_t lr_drop = 0;
  double aux_lr = 1e-3;
  double clip = 1.0; // global gradient L2 norm; 0 = off
  int64_t eval_every = 250;
  int64_t validation_samples = 1000; // at most; never more than 10% of the data
  uint64_t seed = 100;
  unsigned threads = 0; // LibTorch intra-op threads; 0 = all cores
  bool resume = true;   // continue from OUTPUT.ckpt when it matches these settings
  // The entropy coder that codes the held-out samples for real (with the codec's CDF tables).
  std::string measure_entropy = host::kDefaultMeasureEntropy;
  // The quantizer plugin the codec is trained for (empty: rounding). Its dequantized latents (one
  // trellis path per sample for nwc.quant.tcq, or per path_columns samples) feed the synthesis in
  // the distortion term, straight-through; the rate term keeps the noisy proxy. Held-out samples
  // are coded with it too, so the best checkpoint is chosen as the pipeline will code.
  std::string latent_quantizer;
  // Its options as KEY=VALUE (e.g. "states=64"), over its defaults: those of the pipeline's
  // [quantizer] the codec is meant for.
  std::vector<std::string> latent_quantizer_options;
  // A codec file with the same configuration to start from (fine-tuning); empty: random start.
  std::filesystem::path init;
  std::function<void(const std::string &line)> log;
};

struct LevelFigures {
  int64_t level = 0;
  double bits_per_weight = 0; // measured: rANS bytes of the held-out samples at this level
  double estimate_bpw = 0;    // -log2 likelihood under the learned density
  double mse = 0;             // normalized: MSE / sigma^2
};

struct TrainCodecResult {
  int64_t steps = 0;
  int64_t best_step = 0;
  int64_t resumed_from = 0; // 0 = fresh start
  double best_loss = 0;
  double seconds = 0;
  int64_t train_samples = 0, validation_samples = 0, sample_length = 0;
  double dataset_std = 0;
  std::vector<LevelFigures> validation; // of the best checkpoint
  std::vector<double> train_loss;       // mean training loss per evaluation interval
};

TrainCodecResult train_codec(const TrainCodecSettings &settings, const host::Registry &registry);

} // namespace nwc::runtime
