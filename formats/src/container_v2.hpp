// The binary manifest of container version 2 (docs/container.md §5): internal to nwc_formats,
// shared by the writer, the reader, container_rewrite() and container_fix_checksums().
#pragma once

#include "nwc/formats/container.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nwc::v2 {

// First byte of the stored manifest.
inline constexpr uint8_t kStored = 0; // the body follows as is
inline constexpr uint8_t kZstd = 1;   // the body follows as one zstd frame
// A compressed body may be at most this many times its stored manifest (the writer stores bodies
// that compress better than that uncompressed), so a small file cannot expand to a large body.
inline constexpr uint64_t kMaxExpansion = 8;
// Bytes of strings materialized from the string table (counted at every reference): at most
// kStringBudgetBase + kStringBudgetFactor x body, and never more than kStringBudgetMax.
inline constexpr uint64_t kStringBudgetBase = 16ull << 20;
inline constexpr uint64_t kStringBudgetFactor = 32;
inline constexpr uint64_t kStringBudgetMax = 256ull << 20;
// JSON values in all JSON texts of the manifest together, and their nesting depth.
inline constexpr uint64_t kMaxJsonValues = 1ull << 24;
inline constexpr int kMaxJsonDepth = 64;

// A checksum unit: the streams of one tensor that belong to one block (or, block -1, its
// tensor-level streams), verified together: what a random access to a block reads, besides the
// tensor-level unit. Units with no streams do not exist.
struct Unit {
  uint32_t tensor = 0;
  int32_t block = -1;            // -1 or a block index
  std::vector<uint32_t> streams; // indices into the tensor's streams, in file order
};

// The units of `tensors` (whose streams are in file order), in the order of the checksum table.
std::vector<Unit> units_of(const std::vector<TensorRecord> &tensors);

// XXH64 (seed 0) of the units' stream checksums, each as 8 little-endian bytes, in file order.
uint64_t unit_checksum(const uint64_t *stream_sums, size_t n);

// One entry of the stream table: unreferenced bytes (owner 0) or consecutive streams of tensor
// owner - 1.
struct Run {
  uint64_t owner = 0;
  uint64_t gap = 0;              // owner 0: the number of bytes
  std::vector<uint32_t> streams; // owner > 0: indices into the tensor's streams
};

struct Body {
  ContainerManifest manifest; // each tensor's streams in file order, offsets set, xxh64 = 0
  std::vector<Run> runs;
  std::vector<Unit> units;
  std::vector<uint64_t> sums; // one per unit
  size_t sums_offset = 0;     // where the checksum table starts in the body
};

// The body of `m` (whose tensors' streams are in file order; `runs` lay out the stream area, and
// `sums` are the units' checksums). Strings must be valid UTF-8 (checked by the caller).
std::string encode_body(const ContainerManifest &m, const std::vector<Run> &runs,
                        const std::vector<uint64_t> &sums);

// Parses a body: structure, counts against the bytes left, string references, UTF-8, JSON texts,
// the stream table against the stream area [16, area_end). Semantic checks of the tensors are the
// caller's (check_tensor). Errors are NWC_E_CORRUPT_STREAM "FILE: manifest: ...".
Body decode_body(const uint8_t *data, size_t size, uint64_t area_end, const std::string &file);

// The stored manifest for a body: kZstd + a zstd frame when `compress` and that is smaller and
// within kMaxExpansion, else kStored + the body.
std::string store_body(const std::string &body, bool compress);

// The body of a stored manifest of `size` bytes at file offset `offset`, with its bounds checked.
std::string load_body(const uint8_t *data, size_t size, uint64_t offset, const std::string &file);

bool valid_utf8(std::string_view s);

} // namespace nwc::v2
