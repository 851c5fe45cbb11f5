// nwc/host/decode.hpp — the container decoder: tensors or single column blocks of a `.nwc` file as
// float32, a container opened as a Model, and decompression to a safetensors file.
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/registry.hpp"
#include "nwc/host/threads.hpp"

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

namespace nwc::host {

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
  // The tensor as the native blocks its quantizer's codes are (a quantizer with export_native,
  // ABI 1.5: nwc.quant.ggml's ggml blocks), one layout for the whole tensor; nullopt when the
  // tensor is not coded so, or a transform, rotation, row scales or row gain lie between the
  // quantizer and the weights. A chunker can still change values in merge: writers check that
  // the blocks decode to decode_tensor()'s values before they use them.
  std::optional<NativeBlocks> native_tensor(const TensorRecord &tensor) const;

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

} // namespace nwc::host
