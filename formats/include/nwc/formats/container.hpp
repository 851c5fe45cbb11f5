// nwc/formats/container.hpp — the .nwc container, version 1 (byte-level spec: docs/container.md).
//
// Layout: a 16-byte header, then streams appended as tensors are produced, then a JSON manifest,
// then a fixed-size footer that points to the manifest. A reader needs only the footer and the
// manifest to find any tensor or any column block of it.
#pragma once

#include "nwc/formats/dtype.hpp"
#include "nwc/formats/file.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace nwc {

inline constexpr uint32_t kContainerVersion = 1;
inline constexpr uint64_t kContainerMaxManifest = 256ull << 20; // bound checked before allocation

// One contiguous byte stream in the file.
struct StreamRef {
  std::string role;   // "chunker", "transform", "quantizer", "entropy" (per block) or "raw", "zstd"
  int32_t block = -1; // index into TensorRecord::blocks, -1 for tensor-level streams
  uint64_t offset = 0; // absolute file offset
  uint64_t length = 0;
  uint64_t xxh64 = 0; // XXH64 (seed 0) of the stream bytes
};

struct BlockRecord {
  int64_t col_begin = 0;
  int64_t col_end = 0;
  int64_t symbol_count = 0; // number of symbols of the block's entropy stream
};

struct TensorRecord {
  std::string name;
  DType dtype = DType::F32; // dtype of the original tensor
  std::vector<int64_t> shape;
  std::string storage;       // "pipeline", "raw" (little-endian dtype bytes) or "zstd"
  int32_t stage_config = -1; // index into ContainerManifest::stage_configs ("pipeline" only)
  std::vector<BlockRecord> blocks;
  std::vector<StreamRef> streams;
  uint64_t stream_bytes() const; // sum of stream lengths
  uint64_t numel() const;
};

struct StageRecord {
  std::string slot; // "chunker", "transform", "quantizer", "entropy", "compensator"
  std::string plugin_id;
  std::string plugin_version;
  uint32_t stream_version = 0;
  nlohmann::json options; // resolved options that affect the bitstream (all, for decode)
};

// The stage chain used by a set of tensors (the pipeline's stages after [[override]] rules).
struct StageConfig {
  std::vector<StageRecord> stages;
};

struct ContainerManifest {
  nlohmann::json architecture = nlohmann::json::object(); // Architecture::to_json()
  std::string pipeline_name;
  std::string pipeline_text; // the TOML file as given
  std::string source_model;  // file name of the compressed model
  std::string source_format; // "llama2c", "safetensors", "gguf"
  std::vector<StageConfig> stage_configs;
  std::vector<TensorRecord> tensors;               // in file order
  nlohmann::json extra = nlohmann::json::object(); // codec hashes etc.; readers ignore unknown keys
};

// Writes a container incrementally. Streams are appended as they come; add_tensor() registers a
// tensor whose streams were appended; finish() writes the manifest and footer and renames the
// temporary file into place. Without finish(), no output file is left behind.
class ContainerWriter {
public:
  explicit ContainerWriter(const std::filesystem::path &out);
  ~ContainerWriter();
  StreamRef append_stream(const std::string &role, int32_t block, const void *data, size_t len);
  void add_tensor(TensorRecord record);
  // manifest.tensors is ignored: the tensors registered with add_tensor() are written.
  void finish(ContainerManifest manifest);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Opens and fully validates a container: magic, version, footer, manifest JSON and schema, every
// stream inside the stream area, no overlapping streams, block ranges covering each pipeline
// tensor's columns, shapes and counts within bounds. Errors name the file and what is wrong.
class ContainerReader {
public:
  explicit ContainerReader(const std::filesystem::path &path);
  ~ContainerReader();
  const ContainerManifest &manifest() const;
  const TensorRecord *find(const std::string &name) const; // nullptr if absent
  // Bytes of one stream after verifying its checksum; a mismatch throws
  // "FILE: tensor NAME: stream ROLE block B at offset O: checksum mismatch".
  std::vector<uint8_t> read_stream(const TensorRecord &tensor, const StreamRef &stream) const;
  // The same bytes without a copy: a view into the mapped file, valid while the reader lives,
  // checked and checksummed exactly as read_stream does.
  std::span<const uint8_t> stream_view(const TensorRecord &tensor, const StreamRef &stream) const;
  // Any stream of the stream area (e.g. an embedded codec recorded in manifest.extra), bounds and
  // checksum checked; `what` names it in errors.
  std::vector<uint8_t> read_stream_at(const StreamRef &stream, const std::string &what) const;
  uint64_t file_size() const;
  const std::filesystem::path &path() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- Additions: layout constants and helpers shared by writers, readers and tools. ----

inline constexpr uint64_t kContainerHeaderSize = 16; // magic, version, flags
inline constexpr uint64_t kContainerFooterSize = 40; // manifest offset/length/XXH64, version, magic
inline constexpr uint64_t kContainerMaxNumel = 1ull << 40; // elements per tensor, checked on read

// XXH64 with seed 0: the checksum of every stream and of the manifest.
uint64_t container_checksum(const void *data, size_t len);

// A zero-filled vector of n floats for a decoded tensor. A large one (8 MiB or more) is backed by
// transparent huge pages where the kernel allows it (THP "madvise" mode): its first touch then
// faults 2 MiB at a time instead of 4 KiB. On virtual machines, where page faults are expensive,
// faulting in a freshly allocated tensor 4 KiB at a time can cost more than decoding it. The advice
// is a hint: without THP this is an ordinary vector.
std::vector<float> tensor_buffer(size_t n);

// The manifest exactly as it is stored (manifest.tensors included). Key order is not significant.
nlohmann::json container_manifest_to_json(const ContainerManifest &manifest);

// Bytes attributed to one tensor for bits-per-weight: its stream bytes plus its share of the rest
// of the file (header, manifest, footer, unreferenced bytes) in proportion to its element count.
// Summed over all tensors this equals file_size. bpw = container_tensor_bytes(...) * 8 / numel.
double container_tensor_bytes(const ContainerManifest &manifest, uint64_t file_size,
                              const TensorRecord &tensor);

} // namespace nwc
