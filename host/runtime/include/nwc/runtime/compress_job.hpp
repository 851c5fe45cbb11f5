// nwc/runtime/compress_job.hpp — `nwc compress` as one library call: from a model file and a
// pipeline file to a written container and the figures reported about it.
//
// run_compress() validates the request, loads the pipeline and the model, optionally calibrates
// first into a scratch file (or a kept one), opens the calibration on demand (refusing one made
// from another model), runs [blockft] on rank 0 of a job, optionally searches the codec ladder
// for a target rate (--target-bpw, one process only), compresses (or compresses with block
// fine-tuning) and measures the result. A pipeline with [calibration] mode = "sequential"
// calibrates while it codes (compress_model_sequential), from the --calibrate text. Progress and
// the fine-tuning and rate reports reach the caller through callbacks; nothing is printed.
#pragma once

#include "nwc/host/compress.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/registry.hpp"
#include "nwc/host/target_rate.hpp"
#include "nwc/runtime/allocate.hpp"
#include "nwc/runtime/awq.hpp"
#include "nwc/runtime/blockft.hpp"
#include "nwc/runtime/calibrate_job.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace nwc::runtime {

struct CompressRequest {
  std::filesystem::path model;    // model file or directory (any reader's format)
  std::filesystem::path pipeline; // pipeline TOML
  std::filesystem::path output;   // the .nwc container, written atomically
  // Hessians from `nwc calibrate` of this same model (checked by fingerprint); empty: none.
  std::filesystem::path calibration;
  // Compute the Hessians first from the calibration text, layer by layer, into save_calibration,
  // or (empty) into a scratch file beside the output that is removed at the end.
  bool calibrate = false;
  std::filesystem::path save_calibration;
  int64_t calib_tokens = 65536;     // tokens `calibrate` runs (whole windows)
  std::filesystem::path tokenizer;  // for `calibrate` and pipelines with [blockft]
  std::string calib_text;           // empty: $NWC_DATA/text/tinystories-calib.txt
  std::optional<double> target_bpw; // bits per coded weight to aim at (NWC pipelines)
  bool embed_codec = false;         // copy the pipeline's codec files into the container
  unsigned threads = 0;             // 0 = all cores
  host::Job *job = nullptr; // mpirun: the ranks share calibration and tensors, rank 0 writes
};

struct CompressCallbacks {
  host::ProgressFn progress;                          // after each coded tensor
  std::function<void(const BlockFtReport &)> blockft; // after each linear of [blockft]
  // The rate search chose (before the final compression).
  std::function<void(double target_bpw, const host::RateChoice &)> rate_chosen;
  // [awq]: each decoder block's scaling groups (chosen ratio, losses) once the block is searched.
  std::function<void(const std::vector<AwqGroupReport> &)> awq;
  // [allocate] chose each tensor's codec (before the final compression).
  std::function<void(const Allocation &)> allocated;
  // A remark for a person: [blockft] running on rank 0 of a job.
  std::function<void(const std::string &)> note;
};

struct RateControl {
  double target_bpw = 0;
  host::RateCandidate chosen; // codec, fraction scale or level, the rate measured in the search
  size_t candidates = 0;
  double achieved_bpw = 0; // bits per coded weight of the written container
};

struct CompressOutcome {
  // This process wrote the container and the figures below are set: false on the ranks other
  // than 0 of a job (they helped; rank 0 reports).
  bool written = false;
  std::string pipeline;        // the pipeline's name
  host::CompressResult result; // per tensor: storage, weights, stream bytes
  uint64_t tensors = 0;
  uint64_t weights = 0;
  uint64_t bytes = 0;               // the container file
  double bits_per_weight = 0;       // file bytes x 8 / all weights
  double coded_bits_per_weight = 0; // stream bytes x 8 / weights, pipeline-coded tensors only
  double seconds = 0;               // calibration (if any), rate search and compression
  std::optional<double> calibration_seconds; // with `calibrate`
  std::optional<double> awq_seconds;         // with [awq]: the scale and clipping search
  std::optional<double> allocate_seconds;    // with [allocate]: the sensitivity measurement
  std::optional<RateControl> rate;           // with target_bpw
  int processes = 1;
};

// Throws RequestError for settings that contradict each other (checkable before any work):
// calibrate with calibration, save_calibration without calibrate, target_bpw under a job.
void check_request(const CompressRequest &request);

// Runs the whole request (see the top of this file). Errors: RequestError for a request that
// cannot run as given (including a missing tokenizer or calibration text, found once the
// pipeline is read), nwc::Error for everything else (bad files, plugin failures, a calibration of
// another model: "H: calibrated on model X, but M is Y (rerun nwc calibrate on this model)").
// No output or scratch file is left behind on error.
CompressOutcome run_compress(const CompressRequest &request, const host::Registry &registry,
                             const CompressCallbacks &callbacks = {});

} // namespace nwc::runtime
