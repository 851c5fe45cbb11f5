// codec_file.hpp — a finalized NWC codec as the plugin uses it, without LibTorch: the `.nwcc` file
// (safetensors: parameters, quantized CDF tables, JSON metadata) and the two MLPs evaluated in
// plain C++.
//
// The MLPs are evaluated with a fixed summation order per output (vectorized across outputs, never
// across a sum) and no fused multiply-adds, so a reconstruction is the same float bits on every
// machine and with any thread count: the encoder computes exactly what any decoder will.
#pragma once

#include "nwc/kinds/common.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc::neural {

// Version 1: one prior shared by every quality level. Version 2: a prior per quality level
// (CodecConfig::level_priors); both are read, and a codec is written in the lowest that holds it.
inline constexpr int kCodecFormatVersion = 2;
inline constexpr uint32_t kCdfPrecision = 16;

struct CodecConfig {
  int64_t chunk = 16;  // elements per input vector
  int64_t width = 512; // hidden width D
  int64_t blocks = 4;  // residual blocks nRB
  int64_t latent = 16; // latent dimension M (= entropy model channels)
  int64_t levels = 4;  // quality levels Q
  bool layer_norm = true;
  // One factorized prior per quality level instead of one shared by all: the entropy model has
  // levels x latent channels (level-major) and the CDF tables one set per level (format version 2).
  bool level_priors = false;
  std::vector<int64_t> density_filters{3, 3, 3, 3};
  double init_scale = 10.0;
  double tail_mass = 1e-9;

  int64_t priors() const { return level_priors ? levels : 1; } // sets of prior channels
  int format_version() const { return level_priors ? 2 : 1; }
  nlohmann::json to_json() const;
  static CodecConfig from_json(const nlohmann::json &j, const std::string &where);
  void validate(const std::string &where) const;
};

// The rate coefficients c[q] of the training loss, per quality level (Q = 4: 3.4, 1.2, 0.1, 0.05).
std::vector<double> default_level_coefficients(int64_t levels);

// Quantized CDF tables of the entropy model, computed once when a codec is finalized and then only
// read (decoding never recomputes them). Layout matches nwc_cdf_model: with a prior per quality
// level, table q * channels + c is channel c's at level q. The medians (one per channel) are the
// grid the latents are rounded around, the same at every level.
struct CdfTables {
  uint32_t precision = kCdfPrecision;
  int64_t channels = 0;
  int64_t levels = 1; // sets of tables: 1, or the codec's levels with level priors
  int64_t max_length = 0;
  std::vector<uint32_t> cdf; // levels x channels x max_length
  std::vector<uint32_t> lengths;
  std::vector<int32_t> offsets;
  std::vector<float> medians;
  // The tables as the entropy coders take them (default_level 0; the host fills in the row
  // levels); valid while this object lives unchanged.
  nwc_cdf_model view() const {
    return nwc_cdf_model{sizeof(nwc_cdf_model),
                         precision,
                         static_cast<uint32_t>(channels),
                         static_cast<uint32_t>(max_length),
                         cdf.data(),
                         lengths.data(),
                         offsets.data(),
                         static_cast<uint32_t>(levels),
                         0,
                         0,
                         nullptr};
  }
};

// The unbiased standard deviation of n values in double, or 1 where it is 0, not finite or n < 2:
// the row scale nwc.chunk.column stores (trainer and measure tool normalize rows the same way).
inline double row_std(const float *row, int64_t n) {
  if (n < 2) return 1.0;
  double sum = 0, sq = 0;
  for (int64_t j = 0; j < n; ++j) sum += row[j];
  const double mean = sum / static_cast<double>(n);
  for (int64_t j = 0; j < n; ++j) sq += (row[j] - mean) * (row[j] - mean);
  const double sd = std::sqrt(sq / static_cast<double>(n - 1));
  return sd > 0 && std::isfinite(sd) ? sd : 1.0;
}

// A probability mass function (non-negative, finite) -> a CDF of n + 1 points with cdf[0] = 0,
// cdf[n] = 2^precision and every interval at least 1 (each symbol stays codable).
std::vector<uint32_t> quantize_pmf(const std::vector<double> &pmf, uint32_t precision);

struct DenseLayer {
  int64_t in = 0, out = 0;
  std::vector<float> weight_t; // [in][out]: transposed, so the inner loop runs over outputs
  std::vector<float> bias;     // [out]
};

// Input Linear -> blocks x (h = (h + ReLU(LN(Linear(h)))) * e_q) -> output Linear.
struct DenseCoder {
  DenseLayer input, output;
  std::vector<DenseLayer> linears;
  std::vector<std::vector<float>> norm_weight, norm_bias; // empty without LayerNorm
};

// The factorized density of one latent channel (CompressAI's EntropyBottleneck): a monotone MLP
// on scalars giving the logits of the cumulative distribution.
struct ChannelDensity {
  std::vector<std::vector<double>> matrices; // softplus already applied; layer i: [f_{i+1}][f_i]
  std::vector<std::vector<double>> biases;   // layer i: [f_{i+1}]
  std::vector<std::vector<double>> factors;  // tanh already applied; layers 0..n-2
  double logits_cumulative(double x) const;
  // Probability mass of [y - 1/2, y + 1/2], bounded below by 1e-9 as in training.
  double likelihood(double y) const;
};

struct CodecFile {
  CodecConfig config;
  DenseCoder analysis, synthesis;     // g_a, g_s
  std::vector<float> level_embedding; // [levels][width]
  CdfTables tables;
  std::vector<ChannelDensity> density; // per prior channel (level-major): the entropy estimate
  nlohmann::json metadata = nlohmann::json::object(); // lambda, coefficients, training, validation
  std::vector<std::string> parameter_names;           // as stored, for the training tools

  // x: [n][chunk] -> y: [n][latent]; levels: [n] (each < config.levels).
  void analyze(const float *x, int64_t n, const uint8_t *levels, float *y) const;
  // y: [n][latent] -> x: [n][chunk].
  void synthesize(const float *y, int64_t n, const uint8_t *levels, float *x) const;
  // Sum of -log2 p(y_hat) over quantized latents [n][latent] (not centered): the rate the
  // learned density predicts, which real rANS coding approaches. levels: [n], each latent vector's
  // quality level (its level's prior); null means level 0.
  double estimate_bits(const float *y_hat, int64_t n, const uint8_t *levels = nullptr) const;
};

// Loads and validates a `.nwcc` file; errors name the file and what is wrong. The parameters come
// from the file's tensors named as the LibTorch module names them (g_a.input.weight, ...).
CodecFile load_codec(const std::filesystem::path &path);

} // namespace nwc::neural
