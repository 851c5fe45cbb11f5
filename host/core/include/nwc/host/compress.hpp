// nwc/host/compress.hpp — the compression driver.
//
// compress_model(): selected tensors go through their stage chain tensor by tensor (the
// compensator drives column blocks through the host's block codec); other tensors are stored raw
// or zstd-compressed. Tensors are coded in parallel while the file is written in model order, so
// the output bytes do not depend on the thread count. encode_tensor() codes one tensor and keeps
// it in memory, for methods that code tensors in an order of their own.
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/hessian.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"
#include "nwc/host/threads.hpp"

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nwc::host {

struct EncodedTensor; // streams and record of one coded tensor, not yet written (opaque)

// One tensor coded with a pipeline's stage chain, held in memory (for methods that code tensors in
// an order of their own, such as block-wise fine-tuning, and write the container afterwards).
struct TensorCoding {
  std::shared_ptr<EncodedTensor> encoded;
  std::vector<float> reconstruction;      // [rows, cols]: exactly what decoding returns
  std::vector<float> unit_reconstruction; // the same with unit row scales
  std::vector<float> row_scales;          // the chunker's row scales as stored; empty if none
};

struct CompressSettings {
  unsigned threads = 0; // 0 = all cores
  ProgressFn progress;
  // Input second moments H (cols x cols, row-major) of linear weights, by weight name; handed to
  // compensators (NWC_COMPENSATOR_NEEDS_HESSIAN requires one for every coded tensor).
  std::map<std::string, HessianRef> hessians;
  // Quality level of every input column, by weight name (stored with the tensor, 2 bits per column
  // for up to 4 levels; handed to the transform per chunk).
  std::map<std::string, std::vector<uint8_t>> column_levels;
  // Copy the files named by bitstream-affecting path options (codecs) into the container. They are
  // always recorded by XXH64 hash; decoding refuses a file whose hash differs.
  bool embed_resources = false;
  // Store a unit row gain (stream "row_gain", f16, as set_row_scales stores it) with every coded
  // tensor whose chunker keeps no row scales: the stream that block-wise fine-tuning adds to such
  // tensors, so that [allocate] measures the rate that fine-tuning will write. Decodes the same.
  bool unit_row_gains = false;
  // Tensors already coded (encode_tensor), written as they are; and replacement values for
  // tensors whose values changed before coding (fine-tuned norms, for example).
  std::map<std::string, std::shared_ptr<const TensorCoding>> precoded;
  std::map<std::string, std::shared_ptr<const std::vector<float>>> replaced;
  // With a job (mpirun), tensors are coded on every rank and rank 0 writes the container: the same
  // bytes as one process writes. nullptr: this process codes everything.
  Job *job = nullptr;
};

// Codes one selected tensor with the pipeline's chain for it (hessians and levels from settings).
TensorCoding encode_tensor(const Pipeline &pipeline, const Registry &registry,
                           const TensorInfo &info, std::vector<float> values,
                           const CompressSettings &settings);

// Sets the per-row scales a coded tensor is decoded with: the chunker's stored row scales when it
// has them (nwc.chunk.column), otherwise a host row gain stored as stream "row_gain" (f16). Rows
// are multiplied as (float)((double)unit_value * scale). Returns the scales as stored (rounded) and
// updates coding.reconstruction to what decoding will return.
std::vector<float> set_row_scales(TensorCoding &coding, const std::vector<float> &scales);

struct CompressedTensor {
  std::string name;
  std::string storage;
  uint64_t numel = 0;
  uint64_t stream_bytes = 0;
};

struct CompressResult {
  std::vector<CompressedTensor> tensors;
  uint64_t file_bytes = 0;
};

// What a written container costs, as `nwc compress` reports it.
struct RateFigures {
  uint64_t tensors = 0, weights = 0, bytes = 0;
  double bits_per_weight = 0;       // file bytes x 8 / all weights
  double coded_bits_per_weight = 0; // stream bytes x 8 / weights, pipeline-coded tensors only
};
RateFigures rate_figures(const CompressResult &result);

CompressResult compress_model(const Model &model, const Pipeline &pipeline,
                              const Registry &registry, const std::filesystem::path &out,
                              const CompressSettings &settings);

// What compress_model checks before any output exists, without coding anything: every chain's
// plugins created with their options, and the Hessians and column levels each selected tensor
// needs. For callers that run several pipelines (nwc bench), so that a pipeline which cannot run
// fails before the others' work.
void check_compress_inputs(const Model &model, const Pipeline &pipeline, const Registry &registry,
                           const CompressSettings &settings);

} // namespace nwc::host
