// nwc calibrate --model M --tokenizer T [--text FILE] [--tokens N] [--seq-len L] -o H.safetensors
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/host/distributed.hpp"
#include "nwc/runtime/calibrate_job.hpp"

#include <algorithm>
#include <iomanip>
#include <iostream>

namespace nwc::cli {

namespace {

void print_calibration(const runtime::CalibrateOutcome &o, const std::string &model_path,
                       const std::string &text_path, const std::string &out, int processes,
                       bool as_json) {
  const auto &cal = o.plan;
  const double secs = o.seconds;
  if (as_json) {
    json inputs = json::array();
    for (const auto &h : o.inputs)
      inputs.push_back({{"input", h.input},
                        {"linears", h.linears},
                        {"dim", h.dim},
                        {"count", h.count},
                        {"trace", h.trace}});
    print_json({{"output", out},
                {"tokens", cal.tokens},
                {"seq_len", cal.seq_len},
                {"model_hash", cal.model_hash},
                {"text_hash", cal.text_hash},
                {"seconds", secs},
                {"processes", processes},
                {"tokens_per_second", secs > 0 ? static_cast<double>(cal.tokens) / secs : 0},
                {"inputs", inputs}});
    return;
  }
  std::cout << "calibrated " << model_path << " on " << cal.tokens << " tokens of " << text_path
            << " (windows of " << cal.seq_len << ", " << fmt(secs, 2) << " s, "
            << fmt(static_cast<double>(cal.tokens) / std::max(secs, 1e-9), 0) << " tokens/s)\n";
  std::cout << std::left << std::setw(22) << "input" << std::setw(6) << "dim" << std::setw(12)
            << "trace(H)"
            << "linears\n";
  for (const auto &h : o.inputs) {
    std::string names;
    for (const std::string &n : h.linears) {
      auto dot = n.rfind('.', n.size() - 8); // "...q_proj.weight" -> "q_proj"
      names += (names.empty() ? "" : ", ") + n.substr(dot + 1, n.size() - dot - 8);
    }
    std::cout << std::left << std::setw(22) << h.input << std::setw(6) << h.dim << std::setw(12)
              << sci(h.trace) << names << "\n";
  }
  std::cout << "wrote " << out << " (model " << cal.model_hash << ", text " << cal.text_hash
            << ")\n";
}

} // namespace

int cmd_calibrate(const Command &self, const Args &args) {
  Common c;
  std::string model_path, tok_path, text_path, out;
  runtime::CalibrationSettings cs;
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(),
      "tokenizer: llama2.c tokenizer.bin, SentencePiece .model, HF tokenizer.json, or a model "
      "directory holding one")(
      "text", po::value(&text_path),
      "calibration text (default: $NWC_DATA/text/tinystories-calib.txt; never the eval text)")(
      "tokens", po::value(&cs.tokens)->default_value(65536), "tokens to run (whole windows)")(
      "seq-len", po::value(&cs.seq_len)->default_value(0), "window length (0 = model maximum)")(
      "output,o", po::value(&out)->required(), "output .safetensors file of Hessians");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (cs.tokens < 1 || cs.seq_len < 0) throw UsageError("--tokens must be >= 1, --seq-len >= 0");
  try {
    text_path = runtime::calibration_text_path(text_path, "--text").string();
  } catch (const runtime::RequestError &e) {
    throw UsageError(e.what());
  }
  host::Job *job = host::current_job();
  host::Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  cs.threads = c.threads;
  const auto text = runtime::load_calibration_text(text_path, tok_path, model.arch.vocab_size);
  const auto o = runtime::calibrate_into_file(model, text, cs, out, job);
  if (o.written) print_calibration(o, model_path, text_path, out, job ? job->size() : 1, c.json);
  return 0;
}

} // namespace nwc::cli
