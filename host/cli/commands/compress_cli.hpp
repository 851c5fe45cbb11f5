// The flags and the printing of `nwc compress`, shared by the command with the model runtime
// (compress.cpp, over nwc::runtime::run_compress) and without it (compress_without_runtime.cpp).
#pragma once

#include "command.hpp"
#include "common.hpp"

#include "nwc/host/target_rate.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nwc::cli {

struct CompressFlags {
  std::string model, pipeline, output;
  std::string calibration;      // --calibration (empty: none)
  bool calibrate = false;       // --calibrate
  std::string save_calibration; // --save-calibration (empty: none)
  int64_t calib_tokens = 65536;
  std::string tokenizer, calib_text;
  std::optional<double> target_bpw;
  bool embed_codec = false;
};

CompressFlags parse_compress_flags(const Command &self, const std::vector<std::string> &args,
                                   Common &c);

// What the command reports about a written container.
struct CompressFigures {
  std::string pipeline;
  uint64_t tensors = 0, weights = 0, bytes = 0;
  double bits_per_weight = 0, coded_bits_per_weight = 0, seconds = 0;
  int processes = 1;
  std::optional<double> calibration_seconds;
  std::optional<double> awq_seconds;      // [awq]: the scale search
  std::optional<double> allocate_seconds; // [allocate]: the sensitivity measurement
  json rate_control = nullptr;            // --target-bpw: target_bpw, codec, ..., achieved_bpw
  json allocation = nullptr; // [allocate]: the candidates, each tensor's (group's) options, choice
};

// --target-bpw: the rate control's JSON object (achieved_bpw is added once it is known).
json rate_control_json(double target, const host::RateCandidate &chosen, size_t candidates);

// The search's choice, one line on stderr.
void print_rate_choice(double target, const host::RateChoice &choice);

// "wrote OUT: ..." (and the achieved rate), or the JSON object with --json; nothing with --quiet.
void print_compress(const CompressFigures &f, const std::string &output, const Common &c);

} // namespace nwc::cli
