// codec_model.hpp — the NWC neural codec as a trainable LibTorch module (arXiv 2510.11234, §1.4–1.5
// of docs/reference/nwc-method.md): analysis transform g_a, synthesis transform g_s, the
// quality-level embedding they share, and a factorized-prior entropy bottleneck; computing its
// quantized CDF tables and writing the `.nwcc` codec file. Used by `nwc train-codec` and tests; the
// plugin evaluates finalized codecs without LibTorch (codec_file.hpp).
//
// Private (it includes LibTorch); never part of the public SDK.
#pragma once

#include "nwc/formats/codec_file.hpp"

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc::neural {

// Input Linear -> nRB x (h += ReLU(LN(Linear(h))); h *= e_q) -> output Linear.
struct CoderImpl : torch::nn::Module {
  CoderImpl(int64_t in, int64_t out, const CodecConfig &cfg);
  torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &level_embedding);

  torch::nn::Linear input{nullptr}, output{nullptr};
  std::vector<torch::nn::Linear> linears;
  std::vector<torch::nn::LayerNorm> norms;
};
TORCH_MODULE(Coder);

// Ballé et al.'s factorized density, one univariate density per channel (CompressAI's
// EntropyBottleneck semantics: filters (3,3,3,3), init_scale 10, tail_mass 1e-9). With a prior per
// quality level it has levels x latent channels, level-major.
struct EntropyBottleneckImpl : torch::nn::Module {
  explicit EntropyBottleneckImpl(const CodecConfig &cfg);
  // x: [C, 1, N] -> logits of the cumulative density at x, [C, 1, N].
  torch::Tensor logits_cumulative(const torch::Tensor &x, bool stop_gradient) const;
  // y: [C, 1, N] -> probability mass of [y - 1/2, y + 1/2], bounded below by 1e-9.
  torch::Tensor likelihood(const torch::Tensor &y) const;
  // Trains `quantiles` toward the tail_mass/2, 1/2 and 1 - tail_mass/2 quantiles.
  torch::Tensor aux_loss() const;
  torch::Tensor medians() const; // [C]

  int64_t channels;
  double tail_mass;
  std::vector<torch::Tensor> matrices, biases, factors;
  torch::Tensor quantiles; // [C, 1, 3]: lower, median, upper
};
TORCH_MODULE(EntropyBottleneck);

struct NwcCodecImpl : torch::nn::Module {
  explicit NwcCodecImpl(const CodecConfig &cfg);
  // x: [N, chunk] (normalized weights), levels: [N] int64 -> latents y [N, latent].
  torch::Tensor analyze(const torch::Tensor &x, const torch::Tensor &levels);
  // y_hat: [N, latent] -> reconstruction [N, chunk].
  torch::Tensor synthesize(const torch::Tensor &y_hat, const torch::Tensor &levels);
  // Training pass with additive uniform noise: returns {x_hat, likelihoods [N, latent]}.
  std::pair<torch::Tensor, torch::Tensor> forward_noisy(const torch::Tensor &x,
                                                        const torch::Tensor &levels);
  // Training pass for another latent quantizer: quantize(latents) -> {the values the synthesis
  // sees, the symbols the entropy coder codes} (both in latent units), each passed straight
  // through: the synthesis sees the values, the likelihoods are the density's at the symbols.
  std::pair<torch::Tensor, torch::Tensor> forward_straight_through(
      const torch::Tensor &x, const torch::Tensor &levels,
      const std::function<std::pair<torch::Tensor, torch::Tensor>(const torch::Tensor &)>
          &quantize);
  // Likelihoods [N, latent] of already-quantized latents at their levels [N] (the entropy
  // estimate of real coding; the levels choose the prior when the codec has one per level).
  torch::Tensor likelihoods(const torch::Tensor &y_hat, const torch::Tensor &levels);
  // [latent]: the medians the latents are centered on before quantization (level 0's when the
  // codec has a prior per level; every level's tables sit on this one grid).
  torch::Tensor grid_medians() const;
  // Every parameter except the entropy model's quantiles (main optimizer) / the quantiles (aux).
  std::vector<torch::Tensor> main_parameters();
  std::vector<torch::Tensor> aux_parameters();
  // The entropy model's density parameters (main parameters of the bottleneck, no quantiles).
  std::vector<torch::Tensor> prior_parameters();

  CodecConfig config;
  Coder g_a{nullptr}, g_s{nullptr};
  torch::nn::Embedding level_embedding{nullptr};
  EntropyBottleneck bottleneck{nullptr};
};
TORCH_MODULE(NwcCodec);

// Sets the entropy model's quantiles to the exact tail_mass/2, median and 1 - tail_mass/2 points of
// the learned densities (bisection on the monotone cumulative), instead of where the auxiliary
// loss has got to: the tables then cover the latents' real range and few values are escaped.
void fit_quantiles(NwcCodec &codec);

// Builds the tables from the trained density (CompressAI's update(): per channel the integer range
// around the median covering the quantiles, plus one escape interval for the tails).
CdfTables compute_tables(const NwcCodec &codec);

// `.nwcc` = safetensors: every parameter (F32) and the tables (cdf/lengths/offsets as I32, medians
// F32), metadata key "nwc.codec" holding {"format": "nwcc", "version", "config", ...metadata}.
void save_codec(const std::filesystem::path &path, const NwcCodec &model, const CdfTables &tables,
                const nlohmann::json &metadata);
// The parameters of a codec file in a LibTorch module (for tools and tests).
NwcCodec load_codec_module(const std::filesystem::path &path);

} // namespace nwc::neural
