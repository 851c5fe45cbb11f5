// nwc/runtime/calibrate.hpp — calibration statistics: for every group of linear layers that share
// an input, the second moment H = Σ x xᵀ / count of that input over calibration text (accumulated
// in float64), saved to and loaded from a safetensors file with provenance metadata.
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/hessian.hpp"

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nwc::runtime {

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
  unsigned threads = 1;   // slices run in parallel (0 = all cores)
};

// The calibration windows are dealt into this many slices (window w into slice w mod S, fewer
// slices when there are fewer windows). Each slice sums its windows in order and the slices are
// added in slice order: the Hessians are the same bits for any thread count and any number of
// MPI processes.
inline constexpr int64_t kCalibrationSlices = 8;

// What a calibration of this architecture on `stream_tokens` tokens holds, without the values:
// the inputs in forward order with their linears, dims and row counts. Checks seq_len and that
// the text gives at least one window.
Calibration calibration_plan(const Architecture &arch, int64_t stream_tokens,
                             const CalibrationSettings &settings);

using HessianSink = std::function<void(Hessian &&)>;

// Runs the calibration text (ppl-v1 document splitting and tokenization) through the model one
// decoder block at a time: the embedding gives every window's activations, then each block is
// loaded, every window goes through it, the Hessians of its four inputs are handed to `sink` in
// forward order, and the block is dropped. Peak memory: one block's weights (the embedding at
// the start), the activations of every window (tokens x dim x 4 bytes, twice) and the sums of one
// layer's inputs for threads + 1 slices; independent of the number of layers.
//
// With a job (mpirun), rank r runs the slices s = r (mod ranks) on its own share of the text and
// rank 0, the only one that calls sink, adds the slices in slice order. Returns the plan.
Calibration calibrate_layers(const Model &model, const std::vector<int32_t> &stream,
                             const CalibrationSettings &settings, const HessianSink &sink,
                             host::Job *job = nullptr);

// Sequential calibration, as GPTQ's reference (llama.py, true-sequential) and GPTQModel run it:
// the linears are replaced (quantized) as their Hessians become known, so every later Hessian sees
// the partially quantized model. `update` gets each input's Hessian in forward order (per block:
// attn_in, attn_out, mlp_in, mlp_out) and returns new values for linears that input feeds (weight
// name -> row-major values; linears it leaves out keep their values); the block's later inputs and
// the activations handed to the next block are computed with them. One process (no MPI job); the
// Hessians are the same bits for any thread count. Returns the plan (no values).
using SequentialUpdate = std::function<std::map<std::string, std::vector<float>>(const Hessian &)>;
Calibration calibrate_sequential(const Model &model, const std::vector<int32_t> &stream,
                                 const CalibrationSettings &settings,
                                 const SequentialUpdate &update);

// All Hessians in memory (small models, tests).
Calibration calibrate(const Model &model, const std::vector<int32_t> &stream,
                      const CalibrationSettings &settings);

// Calibrates and writes each Hessian to `path` as its layer finishes (bounded memory); rank 0
// writes, with a job. `c` supplies model_hash and text_hash; returns the plan (no values).
// on_hessian sees each Hessian before it is written.
Calibration calibrate_to_file(const Model &model, const std::vector<int32_t> &stream,
                              const CalibrationSettings &settings, const std::string &model_hash,
                              const std::string &text_hash, const std::filesystem::path &path,
                              host::Job *job = nullptr,
                              const std::function<void(const Hessian &)> &on_hessian = {});

// XXH64 over the names, shapes and float values of every tensor, as 16 hex digits: the same model
// in any file format (or decoded from a container) has the same fingerprint.
std::string model_fingerprint(const Model &model);

// safetensors: one F32 tensor per input named "hessian.<input>" (accumulated in float64, stored
// rounded to float32 as GPTQ uses it), metadata "nwc.calibration" (JSON:
// model_hash, text_hash, tokens, seq_len, and per input its linears and count).
void save_calibration(const Calibration &c, const std::filesystem::path &path);
Calibration load_calibration(const std::filesystem::path &path);

// A calibration file opened without reading its Hessians (an 8B-class model has tens of
// gigabytes of them): `info` has everything but the values, hessians_by_linear() loads each on
// demand from the memory-mapped file.
struct CalibrationFile {
  Calibration info;
  Model file;
};
CalibrationFile open_calibration(const std::filesystem::path &path);

// For compress: every linear's Hessian as float32 loaded when a coder asks for it.
std::map<std::string, host::HessianRef> hessians_by_linear(const CalibrationFile &file);

} // namespace nwc::runtime
