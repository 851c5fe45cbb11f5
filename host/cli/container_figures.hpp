// The figures `nwc inspect` reports for a container: bytes and bits per weight per tensor (each
// tensor's streams plus its share of headers, manifest and footer), totals over all tensors and
// over the pipeline-coded ones, and, against a reference model, MSE and SQNR of every decoded
// tensor. Computation only; commands/inspect.cpp prints. It needs the container decoder and no
// LibTorch: nwc::host would be its natural home.
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/host/registry.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nwc::cli {

struct TensorFigures {
  const TensorRecord *record = nullptr; // name, shape, dtype, storage, blocks, stream bytes
  double bytes = 0;                     // streams + share of the rest of the file
  double bits_per_weight = 0;
  std::vector<std::string> stages; // plugin ids of the stage chain (pipeline tensors)
  double mse = 0;                  // with a reference
  double sqnr_db = 0;              // with a reference; infinity for an exact tensor
};

struct ContainerFigures {
  std::vector<TensorFigures> tensors; // in file order
  uint64_t weights = 0;
  uint64_t file_bytes = 0;
  double bits_per_weight = 0;
  uint64_t pipeline_weights = 0;
  double pipeline_bits_per_weight = 0;
  bool compared = false; // a reference was given: mse and sqnr_db are set
  double mse = 0;
  double sqnr_db = 0;
};

// With a `reference` model file (empty: none; the same tensor names and shapes), every tensor is
// decoded through `registry` on `threads` threads and compared with the reference's.
ContainerFigures container_figures(const ContainerReader &reader, const host::Registry &registry,
                                   const std::string &reference, unsigned threads);

} // namespace nwc::cli
