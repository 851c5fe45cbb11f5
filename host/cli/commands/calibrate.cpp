// nwc calibrate --model M --tokenizer T [--text FILE] [--tokens N] [--seq-len L] -o H.safetensors
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/target_rate.hpp"
#include "nwc/runtime/blockft.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>

namespace nwc::cli {

using namespace nwc::host;
using namespace nwc::runtime;

namespace {

// The calibration text: `given`, else $NWC_DATA/text/tinystories-calib.txt; never the evaluation
// half of TinyStories (calibrating on it would flatter every method evaluated on it afterwards).
std::string calibration_text(const std::string &given, const std::string &option) {
  std::string path = given;
  if (path.empty()) {
    const char *data = std::getenv("NWC_DATA");
    if (!data || !*data)
      throw UsageError(option + " is required (or set NWC_DATA to use its " +
                       "text/tinystories-calib.txt)");
    path = (std::filesystem::path(data) / "text" / "tinystories-calib.txt").string();
  }
  if (std::filesystem::path(path).filename() == "tinystories-eval.txt")
    throw Error(NWC_E_INVALID_ARG, path + ": this is the evaluation half of TinyStories; "
                                          "calibrate on tinystories-calib.txt");
  return path;
}

std::string text_hash(const std::string &text) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(container_checksum(text.data(), text.size())));
  return hex;
}

} // namespace

int cmd_calibrate(const Command &self, const Args &args) {
  Common c;
  std::string model_path, tok_path, text_path, out;
  CalibrationSettings cs;
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(), "tokenizer.bin or SentencePiece .model")(
      "text", po::value(&text_path),
      "calibration text (default: $NWC_DATA/text/tinystories-calib.txt; never the eval text)")(
      "tokens", po::value(&cs.tokens)->default_value(65536), "tokens to run (whole windows)")(
      "seq-len", po::value(&cs.seq_len)->default_value(0), "window length (0 = model maximum)")(
      "output,o", po::value(&out)->required(), "output .safetensors file of Hessians");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (cs.tokens < 1 || cs.seq_len < 0) throw UsageError("--tokens must be >= 1, --seq-len >= 0");
  text_path = calibration_text(text_path, "--text");
  Job *job = current_job();
  const bool lead = !job || job->rank() == 0;
  Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  cs.threads = c.threads;
  auto tok = load_tokenizer(tok_path, model.arch.vocab_size);
  std::string text = read_text_file(text_path);
  const std::string fp = lead ? model_fingerprint(model) : "";
  json inputs = json::array();
  auto t0 = std::chrono::steady_clock::now();
  // Layer by layer; each Hessian is written as its layer finishes (rank 0 writes under mpirun).
  Calibration cal = calibrate_to_file(model, ppl_token_stream(text, *tok), cs, fp, text_hash(text),
                                      out, job, [&](const Hessian &h) {
                                        double trace = 0;
                                        for (int64_t i = 0; i < h.dim; ++i)
                                          trace += h.h[static_cast<size_t>(i * h.dim + i)];
                                        inputs.push_back({{"input", h.input},
                                                          {"linears", h.linears},
                                                          {"dim", h.dim},
                                                          {"count", h.count},
                                                          {"trace", trace}});
                                      });
  double secs = seconds_since(t0);
  if (!lead) return 0;
  if (c.json) {
    std::cout << json{{"output", out},
                      {"tokens", cal.tokens},
                      {"seq_len", cal.seq_len},
                      {"model_hash", cal.model_hash},
                      {"text_hash", cal.text_hash},
                      {"seconds", secs},
                      {"processes", job ? job->size() : 1},
                      {"tokens_per_second", secs > 0 ? static_cast<double>(cal.tokens) / secs : 0},
                      {"inputs", inputs}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "calibrated " << model_path << " on " << cal.tokens << " tokens of " << text_path
            << " (windows of " << cal.seq_len << ", " << fmt(secs, 2) << " s, "
            << fmt(static_cast<double>(cal.tokens) / std::max(secs, 1e-9), 0) << " tokens/s)\n";
  std::cout << std::left << std::setw(22) << "input" << std::setw(6) << "dim" << std::setw(12)
            << "trace(H)"
            << "linears\n";
  for (const auto &row : inputs) {
    std::string names;
    for (const auto &l : row["linears"]) {
      std::string n = l.get<std::string>();
      auto dot = n.rfind('.', n.size() - 8); // "...q_proj.weight" -> "q_proj"
      names += (names.empty() ? "" : ", ") + n.substr(dot + 1, n.size() - dot - 8);
    }
    std::cout << std::left << std::setw(22) << row["input"].get<std::string>() << std::setw(6)
              << row["dim"].get<int64_t>() << std::setw(12) << sci(row["trace"].get<double>())
              << names << "\n";
  }
  std::cout << "wrote " << out << " (model " << cal.model_hash << ", text " << cal.text_hash
            << ")\n";
  return 0;
}

} // namespace nwc::cli
