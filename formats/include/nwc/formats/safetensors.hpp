// nwc/formats/safetensors.hpp — safetensors reader (single file, directory, sharded with
// model.safetensors.index.json) and a streaming writer.
#pragma once

#include "nwc/formats/model.hpp"

#include <map>

namespace nwc {

// Limits applied before any allocation.
inline constexpr uint64_t kSafetensorsMaxHeader = 100ull << 20; // 100 MiB JSON header

// Reads a .safetensors file or a directory holding one or several (sharded, with
// model.safetensors.index.json) and an optional config.json (HF LlamaConfig -> Architecture).
// The header is fully validated first: JSON syntax, dtype names, shapes, byte counts
// (numel * dtype size == end - begin), offsets inside the data area, no overlaps.
Model read_safetensors(const std::filesystem::path &path);

// Writes one .safetensors file tensor by tensor, in the order declared. The header is written up
// front (all shapes known), the data follows as write() is called, commit() renames the temporary
// file into place. Destroyed without commit(): no output file.
class SafetensorsWriter {
public:
  SafetensorsWriter(const std::filesystem::path &out, const std::vector<TensorInfo> &tensors,
                    const std::map<std::string, std::string> &metadata = {});
  ~SafetensorsWriter();
  // Writes the next tensor (must follow the declared order); data holds numel() floats that are
  // converted to the tensor's declared dtype (F32, F16 or BF16).
  void write(const std::string &name, const float *data);
  // Writes the next tensor's raw bytes (numel * dtype size).
  void write_raw(const std::string &name, const void *bytes, size_t len);
  // Writes the next tensor's raw bytes in consecutive parts, for tensors too large to hold in
  // memory at once; the tensor is complete (and the next may start) once all its numel * dtype
  // size bytes have been given. Every part names the same tensor.
  void write_raw_part(const std::string &name, const void *bytes, size_t len);
  void commit();

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace nwc
