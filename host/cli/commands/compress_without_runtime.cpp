// nwc compress in builds without the model runtime (NWC_WITH_RUNTIME=OFF): pipelines that need
// neither calibration nor [blockft], with --target-bpw and under mpirun as usual. The runtime
// build runs the same steps through nwc::runtime::run_compress (compress.cpp).
#include "commands/commands.hpp"
#include "commands/compress_cli.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/pipeline.hpp"

#include <chrono>

namespace nwc::cli {

namespace {

[[noreturn]] void needs_runtime(const std::string &what) {
  throw Error(NWC_E_INVALID_ARG,
              "nwc was built without the model runtime (NWC_WITH_RUNTIME=OFF): " + what +
                  " needs it");
}

// The figures of a written container (as nwc::runtime::run_compress reports them).
CompressFigures measure(const host::CompressResult &r) {
  const host::RateFigures rf = host::rate_figures(r);
  CompressFigures f;
  f.tensors = rf.tensors;
  f.weights = rf.weights;
  f.bytes = rf.bytes;
  f.bits_per_weight = rf.bits_per_weight;
  f.coded_bits_per_weight = rf.coded_bits_per_weight;
  return f;
}

} // namespace

int cmd_compress(const Command &self, const Args &args) {
  Common c;
  const CompressFlags f = parse_compress_flags(self, args, c);
  if (f.calibrate) needs_runtime("--calibrate");
  if (!f.calibration.empty()) needs_runtime("--calibration");
  if (!f.save_calibration.empty()) throw UsageError("--save-calibration needs --calibrate");
  host::Job *job = host::current_job();
  if (job && f.target_bpw)
    throw UsageError("--target-bpw runs in one process; start it without mpirun");
  const bool lead = !job || job->rank() == 0;
  host::Registry reg = load_registry(c);
  host::Pipeline pl = host::load_pipeline(f.pipeline, reg);
  if (pl.blockft.enabled) needs_runtime(f.pipeline + " has [blockft], which");
  if (pl.awq.enabled) needs_runtime(f.pipeline + " has [awq], which");
  if (pl.allocate.enabled) needs_runtime(f.pipeline + " has [allocate], which");
  const Model model = load_model(f.model);
  Progress progress(lead && !c.quiet && !c.json, "compress");
  host::CompressSettings s;
  s.threads = c.threads;
  s.progress = std::ref(progress);
  s.embed_resources = f.embed_codec;
  s.job = job;
  const auto t0 = std::chrono::steady_clock::now();
  json rate = nullptr;
  if (f.target_bpw) {
    const host::RateChoice choice =
        host::choose_for_target_bpw(model, pl, reg, s, *f.target_bpw, f.output);
    pl = choice.pipeline;
    rate = rate_control_json(*f.target_bpw, choice.chosen, choice.tried.size());
    if (!c.quiet && !c.json) print_rate_choice(*f.target_bpw, choice);
  }
  const host::CompressResult r = host::compress_model(model, pl, reg, f.output, s);
  if (!lead) return 0; // rank 0 wrote the container and reports
  CompressFigures fig = measure(r);
  fig.seconds = seconds_since(t0);
  fig.pipeline = pl.name;
  fig.processes = job ? job->size() : 1;
  if (!rate.is_null()) {
    rate["achieved_bpw"] = fig.coded_bits_per_weight;
    fig.rate_control = rate;
  }
  print_compress(fig, f.output, c);
  return 0;
}

} // namespace nwc::cli
