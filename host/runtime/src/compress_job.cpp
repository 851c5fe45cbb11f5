#include "nwc/runtime/compress_job.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/allocate.hpp"
#include "nwc/runtime/sequential.hpp"

#include <chrono>
#include <map>

namespace nwc::runtime {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool leads(const host::Job *job) {
  return !job || job->rank() == 0; // the process that writes and reports
}

// The calibration text of --calibrate and [blockft], read and tokenized before any coding (a rate
// search can take minutes).
CalibrationText calibration_inputs(const CompressRequest &req, const host::Pipeline &pl,
                                   const Model &model) {
  if (req.tokenizer.empty())
    throw RequestError(std::string(req.calibrate    ? "--calibrate"
                                   : pl.awq.enabled ? req.pipeline.string() + " has [awq]"
                                   : pl.allocate.enabled
                                       ? req.pipeline.string() + " has [allocate]"
                                       : req.pipeline.string() + " has [blockft]") +
                       ": --tokenizer is required");
  const std::filesystem::path text = calibration_text_path(req.calib_text, "--calib-text");
  return load_calibration_text(text, req.tokenizer, model.arch.vocab_size);
}

// --calibrate: the Hessians into save_calibration, or into a scratch file beside the output that
// `scratch` removes when it goes. Every rank returns once rank 0 has written the file.
std::filesystem::path calibrate_first(const CompressRequest &req, const Model &model,
                                      const CalibrationText &text,
                                      std::optional<ScratchFile> &scratch) {
  CalibrationSettings cs;
  cs.tokens = req.calib_tokens;
  cs.threads = req.threads;
  if (cs.tokens < 1) throw RequestError("--calib-tokens must be >= 1");
  std::filesystem::path path = req.save_calibration;
  if (path.empty()) {
    const std::filesystem::path &o = req.output;
    path = o.parent_path() / ("." + o.filename().string() + ".calibration.safetensors");
    if (leads(req.job)) scratch.emplace(path);
  }
  calibrate_into_file(model, text, cs, path, req.job);
  if (req.job) req.job->barrier(); // rank 0 has written the file every rank reads from
  return path;
}

// Every linear's Hessian, loaded when a coder asks for it. A file made from another model is
// refused (check_model: the lead process of a run that did not just calibrate).
std::map<std::string, host::HessianRef> open_hessians(const std::filesystem::path &calibration,
                                                      const CompressRequest &req,
                                                      const Model &model, bool check_model) {
  CalibrationFile cal = open_calibration(calibration);
  if (check_model) {
    const std::string fp = model_fingerprint(model);
    if (fp != cal.info.model_hash)
      throw Error(NWC_E_INVALID_ARG, calibration.string() + ": calibrated on model " +
                                         cal.info.model_hash + ", but " + req.model.string() +
                                         " is " + fp + " (rerun nwc calibrate on this model)");
  }
  return hessians_by_linear(cal);
}

// A pipeline with [calibration] mode = "sequential" calibrates while it codes: --calibrate is how
// it gets its text, and nothing that needs a Hessian file or another order of coding goes with it.
void check_sequential(const CompressRequest &req, const host::Pipeline &pl) {
  const std::string what = req.pipeline.string() + " has [calibration] mode = \"sequential\"";
  if (!req.calibration.empty())
    throw RequestError(what + ", which computes the Hessians while coding; drop --calibration "
                              "(or use mode = \"original\" with it)");
  if (!req.calibrate)
    throw RequestError(what + ": pass --calibrate (with --tokenizer) to calibrate while coding");
  if (!req.save_calibration.empty())
    throw RequestError(what + ", which writes no Hessian file; drop --save-calibration");
  if (req.job && req.job->size() > 1)
    throw RequestError(what + ", which runs in one process; start it without mpirun");
  if (req.target_bpw) throw RequestError(what + "; --target-bpw needs mode = \"original\"");
  if (pl.blockft.enabled) throw RequestError(what + " and [blockft], which do not combine");
}

// [allocate] chooses each tensor's codec from the rate it is given: nothing else may set the rate,
// and it measures in one process.
void check_allocate(const CompressRequest &req) {
  const std::string what = req.pipeline.string() + " has [allocate]";
  if (req.target_bpw)
    throw RequestError(what + ", which sets the rate itself (allocate.target_bpw); drop "
                              "--target-bpw");
  if (req.job && req.job->size() > 1)
    throw RequestError(what + ", which runs in one process; start it without mpirun");
}

// [awq] scales the model before anything else sees it: what needs the unscaled model is refused.
void check_awq(const CompressRequest &req, const host::Pipeline &pl) {
  const std::string what = req.pipeline.string() + " has [awq]";
  if (!req.calibration.empty())
    throw RequestError(what + ", which scales the model the Hessians of --calibration describe; "
                              "use --calibrate (Hessians of the scaled model) instead");
  if (req.job && req.job->size() > 1)
    throw RequestError(what + ", which runs in one process; start it without mpirun");
  if (pl.blockft.enabled) throw RequestError(what + " and [blockft], which do not combine");
  if (req.calib_tokens < 1) throw RequestError("--calib-tokens must be >= 1");
}

// [awq]: the scale search on the calibration tokens; the model the rest of the job codes.
Model scale_with_awq(const CompressRequest &req, const host::Pipeline &pl, const Model &model,
                     const CalibrationText &text, const CompressCallbacks &cb, CompressOutcome &o) {
  CalibrationSettings cs;
  cs.tokens = req.calib_tokens;
  cs.threads = req.threads;
  AwqScaled scaled = awq_scale_model(model, text.tokens, cs, pl.awq, cb.awq);
  o.awq_seconds = scaled.seconds;
  return std::move(scaled.model);
}

// --target-bpw: the ladder codec and level fractions closest to the target.
host::Pipeline choose_rate(const Model &model, const host::Pipeline &pl, const host::Registry &reg,
                           const host::CompressSettings &s, const CompressRequest &req,
                           const CompressCallbacks &cb, CompressOutcome &o) {
  const double target = *req.target_bpw;
  host::RateChoice choice = host::choose_for_target_bpw(model, pl, reg, s, target, req.output);
  o.rate = RateControl{target, choice.chosen, choice.tried.size(), 0.0};
  if (cb.rate_chosen) cb.rate_chosen(target, choice);
  return choice.pipeline;
}

void measure(const host::CompressResult &r, CompressOutcome &o) {
  const host::RateFigures f = host::rate_figures(r);
  o.tensors = f.tensors;
  o.weights = f.weights;
  o.bytes = f.bytes;
  o.bits_per_weight = f.bits_per_weight;
  o.coded_bits_per_weight = f.coded_bits_per_weight;
  if (o.rate) o.rate->achieved_bpw = o.coded_bits_per_weight;
  o.result = r;
}

} // namespace

