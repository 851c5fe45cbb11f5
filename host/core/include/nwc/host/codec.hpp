// nwc/host/codec.hpp — the compression driver and the container decoder.
//
// compress_model(): selected tensors go through their stage chain tensor by tensor (the
// compensator drives column blocks through the host's block codec); other tensors are stored raw
// or zstd-compressed. Tensors are coded in parallel while the file is written in model order, so
// the output bytes do not depend on the thread count.
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nwc::host {

// Reports "done of total" after each tensor; name is the tensor just finished.
using ProgressFn = std::function<void(size_t done, size_t total, const std::string &name)>;

struct EncodedTensor; // streams and record of one coded tensor, not yet written (opaque)

// One tensor coded with a pipeline's stage chain, held in memory (for methods that code tensors in
// an order of their own, such as block-wise fine-tuning, and write the container afterwards).
struct TensorCoding {
  std::shared_ptr<EncodedTensor> encoded;
  std::vector<float> reconstruction;      // [rows, cols]: exactly what decoding returns
  std::vector<float> unit_reconstruction; // the same with unit row scales
  std::vector<float> row_scales;          // the chunker's row scales as stored; empty if none
};

// An input Hessian (cols x cols float32, row-major), in memory or loaded when a coder asks for it:
// the Hessians of an 8B-class model take tens of gigabytes, more than compress should hold.
class HessianRef {
public:
  using Loader = std::function<std::shared_ptr<const std::vector<float>>()>;
  HessianRef() = default;
  HessianRef(std::shared_ptr<const std::vector<float>> values); // NOLINT: in memory
  HessianRef(std::shared_ptr<std::vector<float>> values);       // NOLINT: in memory
  HessianRef(uint64_t entries, Loader load);                    // loaded on demand
  uint64_t size() const { return entries_; }
  std::shared_ptr<const std::vector<float>> load() const; // checks the entry count

private:
  uint64_t entries_ = 0;
  Loader load_;
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

CompressResult compress_model(const Model &model, const Pipeline &pipeline,
                              const Registry &registry, const std::filesystem::path &out,
                              const CompressSettings &settings);

// Decodes tensors of an opened container. The constructor checks that every plugin the file
// needs is installed and new enough, naming what is missing.
//
// Files named by path options (codecs) are found by their recorded XXH64 hash: the copy embedded in
// the container, else the recorded path, else a file of the same name next to the container, in
// the directories of NWC_CODEC_PATH (colon-separated), or in <exe>/../share/nwc/codecs.
class ContainerDecoder {
public:
  ContainerDecoder(const ContainerReader &reader, const Registry &registry);
  ~ContainerDecoder();
  // The whole tensor as float32, blocks decoded on up to `threads` threads (0 = all cores).
  std::vector<float> decode_tensor(const TensorRecord &tensor, unsigned threads = 0) const;
  // One column block: rows x (col_end - col_begin) floats, row-major.
  std::vector<float> decode_block(const TensorRecord &tensor, size_t block) const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A container's tensors as a Model whose loaders decode on demand (for eval, inspect, convert).
Model open_container_model(const std::filesystem::path &path, const Registry &registry,
                           unsigned threads = 0);

// Writes every tensor of a container to a safetensors file (dtype F32, F16 or BF16), tensor by
// tensor; the manifest's architecture goes into the safetensors metadata.
void decompress_to_safetensors(const std::filesystem::path &in, const std::filesystem::path &out,
                               const Registry &registry, DType dtype, unsigned threads = 0,
                               const ProgressFn &progress = {});

unsigned resolve_threads(unsigned threads); // 0 -> hardware concurrency

// Quality level of each of n input columns from the diagonal of their Hessian H (n x n, row-major),
// the columns' mean squared input: ranked by diag(H) descending (ties: lower index first), the
// first ceil(fractions[0] * n) get level fractions.size(), the next ceil(fractions[1] * n) one
// less, and so on; the rest level 0. Ceil rather than the reference's floor: on narrow layers
// (64 columns) floor would give the top levels no column at all, ceil gives each band at least
// one column whenever its fraction is positive.
std::vector<uint8_t> levels_from_hessian(const float *hessian, int64_t n,
                                         const std::vector<double> &fractions);

} // namespace nwc::host
