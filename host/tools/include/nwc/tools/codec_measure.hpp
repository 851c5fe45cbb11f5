// nwc/tools/codec_measure.hpp — `nwc codec measure`: what an NWC codec does to a model's linear
// weights, data-free (one quality level): the learned density's entropy estimate next to the real
// rANS bytes of the same symbols, the side information, and the weight error against the Shannon
// bound. It replays exactly what nwc.chunk.column + nwc.transform.neural + nwc.quant.round +
// nwc.entropy.rans do (16-vectors down columns, zero padding, row scales rounded to f16), so its
// rANS bytes equal a container's entropy streams for the same blocks.
#pragma once

#include "nwc/host/defaults.hpp"
#include "nwc/host/registry.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace nwc::tools {

struct CodecMeasureSettings {
  std::filesystem::path codec;
  std::filesystem::path model;
  int level = 0;
  int64_t block = 128; // columns per rANS stream, as the pipeline's compensator block
  // The entropy coder whose bytes are measured (with the codec's CDF tables).
  std::string measure_entropy = host::kDefaultMeasureEntropy;
};

struct CodecMeasureTensor {
  std::string name;
  int64_t rows = 0, cols = 0;
  double estimate_bits = 0; // -log2 likelihood of the latents under the learned density
  double rans_bits = 0;     // real rANS stream bytes x 8
  double side_bits = 0;     // f16 row scales (+ 1 byte dtype tag)
  double squared_error = 0; // sum over weights
  double sum = 0, sum_sq = 0;
};

struct CodecMeasure {
  std::vector<CodecMeasureTensor> tensors;
  double weights = 0;
  double estimate_bpw = 0, rans_bpw = 0, side_bpw = 0; // per weight of the coded linears
  double mse = 0, variance = 0;
  double shannon_mse = 0; // variance * 2^(-2 R), R = rans_bpw + side_bpw
};

CodecMeasure measure_codec(const CodecMeasureSettings &settings, const host::Registry &registry);

} // namespace nwc::tools
