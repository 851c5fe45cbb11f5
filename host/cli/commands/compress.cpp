// nwc compress (builds with the model runtime): the flags as a request for
// nwc::runtime::run_compress, its reports and figures printed.
#include "commands/commands.hpp"
#include "commands/compress_cli.hpp"

#include "nwc/host/distributed.hpp"
#include "nwc/runtime/compress_job.hpp"

#include <iostream>

namespace nwc::cli {

namespace {

runtime::CompressRequest request(const CompressFlags &f, unsigned threads) {
  runtime::CompressRequest req;
  req.model = f.model;
  req.pipeline = f.pipeline;
  req.output = f.output;
  req.calibration = f.calibration;
  req.calibrate = f.calibrate;
  req.save_calibration = f.save_calibration;
  req.calib_tokens = f.calib_tokens;
  req.tokenizer = f.tokenizer;
  req.calib_text = f.calib_text;
  req.target_bpw = f.target_bpw;
  req.embed_codec = f.embed_codec;
  req.threads = threads;
  req.job = host::current_job();
  return req;
}

// Progress, fine-tuning and rate-search reports on stderr (not with --quiet; not with --json,
// except the remark about [blockft] under mpirun).
runtime::CompressCallbacks reporters(const Common &c, Progress &progress) {
  runtime::CompressCallbacks cb;
  cb.progress = std::ref(progress);
  if (c.quiet) return cb;
  cb.note = [](const std::string &line) { std::cerr << "nwc: " << line << "\n"; };
  if (c.json) return cb;
  cb.blockft = [](const runtime::BlockFtReport &b) {
    if (b.block < 0) // the end-to-end stage
      std::cerr << "blockft: end to end, held-out KL " << sci(b.mse_before) << " -> "
                << sci(b.mse_after) << " (epoch " << b.best_epoch << ")\n";
    else
      std::cerr << "blockft: " << b.linear << " held-out block MSE " << sci(b.mse_before) << " -> "
                << sci(b.mse_after) << " (epoch " << b.best_epoch << ")\n";
  };
  cb.rate_chosen = print_rate_choice;
  cb.awq = [](const std::vector<runtime::AwqGroupReport> &groups) { // one line per block
    std::cerr << "awq: block " << groups.front().block << ":";
    for (const auto &g : groups)
      std::cerr << " " << g.group << " ratio " << fmt(g.ratio, 2) << " loss " << sci(g.loss_rtn)
                << " -> " << sci(g.loss_best) << ";";
    std::cerr << "\n";
  };
  cb.allocated = [](const runtime::Allocation &a) { // the tensors (groups) moved off the chain
    size_t moved = 0;
    for (const auto &t : a.tensors) {
      if (t.chosen == 0) continue;
      ++moved;
      std::cerr << "allocate: " << t.tensor << " -> " << a.candidates[t.options[t.chosen]]
                << " (KL " << sci(t.kl[0]) << " -> " << sci(t.kl[t.chosen]) << ")\n";
    }
    std::cerr << "allocate: " << moved << " of " << a.tensors.size()
              << (a.tensors.size() == 1 || a.tensors[0].members.size() == 1 ? " tensors"
                                                                            : " groups")
              << " moved off " << a.candidates[0] << ", " << fmt(a.bits_per_weight, 3)
              << " bits per coded weight with the header share (as nwc bench counts them)\n";
  };
  return cb;
}

// What [allocate] measured and chose, for --json: the candidates in words, and per tensor (group)
// its members and each option's candidate, bits per weight (streams and header share) and KL.
json allocation_json(const runtime::Allocation &a) {
  json units = json::array();
  for (const auto &t : a.tensors) {
    json options = json::array();
    for (size_t o = 0; o < t.options.size(); ++o)
      options.push_back({{"candidate", t.options[o]},
                         {"bits_per_weight", t.bits[o] / static_cast<double>(t.weights)},
                         {"kl", t.kl[o]}});
    units.push_back({{"name", t.tensor},
                     {"tensors", t.members},
                     {"weights", t.weights},
                     {"options", options},
                     {"chosen", t.options[t.chosen]}});
  }
  return {{"candidates", a.candidates},
          {"units", units},
          {"bits_per_weight", a.bits_per_weight},
          {"seconds", a.seconds}};
}

CompressFigures figures(const runtime::CompressOutcome &o) {
  CompressFigures f;
  f.pipeline = o.pipeline;
  f.tensors = o.tensors;
  f.weights = o.weights;
  f.bytes = o.bytes;
  f.bits_per_weight = o.bits_per_weight;
  f.coded_bits_per_weight = o.coded_bits_per_weight;
  f.seconds = o.seconds;
  f.processes = o.processes;
  f.calibration_seconds = o.calibration_seconds;
  f.awq_seconds = o.awq_seconds;
  f.allocate_seconds = o.allocate_seconds;
  if (o.rate) {
    f.rate_control = rate_control_json(o.rate->target_bpw, o.rate->chosen, o.rate->candidates);
    f.rate_control["achieved_bpw"] = o.rate->achieved_bpw;
  }
  return f;
}

} // namespace

int cmd_compress(const Command &self, const Args &args) {
  Common c;
  const runtime::CompressRequest req = request(parse_compress_flags(self, args, c), c.threads);
  try {
    runtime::check_request(req); // before plugin discovery, which may warn
    host::Registry reg = load_registry(c);
    Progress progress((!req.job || req.job->rank() == 0) && !c.quiet && !c.json, "compress");
    runtime::CompressCallbacks cb = reporters(c, progress);
    json allocation = nullptr;
    cb.allocated = [&allocation, report = cb.allocated](const runtime::Allocation &a) {
      allocation = allocation_json(a);
      if (report) report(a);
    };
    const runtime::CompressOutcome o = runtime::run_compress(req, reg, cb);
    if (!o.written) return 0;
    CompressFigures f = figures(o);
    f.allocation = std::move(allocation);
    print_compress(f, req.output.string(), c);
  } catch (const runtime::RequestError &e) {
    throw UsageError(e.what());
  }
  return 0;
}

} // namespace nwc::cli
