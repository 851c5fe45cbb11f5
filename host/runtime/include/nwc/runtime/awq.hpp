// nwc/runtime/awq.hpp — AWQ, activation-aware weight scaling (Lin et al., MLSys 2024), as the
// AutoAWQ reference (AwqQuantizer: _search_best_scale, apply_scale, _search_best_clip) runs it.
//
// Per decoder block, on the original model's activations (teacher forcing, as AutoAWQ):
//  1. Scale search, per group of linears that share an input, over ratios a = 0, 1/grid, ...:
//     s = x_mean^a / (w_mean^(1-a) + 1e-4) (duo scaling; x_mean^a without it), clamped ≥ 1e-4 and
//     divided by sqrt(max s · min s); the group's weights W·diag(s) are quantized with the search
//     grid (round-to-nearest, `bits`, groups of `group` input columns, AWQ's min/max grid) and
//     divided by s again; the loss is the MSE of the inspected module's output against the
//     original's. Groups: q/k/v (module: self-attention with o_proj), o_proj (only when its input
//     size equals v_proj's output size, i.e. without grouped-query attention), gate/up (module:
//     the MLP), down_proj.
//  2. The best scales are folded in: q/k/v's into input_layernorm, gate/up's into
//     post_attention_layernorm, o_proj's into v_proj's output rows, down_proj's into up_proj's
//     output rows (the product is unchanged in exact arithmetic); the linears' input columns are
//     multiplied by s.
//  3. Clipping search (all linears but q_proj and k_proj, as AutoAWQ): per output row and group,
//     the range max|w|·(1 − i/grid), i < max_shrink·grid, that minimizes the group's partial
//     output error on a subsample of clip_tokens tokens; weights are clamped to it.
// The result is a model with new values for the block's linears and norms; any pipeline (RTN,
// GPTQ, ...) then codes it, and the container stores the scaled norms.
//
// Extension for rows whose length is not a multiple of `group` (AutoAWQ refuses them): the last
// group of each row is shorter, as nwc.chunk.group makes it.
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/calibrate.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nwc::runtime {

// The search's settings: one definition, shared with the pipeline's [awq] table.
using AwqSettings = host::AwqSearchSettings;

struct AwqGroupReport {
  int64_t block = 0;
  std::string group;    // "qkv", "o", "gate_up", "down"
  double ratio = 0;     // the chosen a
  double loss_rtn = 0;  // module-output MSE of the group quantized without scaling
  double loss_best = 0; // with the chosen scales (the search never tries s = 1 with duo
                        // scaling, so this can exceed loss_rtn)
};

struct AwqResult {
  // New values of every tensor AWQ changed (linears, norms, the previous linears' rows).
  std::map<std::string, std::vector<float>> replaced;
  std::vector<AwqGroupReport> groups;
  int64_t tokens = 0; // calibration tokens used
};

// tokens: the calibration stream (ppl-v1 tokenization); calibration: tokens and seq_len of the
// windows and threads. Llama-architecture models only.
AwqResult awq_search(const Model &model, const std::vector<int32_t> &tokens,
                     const CalibrationSettings &calibration, const AwqSettings &settings,
                     const std::function<void(const AwqGroupReport &)> &progress = {});

// The model with `replaced` values in place of its own (loaders return the new values); the
// architecture, names, shapes and dtypes are unchanged.
Model with_replaced_tensors(const Model &model, std::map<std::string, std::vector<float>> replaced);

// A pipeline's [awq] run on a model: the search, and the model with the scaled tensors (what the
// pipeline then codes and calibrates on). `block` gets each block's groups once the block is
// searched.
struct AwqScaled {
  Model model;      // the scaled tensors load their new values
  AwqResult result; // groups and tokens; its `replaced` moved into `model`
  double seconds = 0;
};
AwqScaled
awq_scale_model(const Model &model, const std::vector<int32_t> &tokens,
                const CalibrationSettings &calibration, const host::AwqConfig &config,
                const std::function<void(const std::vector<AwqGroupReport> &)> &block = {});

// AWQ's pseudo-quantization (AutoAWQ pseudo_quantize_tensor, zero_point = true) of a row-major
// [rows, cols] matrix in groups of `group` consecutive columns (a shorter last group when group
// does not divide cols): scale = max(max − min, 1e-5) / (2^bits − 1),
// zero = clamp(−round(min / scale), 0, 2^bits − 1), q = clamp(round(w / scale) + zero, 0,
// 2^bits − 1), value = (q − zero) · scale, in float32 as the reference computes it.
std::vector<float> awq_pseudo_quantize(const std::vector<float> &w, int64_t rows, int64_t cols,
                                       int64_t bits, int64_t group);

} // namespace nwc::runtime
