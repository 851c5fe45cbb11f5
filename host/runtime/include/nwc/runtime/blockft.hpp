// nwc/runtime/blockft.hpp — compression with error compensation guided by the model's outputs (NWC
// §3.6, "blockft"): decoder blocks in order; inside a block the linears in the order v, q, k, o,
// up, gate, down; after each linear is coded, the block is fine-tuned on calibration sequences to
// reproduce the original block's outputs (MSE), training the row scales of the linears already
// coded, the weights of those not yet coded (which are then coded from their new values) and the
// block's two RMSNorm weights, keeping the state with the lowest MSE on held-out calibration
// sequences (the state before fine-tuning included, so it never makes the held-out MSE worse).
// Block inputs are the original model's hidden states (teacher forcing) or, with inputs =
// "coded", the coded blocks' states. With e2e_epochs > 0 the coded model is then fine-tuned end to
// end (row scales, the coded embedding's and output head's included, and norms; with
// e2e_embeddings the uncoded embedding and output head; KL divergence to the original model's
// next-token distributions).
//
// It composes with any pipeline: the fine-tuned row scales replace the chunker's stored row scales
// (nwc.chunk.column) or become a host row gain (other chunkers, e.g. GPTQ's groups); the norms are
// stored with their fine-tuned values. Configured by a pipeline's [blockft] table.
#pragma once

#include "nwc/host/compress.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nwc::runtime {

// One fine-tuning step. The end-to-end stage reports as linear "end to end", block -1, with the
// held-out KL divergence (mean per token) in the two MSE fields.
struct BlockFtReport {
  std::string linear; // the linear just coded
  int64_t block = 0;
  double mse_before = 0; // held-out block-output MSE right after coding it
  double mse_after = 0;  // after fine-tuning (best state)
  int64_t best_epoch = 0;
};

struct BlockFtResult {
  host::CompressResult compress;
  std::vector<BlockFtReport> steps;
  // What the encoder reconstructed for every coded linear (and, with the end-to-end stage, a
  // coded embedding and output head), fine-tuned row scales applied (the container decodes to
  // exactly these values).
  std::map<std::string, std::vector<float>> reconstructions;
};

// Fails, naming the pipeline file and `source` (the calibration text), unless `tokens`
// calibration tokens feed the pipeline's [blockft] on a model of this architecture: its training
// windows (the block-wise or the end-to-end stage's, whichever is more) and its held-out windows,
// each of seq_len tokens (capped at the model's context).
void require_blockft_calibration(const host::Pipeline &pipeline, const Architecture &arch,
                                 size_t tokens, const std::string &source);

// tokens: calibration token stream (never the evaluation text); cut into windows of the pipeline's
// [blockft] seq_len. Hessians and levels come from settings as for compress_model.
BlockFtResult
compress_model_blockft(const Model &model, const host::Pipeline &pipeline,
                       const host::Registry &registry, const std::filesystem::path &out,
                       const host::CompressSettings &settings, const std::vector<int32_t> &tokens,
                       const std::function<void(const BlockFtReport &)> &progress = {});

} // namespace nwc::runtime
