// nwc/formats/container.hpp — the .nwc container, versions 1 and 2 (byte-level spec:
// docs/container.md).
//
// Layout: a 16-byte header, then streams appended as tensors are produced, then the manifest, then
// a fixed-size footer that points to the manifest. A reader needs only the footer and the manifest
// to find any tensor or any column block of it. Version 2 (written by default) stores the manifest
// as compact binary tables, zstd-compressed, with one checksum per random-access unit; version 1
// stores it as JSON with one checksum per stream. Readers read both into the same records.
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

inline constexpr uint32_t kContainerVersion = 2;    // the version ContainerWriter writes by default
inline constexpr uint32_t kContainerMinVersion = 1; // the oldest version ContainerReader reads
inline constexpr uint64_t kContainerMaxManifest = 256ull << 20; // bound checked before allocation
// Version 2: the decompressed manifest body, checked before allocation (docs/container.md §7).
inline constexpr uint64_t kContainerMaxManifestBody = 64ull << 20;

// One contiguous byte stream in the file.
struct StreamRef {
  std::string role;   // "chunker", "transform", "quantizer", "entropy" (per block) or "raw", "zstd"
  int32_t block = -1; // index into TensorRecord::blocks, -1 for tensor-level streams
  uint64_t offset = 0; // absolute file offset
  uint64_t length = 0;
  // XXH64 (seed 0) of the stream bytes: set by ContainerWriter::append_stream and in records read
  // from version 1 files. Version 2 files checksum streams per unit (a block's streams, a
  // tensor's tensor-level streams, docs/container.md §6), so records read from them carry 0 here;
  // ContainerReader verifies the unit when a stream is read.
  uint64_t xxh64 = 0;
};

struct BlockRecord {
  int64_t col_begin = 0;
  int64_t col_end = 0;
  int64_t symbol_count = 0; // number of symbols of the block's entropy stream
};

// Version 2 lists a tensor's streams in file order: records read from a version 2 file have them
// in that order, whatever order the writer was given.
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

struct ContainerWriteOptions {
  uint32_t format_version = kContainerVersion; // 1 or 2
  bool compress_manifest = true; // version 2: zstd the manifest when that makes it smaller
};

// Writes a container incrementally. Streams are appended as they come; add_tensor() registers a
// tensor whose streams were appended; finish() writes the manifest and footer and renames the
// temporary file into place. Without finish(), no output file is left behind.
class ContainerWriter {
public:
  explicit ContainerWriter(const std::filesystem::path &out); // version kContainerVersion
  ContainerWriter(const std::filesystem::path &out, const ContainerWriteOptions &options);
  ~ContainerWriter();
  StreamRef append_stream(const std::string &role, int32_t block, const void *data, size_t len);
  void add_tensor(TensorRecord record);
  // manifest.tensors is ignored: the tensors registered with add_tensor() are written.
  void finish(ContainerManifest manifest);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ContainerLayout;

// Opens and fully validates a container of version 1 or 2: magic, version, footer, manifest
// (JSON and schema, or binary tables) within its bounds, every stream inside the stream area, no
// overlapping streams, block ranges covering each pipeline tensor's columns, shapes and counts
// within bounds. Errors name the file and what is wrong.
class ContainerReader {
public:
  explicit ContainerReader(const std::filesystem::path &path);
  ~ContainerReader();
  const ContainerManifest &manifest() const;
  const TensorRecord *find(const std::string &name) const; // nullptr if absent
  // Bytes of one stream after verifying its checksum (version 2: the checksum of its unit, once per
  // reader); a mismatch throws "FILE: tensor NAME: stream ROLE block B at offset O: checksum
  // mismatch (...)". Version 2: the stream must be one of the manifest's streams of that tensor.
  std::vector<uint8_t> read_stream(const TensorRecord &tensor, const StreamRef &stream) const;
  // The same bytes without a copy: a view into the mapped file, valid while the reader lives,
  // checked and checksummed exactly as read_stream does.
  std::span<const uint8_t> stream_view(const TensorRecord &tensor, const StreamRef &stream) const;
  // Any stream of the stream area (e.g. an embedded codec recorded in manifest.extra), bounds and
  // checksum checked against stream.xxh64 (in every version); `what` names it in errors.
  std::vector<uint8_t> read_stream_at(const StreamRef &stream, const std::string &what) const;
  uint64_t file_size() const;
  const std::filesystem::path &path() const;
  uint32_t format_version() const; // of this file: 1 or 2
  ContainerLayout layout() const;  // where the file's bytes go

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend void container_rewrite(const ContainerReader &, const std::filesystem::path &,
                                const ContainerWriteOptions &);
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

// Where the bytes of an open container go. file_size = header_bytes + tensor_stream_bytes +
// unreferenced_bytes + manifest_bytes + footer_bytes.
struct ContainerLayout {
  uint32_t format_version = 0;
  uint64_t file_size = 0;
  uint64_t header_bytes = 0;        // 16
  uint64_t tensor_stream_bytes = 0; // streams of tensors
  uint64_t unreferenced_bytes = 0;  // stream-area bytes of no tensor (embedded codecs, ...)
  uint64_t manifest_offset = 0;
  uint64_t manifest_bytes = 0;      // as stored (version 2: compressed)
  uint64_t manifest_body_bytes = 0; // version 2: decompressed; version 1: = manifest_bytes
  uint64_t footer_bytes = 0;        // 40
  uint64_t checksums = 0;           // XXH64s in the manifest: one per stream (v1), per unit (v2)
  // What the container format itself costs: header + manifest + footer.
  uint64_t container_bytes() const { return header_bytes + manifest_bytes + footer_bytes; }
};

// The part of container_tensor_bytes() that pays for the container's header, manifest and footer:
// layout.container_bytes() x numel(tensor) / (sum of all tensors' numel). Its sum over the coded
// tensors, x 8 / their weights, is the header cost per coded weight (`nwc bench`'s column).
double container_tensor_header_bytes(const ContainerManifest &manifest,
                                     const ContainerLayout &layout, const TensorRecord &tensor);

// Writes the container `in` again, in the format `options` asks for: the stream area is copied
// byte for byte (so offsets recorded in manifest.extra stay valid), every tensor stream verified on
// the way, and the manifest re-encoded. Converts version 1 files to version 2 and back.
void container_rewrite(const ContainerReader &in, const std::filesystem::path &out,
                       const ContainerWriteOptions &options = {});

// Test and fuzzing aid: makes the checksums of an in-memory container image match its bytes, so
// that mutated inputs reach the checks behind them. Version 2 only: when the footer locates the
// manifest, its checksum is set; when the manifest also decodes, every unit checksum is recomputed
// (the manifest is re-stored in its encoding). Returns false when the image was left unchanged.
bool container_fix_checksums(std::vector<uint8_t> &file);

} // namespace nwc
