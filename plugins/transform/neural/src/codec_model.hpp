// codec_model.hpp — the NWC neural codec (arXiv 2510.11234, §1.4–1.5 of
// docs/reference/nwc-method.md): analysis transform g_a, synthesis transform g_s, the quality-level
// embedding they share, and a factorized-prior entropy bottleneck; plus its quantized CDF tables
// and the `.nwcc` codec file. Shared by the nwc.transform.neural plugin and `nwc train-codec`.
//
// Private to the plugin and the trainer (it includes LibTorch); never part of the public SDK.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc::neural {

inline constexpr int kCodecFormatVersion = 1;
inline constexpr uint32_t kCdfPrecision = 16;

struct CodecConfig {
  int64_t chunk = 16;  // elements per input vector
  int64_t width = 512; // hidden width D
  int64_t blocks = 4;  // residual blocks nRB
  int64_t latent = 16; // latent dimension M (= entropy model channels)
  int64_t levels = 4;  // quality levels Q
  bool layer_norm = true;
  std::vector<int64_t> density_filters{3, 3, 3, 3};
  double init_scale = 10.0;
  double tail_mass = 1e-9;

  nlohmann::json to_json() const;
  static CodecConfig from_json(const nlohmann::json &j, const std::string &where);
  void validate(const std::string &where) const;
};

// The rate coefficients c[q] of the training loss, per quality level (Q = 4: 3.4, 1.2, 0.1, 0.05).
std::vector<double> default_level_coefficients(int64_t levels);

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
// EntropyBottleneck semantics: filters (3,3,3,3), init_scale 10, tail_mass 1e-9).
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

// Quantized CDF tables of the entropy bottleneck, computed once when a codec is finalized and then
// only read (decoding never recomputes them). Layout matches nwc_cdf_model.
struct CdfTables {
  uint32_t precision = kCdfPrecision;
  int64_t channels = 0;
  int64_t max_length = 0;
  std::vector<uint32_t> cdf; // channels x max_length
  std::vector<uint32_t> lengths;
  std::vector<int32_t> offsets;
  std::vector<float> medians;
};

struct NwcCodecImpl : torch::nn::Module {
  explicit NwcCodecImpl(const CodecConfig &cfg);
  // x: [N, chunk] (normalized weights), levels: [N] int64 -> latents y [N, latent].
  torch::Tensor analyze(const torch::Tensor &x, const torch::Tensor &levels);
  // y_hat: [N, latent] -> reconstruction [N, chunk].
  torch::Tensor synthesize(const torch::Tensor &y_hat, const torch::Tensor &levels);
  // Training pass with additive uniform noise: returns {x_hat, likelihoods [N, latent]}.
  std::pair<torch::Tensor, torch::Tensor> forward_noisy(const torch::Tensor &x,
                                                        const torch::Tensor &levels);
  // Likelihoods [N, latent] of already-quantized latents (entropy estimate of real coding).
  torch::Tensor likelihoods(const torch::Tensor &y_hat);
  // Every parameter except the entropy model's quantiles (main optimizer) / the quantiles (aux).
  std::vector<torch::Tensor> main_parameters();
  std::vector<torch::Tensor> aux_parameters();

  CodecConfig config;
  Coder g_a{nullptr}, g_s{nullptr};
  torch::nn::Embedding level_embedding{nullptr};
  EntropyBottleneck bottleneck{nullptr};
};
TORCH_MODULE(NwcCodec);

// Builds the tables from the trained density (CompressAI's update(): per channel the integer range
// around the median covering the quantiles, plus one escape interval for the tails).
CdfTables compute_tables(const NwcCodec &codec);

// A probability mass function (non-negative, finite) -> a CDF of n + 1 points with cdf[0] = 0,
// cdf[n] = 2^precision and every interval at least 1 (each symbol stays codable).
std::vector<uint32_t> quantize_pmf(const std::vector<double> &pmf, uint32_t precision);

// A finalized codec as stored in a `.nwcc` file.
struct CodecFile {
  CodecConfig config;
  NwcCodec model{nullptr};
  CdfTables tables;
  nlohmann::json metadata = nlohmann::json::object(); // lambda, coefficients, training, validation
};

// `.nwcc` = safetensors: every parameter (F32) and the tables (cdf/lengths/offsets as I32, medians
// F32), metadata key "nwc.codec" holding {"format": "nwcc", "version", "config", ...metadata}.
void save_codec(const std::filesystem::path &path, const NwcCodec &model, const CdfTables &tables,
                const nlohmann::json &metadata);
// Loads and validates a codec file; errors name the file and what is wrong.
CodecFile load_codec(const std::filesystem::path &path);

} // namespace nwc::neural