void check_request(const CompressRequest &req) {
  if (req.calibrate && !req.calibration.empty())
    throw RequestError("--calibrate computes the Hessians; do not also pass --calibration");
  if (!req.save_calibration.empty() && !req.calibrate)
    throw RequestError("--save-calibration needs --calibrate");
  if (req.job && req.target_bpw)
    throw RequestError("--target-bpw runs in one process; start it without mpirun");
}

CompressOutcome run_compress(const CompressRequest &req, const host::Registry &registry,
                             const CompressCallbacks &cb) {
  check_request(req);
  const bool lead = leads(req.job);
  host::Pipeline pl = host::load_pipeline(req.pipeline, registry);
  const Model loaded = load_model(req.model);
  host::CompressSettings s;
  s.threads = req.threads;
  s.progress = cb.progress;
  s.embed_resources = req.embed_codec;
  s.job = req.job;
  const bool sequential = pl.calibration_mode == host::CalibrationMode::Sequential;
  if (sequential) check_sequential(req, pl);
  if (pl.awq.enabled) check_awq(req, pl);
  if (pl.allocate.enabled) {
    check_allocate(req);
    check_allocate_inputs(loaded, pl, registry); // before calibrating
  }
  std::optional<CalibrationText> text;
  if (pl.blockft.enabled || pl.awq.enabled || pl.allocate.enabled || req.calibrate)
    text = calibration_inputs(req, pl, loaded);
  CompressOutcome o;
  o.processes = req.job ? req.job->size() : 1;
  const auto t0 = std::chrono::steady_clock::now();
  const Model model = pl.awq.enabled ? scale_with_awq(req, pl, loaded, *text, cb, o) : loaded;
  if (sequential) {
    CalibrationSettings cs;
    cs.tokens = req.calib_tokens;
    cs.threads = req.threads;
    if (cs.tokens < 1) throw RequestError("--calib-tokens must be >= 1");
    s.job = nullptr;
    const host::CompressResult r =
        compress_model_sequential(model, pl, registry, req.output, s, text->tokens, cs).compress;
    o.written = true;
    o.seconds = seconds_since(t0);
    o.pipeline = pl.name;
    measure(r, o);
    return o;
  }
  std::optional<ScratchFile> scratch; // the Hessians of --calibrate, unless they are kept
  std::filesystem::path calibration = req.calibration;
  if (req.calibrate) {
    const auto tc = std::chrono::steady_clock::now();
    calibration = calibrate_first(req, model, *text, scratch);
    o.calibration_seconds = seconds_since(tc);
  }
  if (!calibration.empty())
    s.hessians = open_hessians(calibration, req, model, lead && !req.calibrate);
  if (req.job && pl.blockft.enabled) {
    // Block fine-tuning walks the model in order, each block after the one before: rank 0 runs it.
    if (!lead) return o;
    s.job = nullptr;
    if (cb.note) cb.note("[blockft] runs on rank 0; the other ranks helped with calibration only");
  }
  if (req.target_bpw) pl = choose_rate(model, pl, registry, s, req, cb, o);
  if (pl.allocate.enabled) {
    Allocation a =
        allocate_by_sensitivity(model, pl, registry, s, text->tokens, req.output, cb.note);
    o.allocate_seconds = a.seconds;
    if (cb.allocated) cb.allocated(a);
    pl = std::move(a.pipeline);
  }
  const host::CompressResult r =
      pl.blockft.enabled
          ? compress_model_blockft(model, pl, registry, req.output, s, text->tokens, cb.blockft)
                .compress
          : host::compress_model(model, pl, registry, req.output, s);
  if (!lead) return o; // rank 0 wrote the container and reports
  o.written = true;
  o.seconds = seconds_since(t0);
  o.pipeline = pl.name;
  measure(r, o);
  return o;
}

} // namespace nwc::runtime
