// nwc/runtime/calibrate_job.hpp — `nwc calibrate` as library calls: the calibration text
// (default, refusal of the evaluation text, tokenization, provenance hash) and a calibration
// written layer by layer to a file stamped with the model's fingerprint, with a summary of every
// input's Hessian. `nwc compress --calibrate` (compress_job.hpp) runs the same steps.
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/runtime/calibrate.hpp"

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace nwc::runtime {

// A request that cannot run as given: a required setting is missing, or two contradict each
// other. The message names the setting by its `nwc` option (front ends report it as a usage
// error, exit code 2). Failures of the work itself are nwc::Error.
struct RequestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The calibration text file: `given`, else $NWC_DATA/text/tinystories-calib.txt (RequestError
// naming `option` when neither is set). Never the evaluation half of TinyStories
// (tinystories-eval.txt, an nwc::Error): calibrating on it would flatter every method evaluated
// on it afterwards.
std::filesystem::path calibration_text_path(const std::string &given, const std::string &option);

struct CalibrationText {
  std::filesystem::path path;
  std::string hash;            // XXH64 of the file's bytes, 16 hex digits (provenance)
  std::vector<int32_t> tokens; // the ppl-v1 token stream (eval.hpp)
};

// Loads the tokenizer (its vocabulary checked against vocab_size, 0 = unchecked), then reads and
// tokenizes the text.
CalibrationText load_calibration_text(const std::filesystem::path &text,
                                      const std::filesystem::path &tokenizer, int64_t vocab_size);

// One input's Hessian as written: the linears it feeds, its size, the rows accumulated, trace(H).
struct HessianSummary {
  std::string input;
  std::vector<std::string> linears;
  int64_t dim = 0;
  int64_t count = 0;
  double trace = 0;
};

struct CalibrateOutcome {
  bool written = false; // this process wrote the file (false on ranks other than 0 of a job)
  Calibration plan;     // tokens, seq_len, model_hash, text_hash, inputs (no values)
  std::vector<HessianSummary> inputs; // in forward order (the writing process only)
  double seconds = 0;                 // the calibration itself
};

// Calibrates `model` on `text` one decoder block at a time into `out` (calibrate_to_file), the
// file stamped with model_fingerprint(model) and text.hash. Under a job every rank runs its share
// of the windows and rank 0 writes; the bytes are those of one process.
CalibrateOutcome calibrate_into_file(const Model &model, const CalibrationText &text,
                                     const CalibrationSettings &settings,
                                     const std::filesystem::path &out, host::Job *job = nullptr);

} // namespace nwc::runtime
