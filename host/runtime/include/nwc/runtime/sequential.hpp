// nwc/runtime/sequential.hpp — compression with sequential calibration, as GPTQ's reference code
// (llama.py with --true-sequential) and GPTQModel quantize: decoder blocks in order, and inside a
// block the linears that share an input in forward order (q/k/v, o, gate/up, down). Each group is
// coded with the Hessian of its input as the model computes it with everything before it already
// coded (the blocks before, and the earlier groups of this block), so the compensator corrects
// for the errors upstream of it. Calibration and coding are one pass over the model; the Hessians
// are not written to a file.
//
// Configured by a pipeline's [calibration] mode = "sequential" (the GPTQ and LDLQ points of
// benchmarks/suites/baselines); run by nwc::runtime::run_compress and `nwc bench`;
// mode = "original" takes every Hessian from the unquantized model (`nwc calibrate`).
#pragma once

#include "nwc/host/compress.hpp"
#include "nwc/runtime/calibrate.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace nwc::runtime {

struct SequentialResult {
  host::CompressResult compress;
  Calibration calibration; // the plan: inputs, linears, token counts (no values)
};

// tokens: the calibration stream (ppl-v1 tokenization of the calibration text); calibration:
// tokens and seq_len of the windows, threads. settings as for compress_model (hessians and
// precoded must be empty: this function computes and codes them). `coded` is called after each
// linear is coded. One process: with settings.job of more than one rank it fails.
SequentialResult compress_model_sequential(
    const Model &model, const host::Pipeline &pipeline, const host::Registry &registry,
    const std::filesystem::path &out, const host::CompressSettings &settings,
    const std::vector<int32_t> &tokens, const CalibrationSettings &calibration,
    const std::function<void(const std::string &linear)> &coded = {});

} // namespace nwc::runtime
