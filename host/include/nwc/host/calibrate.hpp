// nwc/host/calibrate.hpp — calibration statistics: for every group of linear layers that share an
// input, the second moment H = Σ x xᵀ / count of that input over calibration text (accumulated
// in float64), saved to and loaded from a safetensors file with provenance metadata.
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/host/llama.hpp"

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace nwc::host {

struct Hessian {
  std::string input;                // "layers.0.attn_in"
  std::vector<std::string> linears; // weight names fed by this input
  int64_t dim = 0;
  int64_t count = 0;     // rows (tokens) accumulated
  std::vector<double> h; // dim x dim, row-major, already divided by count
};

struct Calibration {
  std::vector<Hessian> hessians;
  std::string model_hash; // model_fingerprint() of the calibrated model
  std::string text_hash;  // XXH64 of the calibration text file
  int64_t tokens = 0;     // tokens run through the model (windows x seq_len)
  int64_t seq_len = 0;

  // The Hessian whose input feeds weight `name`, or nullptr.
  const Hessian *for_linear(const std::string &name) const;
};

struct CalibrationSettings {
  int64_t tokens = 65536; // upper bound on tokens used (whole windows only)
  int64_t seq_len = 0;    // 0 = the model's maximum
  unsigned threads = 1;   // windows run in parallel (0 = all cores), each with its own sums,
                          // added in thread order: deterministic for a given thread count
};

// Runs the calibration text (ppl-v1 document splitting and tokenization) through the model.
Calibration calibrate(const LlamaModel &model, const std::vector<int32_t> &stream,
                      const CalibrationSettings &settings);

// XXH64 over the names, shapes and float values of every tensor, as 16 hex digits: the same model
// in any file format (or decoded from a container) has the same fingerprint.
std::string model_fingerprint(const Model &model);

// safetensors: one F32 tensor per input named "hessian.<input>" (accumulated in float64, stored
// rounded to float32 as GPTQ uses it), metadata "nwc.calibration" (JSON:
// model_hash, text_hash, tokens, seq_len, and per input its linears and count).
void save_calibration(const Calibration &c, const std::filesystem::path &path);
Calibration load_calibration(const std::filesystem::path &path);

} // namespace nwc::host
