// nwc/runtime/allocate.hpp — mixed precision by measured sensitivity (a pipeline's [allocate]).
//
// A rate spent evenly is not spent well: some linears (on the small Llamas here, the key
// projections and the last blocks) move the model's predictions far more per unit of error than
// others. Before coding, the model is coded once as the pipeline codes it and once per candidate:
// each codec of [allocate]'s `codecs` in the base transform, each [[allocate.candidate]]'s stage
// options over the chain (e.g. quantizer = { bits = 3 }); LDLQ and levels as the pipeline has them,
// fine-tuning skipped, as it moves no codes (the row gains it stores where the chunker keeps no
// row scales are counted: CompressSettings::unit_row_gains). For every tensor (or group of
// tensors, `group`) and candidate that changes its chain the sensitivity is measured, not
// modelled: the KL divergence from the original model's next-token distributions to those of the
// original model with only that tensor (group) replaced by its decoded values, on windows of
// calibration text. Costs are taken as additive (HAWQ's assumption), and each tensor (group) gets
// the candidate that minimizes the summed KL under the budget of target_bpw bits per coded weight
// (as `nwc bench` counts them: each tensor's streams and its share of the container's header and
// manifest, measured in the candidates' containers): a greedy walk along every lower convex hull,
// steepest KL drop per bit first (see choose_allocation).
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/pipeline.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace nwc::runtime {

// One candidate for one tensor: its coded size and the loss it alone causes.
struct AllocationOption {
  double bits = 0; // bits of the tensor in a container (streams and share of the header)
  double cost = 0; // KL divergence (nats per token)
};

// The option index per tensor minimizing the summed cost with the summed bits <= budget_bits.
// Starts every tensor at its fewest bits (the lowest cost among equal bits) and takes, while the
// budget allows, the step along some tensor's lower convex hull with the largest cost drop per bit
// (a step that does not fit is skipped, with the later steps of its tensor). Throws
// NWC_E_INVALID_ARG when even the fewest bits exceed the budget.
std::vector<size_t> choose_allocation(const std::vector<std::vector<AllocationOption>> &tensors,
                                      double budget_bits);

// One tensor, or one group of tensors, and what each of its options measured.
struct TensorAllocation {
  std::string tensor;               // the tensor, or the group's pattern (model.layers.3.*)
  std::vector<std::string> members; // the coded tensors it stands for (the tensor alone)
  uint64_t weights = 0;
  // Its options as indices into Allocation::candidates: 0 (the pipeline's own chain) first, then
  // each candidate that changes the chain of at least one member.
  std::vector<size_t> options;
  std::vector<double> bits; // per option, as AllocationOption (summed over the members)
  std::vector<double> kl;   // per option (every member replaced together)
  size_t chosen = 0;        // index into options, bits, kl
};

struct Allocation {
  host::Pipeline pipeline; // the input with one [[override]] per tensor moved off its chain
  // What each candidate is, in words: the pipeline's own chain first (its codec file's name when
  // the transform names one), then `codecs`' file names, then the [[allocate.candidate]]s' options.
  std::vector<std::string> candidates;
  std::vector<TensorAllocation> tensors;
  double bits_per_weight = 0; // of the chosen candidates per coded weight, as measured
  double seconds = 0;
};

// What [allocate] needs that can be checked before any work: with `codecs`, a base transform
// naming one codec file and candidate codec files that exist; windows that fit the model's context.
// Errors name the [allocate] table.
void check_allocate_inputs(const Model &model, const host::Pipeline &pipeline,
                           const host::Registry &registry);

// Runs [allocate] (pipeline.allocate.enabled must be set): candidates are compressed to a
// temporary file next to `scratch` (removed). calib_tokens: the calibration token stream; the
// first allocate.tokens of it are cut into windows of allocate.seq_len. settings: as for
// compress_model (Hessians, threads). Errors name the pipeline file and what was expected.
Allocation allocate_by_sensitivity(const Model &model, const host::Pipeline &pipeline,
                                   const host::Registry &registry,
                                   const host::CompressSettings &settings,
                                   const std::vector<int32_t> &calib_tokens,
                                   const std::filesystem::path &scratch,
                                   const std::function<void(const std::string &)> &log = {});

} // namespace nwc::runtime
