// nwc/tools/bench.hpp — the comparison harness behind `nwc bench`: every pipeline on one model,
// one shared calibration, one evaluation, measured bits.
#pragma once

#include "nwc/host/registry.hpp"

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc::tools {

struct BenchSettings {
  std::filesystem::path model, tokenizer, eval_text, calib_text, output_dir;
  std::vector<std::filesystem::path> pipelines;
  int64_t max_tokens = 0;        // ppl-v1 truncation (0 = whole text)
  int64_t calib_tokens = 65536;  // calibration tokens (whole windows)
  unsigned threads = 0;          // compression / decoding / evaluation threads (0 = all cores)
  std::vector<std::string> argv; // the command line, recorded in results.md
};

// One row of the results: the FP32 reference first, then one per pipeline.
struct BenchRow {
  std::string method;                // [pipeline] method (defaults to the name); lines in the plot
  std::string pipeline;              // [pipeline] name, or "fp32"
  std::string container;             // the .nwc written (empty for fp32)
  double bits_per_weight = 0;        // whole file x 8 / all weights
  double linear_bits_per_weight = 0; // coded tensors, with their share of the headers
  // The part of linear_bits_per_weight that pays for the container's header, manifest and footer
  // (container_tensor_header_bytes() summed over the coded tensors, per coded weight).
  double header_bits_per_weight = 0;
  double mse = 0, sqnr_db = 0; // over all weights
  double hessian_error = 0;    // mean over linears of tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)
  double nll = 0, ppl = 0;
  // Mean KL divergence from the original model's next-token distributions to this one's over the
  // scored positions (nats per token; 0 for fp32): what the NLL cannot show on text the original
  // generated, where a sharper model can score below it.
  double kl = 0;
  double encode_seconds = 0, decode_seconds = 0;
  double encode_weights_per_second = 0, decode_weights_per_second = 0;
  double peak_rss_mb = 0; // peak resident memory while compressing and decoding this pipeline
  nlohmann::json to_json() const;
};

// Runs the benchmark and writes results.{md,csv,json} and rate_ppl.{png,svg} (gnuplot) into
// settings.output_dir. Progress lines go to `log`.
std::vector<BenchRow> run_bench(const BenchSettings &settings, const host::Registry &registry,
                                const std::function<void(const std::string &)> &log);

} // namespace nwc::tools
