// The .nwc container, versions 1 and 2. Byte-level spec: docs/container.md. The binary manifest of
// version 2 is in container_v2.cpp; the rest (records, checks, writer, reader) is shared.
#include "nwc/formats/container.hpp"

#include "container_v2.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <sys/mman.h>
#include <unordered_map>
#include <utility>
#include <xxhash.h>

namespace nwc {

namespace {

constexpr uint8_t kHeaderMagic[8] = {0x89, 'N', 'W', 'C', '\r', '\n', 0x1a, '\n'};
constexpr uint8_t kFooterMagic[8] = {'N', 'W', 'C', 'F', 'O', 'O', 'T', '1'};
constexpr uint64_t kHeaderSize = kContainerHeaderSize;
constexpr uint64_t kFooterSize = kContainerFooterSize;
constexpr uint64_t kMaxNumel = kContainerMaxNumel;
constexpr size_t kMaxNdim = 8;
constexpr uint32_t kJsonVersion = 1; // the version whose manifest is JSON
// The manifest is checksummed, but a hostile writer can compute checksums too: bound the nesting
// so that copying or printing a parsed document cannot exhaust the stack, and the number of values
// so that a maximal manifest cannot expand to gigabytes once parsed.
constexpr int kMaxJsonDepth = 64;
constexpr uint64_t kMaxJsonValues = 1ull << 24;

void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string hex64(uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i) {
    s[static_cast<size_t>(i)] = digits[v & 0xf];
    v >>= 4;
  }
  return s;
}

bool parse_hex64(const std::string &s, uint64_t &out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return false;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  out = v;
  return true;
}

std::string hex_bytes(const uint8_t *p, size_t n) {
  static const char digits[] = "0123456789ABCDEF";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += digits[p[i] >> 4];
    s += digits[p[i] & 0xf];
  }
  return s;
}

std::string quoted(const std::string &s) {
  return "'" + s + "'";
}

std::string tensor_context(const TensorRecord &t, size_t index) {
  return t.name.empty() ? "tensor #" + std::to_string(index) : "tensor " + quoted(t.name);
}

// ---- manifest -> JSON --------------------------------------------------------------------------

nlohmann::json stream_to_json(const StreamRef &s) {
  return {{"role", s.role},
          {"block", s.block},
          {"offset", s.offset},
          {"length", s.length},
          {"xxh64", hex64(s.xxh64)}};
}

nlohmann::json tensor_to_json(const TensorRecord &t) {
  nlohmann::json blocks = nlohmann::json::array();
  for (const auto &b : t.blocks) blocks.push_back({b.col_begin, b.col_end, b.symbol_count});
  nlohmann::json streams = nlohmann::json::array();
  for (const auto &s : t.streams) streams.push_back(stream_to_json(s));
  return {{"name", t.name},
          {"dtype", std::string(dtype_name(t.dtype))},
          {"shape", t.shape},
          {"storage", t.storage},
          {"stage_config", t.stage_config},
          {"blocks", std::move(blocks)},
          {"streams", std::move(streams)}};
}

// ---- JSON -> manifest, with the schema checks ---------------------------------------------------

// Reads typed values out of the manifest; every failure names the file, the place (tensor, stage
// config...) and the key.
class SchemaReader {
public:
  explicit SchemaReader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void bad(const std::string &where, const std::string &what) const {
    fail(NWC_E_CORRUPT_STREAM, file_ + ": manifest: " + where + ": " + what);
  }

  const nlohmann::json &key(const nlohmann::json &obj, const char *k,
                            const std::string &where) const {
    auto it = obj.find(k);
    if (it == obj.end()) bad(where, std::string("missing required key '") + k + "'");
    return *it;
  }
  const nlohmann::json &object(const nlohmann::json &obj, const char *k,
                               const std::string &where) const {
    const auto &v = key(obj, k, where);
    if (!v.is_object()) bad(where, std::string("key '") + k + "': expected an object");
    return v;
  }
  const nlohmann::json &array(const nlohmann::json &obj, const char *k,
                              const std::string &where) const {
    const auto &v = key(obj, k, where);
    if (!v.is_array()) bad(where, std::string("key '") + k + "': expected an array");
    return v;
  }
  std::string string(const nlohmann::json &obj, const char *k, const std::string &where) const {
    const auto &v = key(obj, k, where);
    if (!v.is_string()) bad(where, std::string("key '") + k + "': expected a string");
    return v.get<std::string>();
  }
  // An integer in [lo, hi]; floats, booleans and out-of-range values are rejected.
  int64_t integer(const nlohmann::json &v, int64_t lo, int64_t hi, const std::string &where,
                  const std::string &what) const {
    int64_t x = 0;
    if (v.is_number_unsigned()) {
      auto u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        bad(where, what + ": " + std::to_string(u) + " is out of range [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "]");
      x = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
      x = v.get<int64_t>();
    } else {
      bad(where, what + ": expected an integer");
    }
    if (x < lo || x > hi)
      bad(where, what + ": " + std::to_string(x) + " is out of range [" + std::to_string(lo) +
                     ", " + std::to_string(hi) + "]");
    return x;
  }
  int64_t integer(const nlohmann::json &obj, const char *k, int64_t lo, int64_t hi,
                  const std::string &where) const {
    return integer(key(obj, k, where), lo, hi, where, std::string("key '") + k + "'");
  }
  uint64_t unsigned64(const nlohmann::json &obj, const char *k, const std::string &where) const {
    const auto &v = key(obj, k, where);
    if (!v.is_number_unsigned())
      bad(where, std::string("key '") + k + "': expected a non-negative integer");
    return v.get<uint64_t>();
  }

private:
  std::string file_;
};

StreamRef stream_from_json(const SchemaReader &r, const nlohmann::json &j,
                           const std::string &where) {
  if (!j.is_object()) r.bad(where, "expected an object");
  StreamRef s;
  s.role = r.string(j, "role", where);
  s.block =
      static_cast<int32_t>(r.integer(j, "block", -1, std::numeric_limits<int32_t>::max(), where));
  s.offset = r.unsigned64(j, "offset", where);
  s.length = r.unsigned64(j, "length", where);
  std::string h = r.string(j, "xxh64", where);
  if (!parse_hex64(h, s.xxh64))
    r.bad(where, "key 'xxh64': expected 16 hex digits, found '" + h.substr(0, 40) + "'");
  return s;
}

TensorRecord tensor_from_json(const SchemaReader &r, const nlohmann::json &j, size_t index) {
  std::string where = "tensor #" + std::to_string(index);
  if (!j.is_object()) r.bad(where, "expected an object");
  TensorRecord t;
  t.name = r.string(j, "name", where);
  where = tensor_context(t, index);
  std::string dt = r.string(j, "dtype", where);
  if (!dtype_from_name(dt, t.dtype))
    r.bad(where, "key 'dtype': unknown dtype '" + dt.substr(0, 40) +
                     "' (expected F32, F16, BF16, I8, U8, I32 or I64)");
  const auto &shape = r.array(j, "shape", where);
  if (shape.size() > kMaxNdim)
    r.bad(where, "key 'shape': " + std::to_string(shape.size()) + " dimensions (at most " +
                     std::to_string(kMaxNdim) + ")");
  for (size_t d = 0; d < shape.size(); ++d)
    t.shape.push_back(r.integer(shape[d], 0, std::numeric_limits<int64_t>::max(), where,
                                "key 'shape' dimension " + std::to_string(d)));
  t.storage = r.string(j, "storage", where);
  t.stage_config = static_cast<int32_t>(
      r.integer(j, "stage_config", -1, std::numeric_limits<int32_t>::max(), where));
  const auto &blocks = r.array(j, "blocks", where);
  for (size_t b = 0; b < blocks.size(); ++b) {
    std::string bw = where + ": block " + std::to_string(b);
    if (!blocks[b].is_array() || blocks[b].size() != 3)
      r.bad(bw, "expected [col_begin, col_end, symbol_count]");
    BlockRecord br;
    br.col_begin = r.integer(blocks[b][0], 0, std::numeric_limits<int64_t>::max(), bw, "col_begin");
    br.col_end = r.integer(blocks[b][1], 0, std::numeric_limits<int64_t>::max(), bw, "col_end");
    br.symbol_count =
        r.integer(blocks[b][2], 0, std::numeric_limits<int64_t>::max(), bw, "symbol_count");
    t.blocks.push_back(br);
  }
  const auto &streams = r.array(j, "streams", where);
  for (size_t s = 0; s < streams.size(); ++s)
    t.streams.push_back(stream_from_json(r, streams[s], where + ": stream " + std::to_string(s)));
  return t;
}

StageRecord stage_from_json(const SchemaReader &r, const nlohmann::json &j,
                            const std::string &where) {
  if (!j.is_object()) r.bad(where, "expected an object");
  StageRecord s;
  s.slot = r.string(j, "slot", where);
  s.plugin_id = r.string(j, "plugin", where);
  s.plugin_version = r.string(j, "version", where);
  s.stream_version = static_cast<uint32_t>(
      r.integer(j, "stream_version", 0, std::numeric_limits<uint32_t>::max(), where));
  s.options = r.object(j, "options", where);
  return s;
}

ContainerManifest manifest_from_json(const SchemaReader &r, const nlohmann::json &j) {
  if (!j.is_object()) r.bad("top level", "expected an object");
  ContainerManifest m;
  std::string format = r.string(j, "format", "top level");
  if (format != "nwc")
    r.bad("top level", "key 'format': expected \"nwc\", found \"" + format + "\"");
  int64_t version = r.integer(j, "version", 0, std::numeric_limits<int64_t>::max(), "top level");
  if (version != kJsonVersion)
    r.bad("top level", "key 'version': " + std::to_string(version) +
                           " does not match the header's format version " +
                           std::to_string(kJsonVersion));
  m.architecture = r.object(j, "architecture", "top level");
  const auto &pipeline = r.object(j, "pipeline", "top level");
  m.pipeline_name = r.string(pipeline, "name", "pipeline");
  m.pipeline_text = r.string(pipeline, "text", "pipeline");
  const auto &source = r.object(j, "source", "top level");
  m.source_model = r.string(source, "model", "source");
  m.source_format = r.string(source, "format", "source");
  const auto &configs = r.array(j, "stage_configs", "top level");
  for (size_t c = 0; c < configs.size(); ++c) {
    std::string where = "stage_config " + std::to_string(c);
    if (!configs[c].is_object()) r.bad(where, "expected an object");
    StageConfig sc;
    const auto &stages = r.array(configs[c], "stages", where);
    for (size_t s = 0; s < stages.size(); ++s)
      sc.stages.push_back(stage_from_json(r, stages[s], where + ": stage " + std::to_string(s)));
    m.stage_configs.push_back(std::move(sc));
  }
  const auto &tensors = r.array(j, "tensors", "top level");
  for (size_t t = 0; t < tensors.size(); ++t)
    m.tensors.push_back(tensor_from_json(r, tensors[t], t));
  m.extra = r.object(j, "extra", "top level");
  return m;
}

// ---- semantic checks shared by the writer (add_tensor/finish) and the reader --------------------

// Checks one tensor's record: shape bounds, storage, stage config, blocks and stream placement
// inside [kHeaderSize, stream_end). `bad(where, what)` reports.
template <class Bad>
void check_tensor(const TensorRecord &t, size_t index, size_t stage_config_count,
                  uint64_t stream_end, const Bad &bad) {
  const std::string where = tensor_context(t, index);
  if (t.name.empty()) bad(where, "empty tensor name");
  if (t.shape.size() > kMaxNdim)
    bad(where, "shape has " + std::to_string(t.shape.size()) + " dimensions (at most 8)");
  bool has_zero = false;
  for (int64_t d : t.shape) {
    if (d < 0) bad(where, "negative shape dimension " + std::to_string(d));
    if (d == 0) has_zero = true;
  }
  uint64_t numel = 1;
  if (!has_zero) {
    for (int64_t d : t.shape) {
      auto ud = static_cast<uint64_t>(d);
      if (ud > kMaxNumel || numel > kMaxNumel / ud) bad(where, "shape has more than 2^40 elements");
      numel *= ud;
    }
  } else {
    numel = 0;
  }

  size_t raw_streams = 0, zstd_streams = 0;
  for (size_t s = 0; s < t.streams.size(); ++s) {
    const StreamRef &st = t.streams[s];
    const std::string sw = where + ": stream " + std::to_string(s) + " (" + st.role + ")";
    if (st.role.empty()) bad(sw, "empty role");
    if (st.block < -1 || (st.block >= 0 && static_cast<size_t>(st.block) >= t.blocks.size()))
      bad(sw, "block " + std::to_string(st.block) + " is out of range [-1, " +
                  std::to_string(t.blocks.size()) + ")");
    if (st.offset < kHeaderSize || st.offset > stream_end || st.length > stream_end - st.offset)
      bad(sw, "bytes [" + std::to_string(st.offset) + ", " + std::to_string(st.offset) + "+" +
                  std::to_string(st.length) + ") lie outside the stream area [" +
                  std::to_string(kHeaderSize) + ", " + std::to_string(stream_end) + ")");
    if (st.role == "raw") ++raw_streams;
    if (st.role == "zstd") ++zstd_streams;
  }

  if (t.storage == "pipeline") {
    if (t.stage_config < 0 || static_cast<size_t>(t.stage_config) >= stage_config_count)
      bad(where, "stage_config " + std::to_string(t.stage_config) + " is out of range [0, " +
                     std::to_string(stage_config_count) + ")");
    if (t.shape.size() != 2)
      bad(where, "pipeline storage needs a 2-D shape, found " + std::to_string(t.shape.size()) +
                     " dimensions");
    const int64_t cols = t.shape[1];
    int64_t next = 0;
    for (size_t b = 0; b < t.blocks.size(); ++b) {
      const BlockRecord &br = t.blocks[b];
      const std::string bw = where + ": block " + std::to_string(b);
      if (br.col_begin != next)
        bad(bw, "starts at column " + std::to_string(br.col_begin) + ", expected " +
                    std::to_string(next) + " (blocks must be sorted and contiguous)");
      if (br.col_end <= br.col_begin || br.col_end > cols)
        bad(bw, "column range [" + std::to_string(br.col_begin) + ", " +
                    std::to_string(br.col_end) + ") is empty or exceeds " + std::to_string(cols) +
                    " columns");
      if (br.symbol_count < 0 || static_cast<uint64_t>(br.symbol_count) > kMaxNumel)
        bad(bw, "symbol_count " + std::to_string(br.symbol_count) + " is out of range [0, 2^40]");
      next = br.col_end;
    }
    if (next != cols)
      bad(where, "blocks cover columns [0, " + std::to_string(next) + ") but the tensor has " +
                     std::to_string(cols) + " columns");
  } else if (t.storage == "raw" || t.storage == "zstd") {
    const bool raw = t.storage == "raw";
    if (t.stage_config != -1)
      bad(where,
          t.storage + " storage: stage_config must be -1, found " + std::to_string(t.stage_config));
    if (!t.blocks.empty()) bad(where, t.storage + " storage: expected no blocks");
    if (t.streams.size() != 1 || (raw ? raw_streams : zstd_streams) != 1)
      bad(where, t.storage + " storage: expected exactly one stream, with role '" + t.storage +
                     "'; found " + std::to_string(t.streams.size()) + " streams, " +
                     std::to_string(raw ? raw_streams : zstd_streams) + " with that role");
    if (t.streams[0].block != -1) bad(where, t.storage + " storage: the stream's block must be -1");
    if (raw) {
      const uint64_t expect = numel * dtype_size(t.dtype);
      if (t.streams[0].length != expect)
        bad(where, "raw stream at offset " + std::to_string(t.streams[0].offset) + " has " +
                       std::to_string(t.streams[0].length) + " bytes, expected " +
                       std::to_string(expect) + " (" + std::to_string(numel) + " elements of " +
                       std::string(dtype_name(t.dtype)) + ")");
    }
  } else {
    bad(where, "storage '" + t.storage + "' is not one of pipeline, raw, zstd");
  }
}

// Streams of all tensors must not share bytes.
template <class Bad>
void check_no_overlap(const std::vector<TensorRecord> &tensors, const Bad &bad) {
  struct Span {
    uint64_t offset, length;
    size_t tensor, stream;
  };
  std::vector<Span> spans;
  for (size_t t = 0; t < tensors.size(); ++t)
    for (size_t s = 0; s < tensors[t].streams.size(); ++s)
      spans.push_back({tensors[t].streams[s].offset, tensors[t].streams[s].length, t, s});
  std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) {
    return a.offset != b.offset ? a.offset < b.offset : a.length < b.length;
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    const Span &a = spans[i - 1], &b = spans[i];
    // Ranges were checked to lie inside the file, so offset + length cannot overflow.
    if (a.offset + a.length > b.offset && b.length > 0)
      bad(tensor_context(tensors[b.tensor], b.tensor) + ": stream " + std::to_string(b.stream),
          "bytes at offset " + std::to_string(b.offset) + " overlap stream " +
              std::to_string(a.stream) + " of " + tensor_context(tensors[a.tensor], a.tensor) +
              " at offset " + std::to_string(a.offset) + " (length " + std::to_string(a.length) +
              ")");
  }
}

template <class Bad>
void check_unique_names(const std::vector<TensorRecord> &tensors,
                        std::unordered_map<std::string, size_t> &index, const Bad &bad) {
  for (size_t t = 0; t < tensors.size(); ++t)
    if (!index.emplace(tensors[t].name, t).second)
      bad(tensor_context(tensors[t], t),
          "duplicate tensor name (also tensor #" + std::to_string(index[tensors[t].name]) + ")");
}

} // namespace

// ---- records
// -------------------------------------------------------------------------------------

uint64_t TensorRecord::stream_bytes() const {
  uint64_t n = 0;
  for (const auto &s : streams) n += s.length;
  return n;
}

uint64_t TensorRecord::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= d > 0 ? static_cast<uint64_t>(d) : 0;
  return n;
}

uint64_t container_checksum(const void *data, size_t len) {
  return XXH64(data, len, 0);
}

std::vector<float> tensor_buffer(size_t n) {
  std::vector<float> v;
  v.reserve(n);
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (n * sizeof(float) >= 4 * kHuge) {
    // The whole 2 MiB pages inside the allocation, advised before anything touches them.
    const auto begin = reinterpret_cast<uintptr_t>(v.data());
    const uintptr_t a = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t e = (begin + n * sizeof(float)) & ~(kHuge - 1);
    if (e > a) ::madvise(reinterpret_cast<void *>(a), e - a, MADV_HUGEPAGE); // failure: no THP
  }
#endif
  v.resize(n);
  return v;
}

nlohmann::json container_manifest_to_json(const ContainerManifest &m) {
  nlohmann::json configs = nlohmann::json::array();
  for (const auto &c : m.stage_configs) {
    nlohmann::json stages = nlohmann::json::array();
    for (const auto &s : c.stages)
      stages.push_back({{"slot", s.slot},
                        {"plugin", s.plugin_id},
                        {"version", s.plugin_version},
                        {"stream_version", s.stream_version},
                        {"options", s.options.is_null() ? nlohmann::json::object() : s.options}});
    configs.push_back({{"stages", std::move(stages)}});
  }
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto &t : m.tensors) tensors.push_back(tensor_to_json(t));
  return {{"format", "nwc"},
          {"version", kJsonVersion},
          {"architecture", m.architecture},
          {"pipeline", {{"name", m.pipeline_name}, {"text", m.pipeline_text}}},
          {"source", {{"model", m.source_model}, {"format", m.source_format}}},
          {"stage_configs", std::move(configs)},
          {"tensors", std::move(tensors)},
          {"extra", m.extra}};
}

double container_tensor_bytes(const ContainerManifest &m, uint64_t file_size,
                              const TensorRecord &t) {
  uint64_t streams = 0;
  double elements = 0;
  for (const auto &x : m.tensors) {
    streams += x.stream_bytes();
    elements += static_cast<double>(x.numel());
  }
  const double overhead = file_size > streams ? static_cast<double>(file_size - streams) : 0.0;
  const double share = elements > 0
                           ? static_cast<double>(t.numel()) / elements
                           : 1.0 / static_cast<double>(std::max<size_t>(1, m.tensors.size()));
  return static_cast<double>(t.stream_bytes()) + overhead * share;
}

double container_tensor_header_bytes(const ContainerManifest &m, const ContainerLayout &layout,
                                     const TensorRecord &t) {
  double elements = 0;
  for (const auto &x : m.tensors) elements += static_cast<double>(x.numel());
  const double share = elements > 0
                           ? static_cast<double>(t.numel()) / elements
                           : 1.0 / static_cast<double>(std::max<size_t>(1, m.tensors.size()));
  return static_cast<double>(layout.container_bytes()) * share;
}

// ---- writer
// ----------------------------------------------------------------------------------------

struct ContainerWriter::Impl {
  AtomicFile file;
  ContainerWriteOptions options;
  // Streams appended so far, in offset order; `owner` is the tensor that claimed it (-1: none).
  struct Appended {
    StreamRef ref;
    int64_t owner = -1;
  };
  std::vector<Appended> appended;
  std::vector<TensorRecord> tensors;
  std::vector<std::vector<size_t>> positions; // per tensor: the appended index of each stream
  std::unordered_map<std::string, size_t> names;
  bool finished = false;
  bool broken = false; // an I/O error left the file in an unknown state

  Impl(const std::filesystem::path &out, const ContainerWriteOptions &o) : file(out), options(o) {}

  std::string target() const { return file.target().string(); }
  void usable(const char *what) const {
    if (finished) fail(NWC_E_INVALID_ARG, target() + ": " + what + " after finish()");
    if (broken) fail(NWC_E_IO, target() + ": " + what + " after an earlier write error");
  }
  std::string manifest_v1(const ContainerManifest &m) const;
  std::string manifest_v2(ContainerManifest &m) const;
};

std::string ContainerWriter::Impl::manifest_v1(const ContainerManifest &m) const {
  try {
    return container_manifest_to_json(m).dump();
  } catch (const nlohmann::json::exception &e) {
    // Invalid UTF-8 in a name or text: the manifest would not parse back.
    fail(NWC_E_INVALID_ARG, target() + ": finish: cannot encode the manifest: " + e.what());
  }
}

// The version 2 manifest of m, whose tensors get their streams in file order.
std::string ContainerWriter::Impl::manifest_v2(ContainerManifest &m) const {
  const std::string out = target();
  auto utf8 = [&](const std::string &s, const std::string &what) {
    if (!v2::valid_utf8(s))
      fail(NWC_E_INVALID_ARG,
           out + ": finish: cannot encode the manifest: " + what + " is not valid UTF-8");
  };
  utf8(m.pipeline_name, "the pipeline name");
  utf8(m.pipeline_text, "the pipeline text");
  utf8(m.source_model, "the source model");
  utf8(m.source_format, "the source format");
  for (const auto &c : m.stage_configs)
    for (const auto &s : c.stages) {
      utf8(s.slot, "a stage slot");
      utf8(s.plugin_id, "a plugin id");
      utf8(s.plugin_version, "a plugin version");
    }
  for (size_t t = 0; t < m.tensors.size(); ++t) {
    utf8(m.tensors[t].name, tensor_context(m.tensors[t], t) + ": the name");
    for (const auto &s : m.tensors[t].streams)
      utf8(s.role, tensor_context(m.tensors[t], t) + ": a stream role");
  }

  // Each tensor's streams in append (= file) order, and where each appended stream went.
  std::vector<std::pair<int64_t, uint32_t>> place(appended.size(), {-1, 0});
  for (size_t t = 0; t < m.tensors.size(); ++t) {
    const std::vector<size_t> &pos = positions[t];
    std::vector<size_t> order(pos.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return pos[a] < pos[b]; });
    std::vector<StreamRef> sorted;
    for (size_t i : order) {
      place[pos[i]] = {static_cast<int64_t>(t), static_cast<uint32_t>(sorted.size())};
      sorted.push_back(m.tensors[t].streams[i]);
    }
    m.tensors[t].streams = std::move(sorted);
  }
  std::vector<v2::Run> runs;
  for (size_t a = 0; a < appended.size(); ++a) {
    const auto [t, i] = place[a];
    if (t < 0) {
      if (appended[a].ref.length == 0) continue;
      if (runs.empty() || runs.back().owner != 0) runs.push_back({});
      runs.back().gap += appended[a].ref.length;
    } else {
      if (runs.empty() || runs.back().owner != static_cast<uint64_t>(t) + 1)
        runs.push_back({static_cast<uint64_t>(t) + 1, 0, {}});
      runs.back().streams.push_back(i);
    }
  }
  std::vector<uint64_t> sums;
  std::vector<uint64_t> h;
  for (const auto &u : v2::units_of(m.tensors)) {
    h.clear();
    for (uint32_t i : u.streams) h.push_back(m.tensors[u.tensor].streams[i].xxh64);
    sums.push_back(v2::unit_checksum(h.data(), h.size()));
  }

  std::string body;
  try {
    body = v2::encode_body(m, runs, sums);
  } catch (const nlohmann::json::exception &e) {
    fail(NWC_E_INVALID_ARG, out + ": finish: cannot encode the manifest: " + e.what());
  }
  if (body.size() > kContainerMaxManifestBody)
    fail(NWC_E_INVALID_ARG, out + ": finish: manifest of " + std::to_string(body.size()) +
                                " bytes exceeds the limit of " +
                                std::to_string(kContainerMaxManifestBody));
  // Everything written must read back: run the reader's decoder (bounds included) on it.
  try {
    (void)v2::decode_body(reinterpret_cast<const uint8_t *>(body.data()), body.size(), file.size(),
                          out);
  } catch (const Error &e) {
    fail(NWC_E_INVALID_ARG,
         out + ": finish: the manifest would not be readable: " + std::string(e.what()));
  }
  return v2::store_body(body, options.compress_manifest);
}

ContainerWriter::ContainerWriter(const std::filesystem::path &out)
    : ContainerWriter(out, ContainerWriteOptions{}) {}

ContainerWriter::ContainerWriter(const std::filesystem::path &out,
                                 const ContainerWriteOptions &options)
    : impl_(std::make_unique<Impl>(out, options)) {
  if (options.format_version < kContainerMinVersion || options.format_version > kContainerVersion)
    fail(NWC_E_INVALID_ARG, impl_->target() + ": cannot write container format version " +
                                std::to_string(options.format_version) + " (this build writes " +
                                std::to_string(kContainerMinVersion) + " to " +
                                std::to_string(kContainerVersion) + ")");
  uint8_t header[kHeaderSize];
  std::memcpy(header, kHeaderMagic, 8);
  put_u32(header + 8, options.format_version);
  put_u32(header + 12, 0); // flags
  impl_->file.write(header, sizeof header);
}

ContainerWriter::~ContainerWriter() = default; // AtomicFile removes the temporary unless committed

StreamRef ContainerWriter::append_stream(const std::string &role, int32_t block, const void *data,
                                         size_t len) {
  impl_->usable("append_stream");
  if (role.empty()) fail(NWC_E_INVALID_ARG, impl_->target() + ": append_stream: empty role");
  if (block < -1)
    fail(NWC_E_INVALID_ARG,
         impl_->target() + ": append_stream: block " + std::to_string(block) + " < -1");
  StreamRef ref;
  ref.role = role;
  ref.block = block;
  ref.offset = impl_->file.size();
  ref.length = len;
  ref.xxh64 = XXH64(len ? data : "", len, 0);
  try {
    if (len) impl_->file.write(data, len);
  } catch (...) {
    impl_->broken = true;
    throw;
  }
  impl_->appended.push_back({ref, -1});
  return ref;
}

void ContainerWriter::add_tensor(TensorRecord record) {
  impl_->usable("add_tensor");
  const std::string file = impl_->target();
  auto bad = [&](const std::string &where, const std::string &what) {
    fail(NWC_E_INVALID_ARG, file + ": add_tensor: " + where + ": " + what);
  };
  const size_t index = impl_->tensors.size();
  if (!record.name.empty() && impl_->names.count(record.name))
    bad(tensor_context(record, index), "duplicate tensor name");
  // Stage configs are known only at finish(): check the index there, accept any here.
  check_tensor(record, index, std::numeric_limits<size_t>::max(), impl_->file.size(), bad);

  // Every stream must be one this writer appended, not yet claimed by another tensor.
  std::vector<size_t> claimed;
  for (size_t s = 0; s < record.streams.size(); ++s) {
    const StreamRef &st = record.streams[s];
    auto it =
        std::lower_bound(impl_->appended.begin(), impl_->appended.end(), st.offset,
                         [](const Impl::Appended &a, uint64_t off) { return a.ref.offset < off; });
    bool found = false;
    for (; it != impl_->appended.end() && it->ref.offset == st.offset; ++it) {
      const StreamRef &a = it->ref;
      auto pos = static_cast<size_t>(it - impl_->appended.begin());
      if (a.length == st.length && a.xxh64 == st.xxh64 && a.role == st.role &&
          a.block == st.block && it->owner < 0 &&
          std::find(claimed.begin(), claimed.end(), pos) == claimed.end()) {
        claimed.push_back(pos);
        found = true;
        break;
      }
    }
    if (!found)
      bad(tensor_context(record, index) + ": stream " + std::to_string(s),
          "not a stream returned by append_stream (or already used by another tensor): role '" +
              st.role + "' block " + std::to_string(st.block) + " offset " +
              std::to_string(st.offset) + " length " + std::to_string(st.length));
  }
  for (size_t pos : claimed) impl_->appended[pos].owner = static_cast<int64_t>(index);
  impl_->names.emplace(record.name, index);
  impl_->tensors.push_back(std::move(record));
  impl_->positions.push_back(std::move(claimed));
}

void ContainerWriter::finish(ContainerManifest manifest) {
  impl_->usable("finish");
  const std::string file = impl_->target();
  // Validate before taking the tensors, so that a rejected finish() can be retried.
  for (size_t t = 0; t < impl_->tensors.size(); ++t) {
    const TensorRecord &tr = impl_->tensors[t];
    if (tr.storage == "pipeline" && (tr.stage_config < 0 || static_cast<size_t>(tr.stage_config) >=
                                                                manifest.stage_configs.size()))
      fail(NWC_E_INVALID_ARG, file + ": finish: " + tensor_context(tr, t) + ": stage_config " +
                                  std::to_string(tr.stage_config) + " is out of range [0, " +
                                  std::to_string(manifest.stage_configs.size()) + ")");
  }
  if (!manifest.architecture.is_object() || !manifest.extra.is_object())
    fail(NWC_E_INVALID_ARG, file + ": finish: architecture and extra must be JSON objects");
  for (const auto &c : manifest.stage_configs)
    for (const auto &s : c.stages)
      if (!s.options.is_null() && !s.options.is_object())
        fail(NWC_E_INVALID_ARG, file + ": finish: options of stage '" + s.slot + "' (" +
                                    s.plugin_id + ") must be a JSON object");

  manifest.tensors = impl_->tensors;
  const uint32_t version = impl_->options.format_version;
  const std::string text =
      version == kJsonVersion ? impl_->manifest_v1(manifest) : impl_->manifest_v2(manifest);
  if (text.size() > kContainerMaxManifest)
    fail(NWC_E_INVALID_ARG, file + ": finish: manifest of " + std::to_string(text.size()) +
                                " bytes exceeds the limit of " +
                                std::to_string(kContainerMaxManifest));

  try {
    const uint64_t manifest_offset = impl_->file.size();
    impl_->file.write(text.data(), text.size());
    uint8_t footer[kFooterSize];
    put_u64(footer + 0, manifest_offset);
    put_u64(footer + 8, text.size());
    put_u64(footer + 16, XXH64(text.data(), text.size(), 0));
    put_u32(footer + 24, version);
    put_u32(footer + 28, 0);
    std::memcpy(footer + 32, kFooterMagic, 8);
    impl_->file.write(footer, sizeof footer);
    impl_->file.commit();
  } catch (...) {
    impl_->broken = true;
    throw;
  }
  impl_->finished = true;
}

// ---- reader
// ----------------------------------------------------------------------------------------

struct ContainerReader::Impl {
  MappedFile map;
  std::string file;
  ContainerManifest manifest;
  std::unordered_map<std::string, size_t> index;
  uint32_t version = 0;
  uint64_t manifest_offset = 0;
  uint64_t manifest_length = 0;
  uint64_t body_bytes = 0;
  // Version 2: the checksum units, their checksums, each tensor's range of units [first, last),
  // and which units have been verified (each is checked once, by the first read of a stream).
  std::vector<v2::Unit> units;
  std::vector<uint64_t> sums;
  std::vector<std::pair<uint32_t, uint32_t>> tensor_units;
  std::unique_ptr<std::atomic<bool>[]> verified;

  explicit Impl(const std::filesystem::path &p) : map(p), file(p.string()) {}

  [[noreturn]] void corrupt(const std::string &what) const {
    fail(NWC_E_CORRUPT_STREAM, file + ": " + what);
  }
  [[noreturn]] void truncated(const std::string &what) const {
    fail(NWC_E_CORRUPT_STREAM, file + ": truncated or not an nwc container: " + what);
  }
  // A stream's bytes in the map, bounds and checksum (stream.xxh64) checked; `what` names it.
  std::span<const uint8_t> view(const StreamRef &stream, const std::string &what) const;
  // Version 2: a tensor stream of the manifest, its unit verified.
  std::span<const uint8_t> view_v2(const TensorRecord &tensor, const StreamRef &stream) const;
  const v2::Unit *unit_for(size_t tensor, int32_t block) const;

  void open();
  void open_v1(const char *bytes, uint64_t moff, uint64_t mlen);
  void open_v2(const uint8_t *bytes, uint64_t moff, uint64_t mlen);
};

void ContainerReader::Impl::open() {
  const uint8_t *d = map.data();
  const uint64_t size = map.size();
  if (size < kHeaderSize + kFooterSize)
    truncated("file has " + std::to_string(size) + " bytes, a container has at least " +
              std::to_string(kHeaderSize + kFooterSize));
  if (std::memcmp(d, kHeaderMagic, 8) != 0)
    corrupt(
        "not an nwc container: bad magic at offset 0 (expected 89 4E 57 43 0D 0A 1A 0A, found " +
        hex_bytes(d, 8) + ")");
  version = get_u32(d + 8);
  if (version > kContainerVersion)
    fail(NWC_E_VERSION, file + ": container format version " + std::to_string(version) +
                            " is newer than this build supports (" +
                            std::to_string(kContainerVersion) + ")");
  if (version < kContainerMinVersion)
    corrupt("header at offset 8: invalid container format version " + std::to_string(version) +
            " (expected " + std::to_string(kContainerMinVersion) + " to " +
            std::to_string(kContainerVersion) + ")");
  const uint32_t flags = get_u32(d + 12);
  if (flags != 0)
    corrupt("header at offset 12: unknown flag bits 0x" + hex64(flags).substr(8) +
            " (this build knows none)");

  const uint64_t foot = size - kFooterSize;
  const uint8_t *f = d + foot;
  if (std::memcmp(f + 32, kFooterMagic, 8) != 0)
    truncated("footer magic 'NWCFOOT1' not found at offset " + std::to_string(foot + 32) +
              " (file size " + std::to_string(size) + ")");
  const uint32_t footer_version = get_u32(f + 24);
  if (footer_version != version)
    corrupt("footer at offset " + std::to_string(foot + 24) + ": format version " +
            std::to_string(footer_version) + " differs from the header's " +
            std::to_string(version));
  if (get_u32(f + 28) != 0)
    corrupt("footer at offset " + std::to_string(foot + 28) + ": reserved field is not zero");
  const uint64_t moff = get_u64(f + 0);
  const uint64_t mlen = get_u64(f + 8);
  const uint64_t msum = get_u64(f + 16);
  if (moff < kHeaderSize || moff > foot || mlen != foot - moff)
    corrupt("footer at offset " + std::to_string(foot) + ": manifest [" + std::to_string(moff) +
            ", +" + std::to_string(mlen) + ") does not end at the footer (offset " +
            std::to_string(foot) + ")");
  if (mlen > kContainerMaxManifest)
    corrupt("manifest of " + std::to_string(mlen) + " bytes at offset " + std::to_string(moff) +
            " exceeds the limit of " + std::to_string(kContainerMaxManifest) + " bytes");
  const uint64_t actual = XXH64(d + moff, mlen, 0);
  if (actual != msum)
    corrupt("manifest at offset " + std::to_string(moff) + " (" + std::to_string(mlen) +
            " bytes): checksum mismatch (footer says " + hex64(msum) + ", data hashes to " +
            hex64(actual) + ")");
  manifest_offset = moff;
  manifest_length = mlen;
  if (version == kJsonVersion)
    open_v1(reinterpret_cast<const char *>(d + moff), moff, mlen);
  else
    open_v2(d + moff, moff, mlen);
}

void ContainerReader::Impl::open_v1(const char *mbytes, uint64_t moff, uint64_t mlen) {
  body_bytes = mlen;
  nlohmann::json j;
  try {
    uint64_t values = 0;
    j = nlohmann::json::parse(
        mbytes, mbytes + mlen,
        [this, &values](int depth, nlohmann::json::parse_event_t event, nlohmann::json &) {
          if (depth > kMaxJsonDepth)
            corrupt("manifest: JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                    " levels");
          if (event != nlohmann::json::parse_event_t::key && ++values > kMaxJsonValues)
            corrupt("manifest: more than " + std::to_string(kMaxJsonValues) + " JSON values");
          return true;
        });
  } catch (const nlohmann::json::exception &e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    corrupt("manifest at offset " + std::to_string(moff) + ": invalid JSON: " + msg);
  }

  SchemaReader r(file);
  manifest = manifest_from_json(r, j);
  auto bad = [&r](const std::string &where, const std::string &what) { r.bad(where, what); };
  for (size_t t = 0; t < manifest.tensors.size(); ++t)
    check_tensor(manifest.tensors[t], t, manifest.stage_configs.size(), moff, bad);
  check_unique_names(manifest.tensors, index, bad);
  check_no_overlap(manifest.tensors, bad);
}

void ContainerReader::Impl::open_v2(const uint8_t *mbytes, uint64_t moff, uint64_t mlen) {
  const std::string body = v2::load_body(mbytes, static_cast<size_t>(mlen), moff, file);
  body_bytes = body.size();
  v2::Body b =
      v2::decode_body(reinterpret_cast<const uint8_t *>(body.data()), body.size(), moff, file);
  manifest = std::move(b.manifest);
  SchemaReader r(file);
  auto bad = [&r](const std::string &where, const std::string &what) { r.bad(where, what); };
  for (size_t t = 0; t < manifest.tensors.size(); ++t)
    check_tensor(manifest.tensors[t], t, manifest.stage_configs.size(), moff, bad);
  check_unique_names(manifest.tensors, index, bad);
  check_no_overlap(manifest.tensors, bad); // holds by construction; kept as a defence
  units = std::move(b.units);
  sums = std::move(b.sums);
  tensor_units.assign(manifest.tensors.size(), {0, 0});
  for (size_t u = 0; u < units.size(); ++u) {
    auto &range = tensor_units[units[u].tensor];
    if (range.first == range.second) range.first = static_cast<uint32_t>(u);
    range.second = static_cast<uint32_t>(u + 1);
  }
  verified = std::make_unique<std::atomic<bool>[]>(units.size());
}

const v2::Unit *ContainerReader::Impl::unit_for(size_t tensor, int32_t block) const {
  const auto [first, last] = tensor_units[tensor];
  if (first == last) return nullptr;
  const auto *begin = units.data() + first, *end = units.data() + last;
  const auto *it =
      std::lower_bound(begin, end, block, [](const v2::Unit &u, int32_t b) { return u.block < b; });
  return it != end && it->block == block ? it : nullptr;
}

std::span<const uint8_t> ContainerReader::Impl::view_v2(const TensorRecord &tensor,
                                                        const StreamRef &stream) const {
  const std::string where = file + ": tensor " + tensor.name + ": stream " + stream.role +
                            " block " + std::to_string(stream.block) + " at offset " +
                            std::to_string(stream.offset);
  auto it = index.find(tensor.name);
  if (it == index.end())
    fail(NWC_E_INVALID_ARG, where + ": the container has no tensor of that name");
  const TensorRecord &mt = manifest.tensors[it->second];
  const v2::Unit *u = unit_for(it->second, stream.block);
  bool found = false;
  if (u) {
    auto s = std::lower_bound(u->streams.begin(), u->streams.end(), stream.offset,
                              [&](uint32_t i, uint64_t off) { return mt.streams[i].offset < off; });
    for (; !found && s != u->streams.end() && mt.streams[*s].offset == stream.offset; ++s) {
      const StreamRef &m = mt.streams[*s];
      found = m.length == stream.length && m.block == stream.block && m.role == stream.role;
    }
  }
  if (!found)
    fail(NWC_E_INVALID_ARG, where + " (length " + std::to_string(stream.length) +
                                "): not a stream of this tensor in the manifest");
  const auto ui = static_cast<size_t>(u - units.data());
  if (!verified[ui].load(std::memory_order_acquire)) {
    std::vector<uint64_t> h(u->streams.size());
    for (size_t k = 0; k < h.size(); ++k) {
      const StreamRef &s = mt.streams[u->streams[k]];
      h[k] = XXH64(map.data() + s.offset, static_cast<size_t>(s.length), 0);
    }
    const uint64_t actual = v2::unit_checksum(h.data(), h.size());
    if (actual != sums[ui]) {
      const StreamRef &a = mt.streams[u->streams.front()], &z = mt.streams[u->streams.back()];
      const std::string unit = u->block == -1 ? "the tensor-level streams"
                                              : "the streams of block " + std::to_string(u->block);
      fail(NWC_E_CORRUPT_STREAM,
           where + ": checksum mismatch (checksum unit " + std::to_string(ui) + ", " + unit + ": " +
               std::to_string(h.size()) + " streams in bytes [" + std::to_string(a.offset) + ", " +
               std::to_string(z.offset + z.length) + "); manifest says " + hex64(sums[ui]) +
               ", data hashes to " + hex64(actual) + ")");
    }
    verified[ui].store(true, std::memory_order_release);
  }
  return {map.data() + stream.offset, static_cast<size_t>(stream.length)};
}

ContainerReader::ContainerReader(const std::filesystem::path &path) {
  // Short files get the "truncated" message without depending on how empty files map.
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size < kHeaderSize + kFooterSize)
    fail(NWC_E_CORRUPT_STREAM, path.string() + ": truncated or not an nwc container: file has " +
                                   std::to_string(size) + " bytes, a container has at least " +
                                   std::to_string(kHeaderSize + kFooterSize));
  impl_ = std::make_unique<Impl>(path);
  impl_->open();
}

ContainerReader::~ContainerReader() = default;

const ContainerManifest &ContainerReader::manifest() const {
  return impl_->manifest;
}

const TensorRecord *ContainerReader::find(const std::string &name) const {
  auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->manifest.tensors[it->second];
}

std::vector<uint8_t> ContainerReader::read_stream(const TensorRecord &tensor,
                                                  const StreamRef &stream) const {
  const std::span<const uint8_t> v = stream_view(tensor, stream);
  return std::vector<uint8_t>(v.begin(), v.end());
}

std::span<const uint8_t> ContainerReader::stream_view(const TensorRecord &tensor,
                                                      const StreamRef &stream) const {
  if (impl_->version != kJsonVersion) return impl_->view_v2(tensor, stream);
  return impl_->view(stream, "tensor " + tensor.name + ": stream " + stream.role + " block " +
                                 std::to_string(stream.block));
}

std::vector<uint8_t> ContainerReader::read_stream_at(const StreamRef &stream,
                                                     const std::string &what) const {
  const std::span<const uint8_t> v = impl_->view(stream, what);
  return std::vector<uint8_t>(v.begin(), v.end());
}

std::span<const uint8_t> ContainerReader::Impl::view(const StreamRef &stream,
                                                     const std::string &what) const {
  const std::string where = file + ": " + what + " at offset " + std::to_string(stream.offset);
  // The manifest's streams were validated; re-check in case the caller built its own StreamRef.
  const uint64_t end = manifest_offset;
  if (stream.offset < kHeaderSize || stream.offset > end || stream.length > end - stream.offset)
    fail(NWC_E_CORRUPT_STREAM, where + ": length " + std::to_string(stream.length) +
                                   " lies outside the stream area [16, " + std::to_string(end) +
                                   ")");
  const uint8_t *p = map.data() + stream.offset;
  const auto len = static_cast<size_t>(stream.length);
  const uint64_t actual = XXH64(p, len, 0);
  if (actual != stream.xxh64)
    fail(NWC_E_CORRUPT_STREAM, where + ": checksum mismatch (manifest says " + hex64(stream.xxh64) +
                                   ", data hashes to " + hex64(actual) + ")");
  return {p, len};
}

uint64_t ContainerReader::file_size() const {
  return impl_->map.size();
}

const std::filesystem::path &ContainerReader::path() const {
  return impl_->map.path();
}

uint32_t ContainerReader::format_version() const {
  return impl_->version;
}

ContainerLayout ContainerReader::layout() const {
  const Impl &i = *impl_;
  ContainerLayout l;
  l.format_version = i.version;
  l.file_size = i.map.size();
  l.header_bytes = kHeaderSize;
  l.footer_bytes = kFooterSize;
  l.manifest_offset = i.manifest_offset;
  l.manifest_bytes = i.manifest_length;
  l.manifest_body_bytes = i.body_bytes;
  uint64_t streams = 0, count = 0;
  for (const auto &t : i.manifest.tensors) {
    streams += t.stream_bytes();
    count += t.streams.size();
  }
  l.tensor_stream_bytes = streams;
  l.unreferenced_bytes = i.manifest_offset - kHeaderSize - streams; // streams do not overlap
  l.checksums = i.version == kJsonVersion ? count : i.units.size();
  return l;
}

// ---- conversion and test aids -------------------------------------------------------------------

void container_rewrite(const ContainerReader &in, const std::filesystem::path &out,
                       const ContainerWriteOptions &options) {
  const ContainerReader::Impl &src = *in.impl_;
  const ContainerManifest &m = src.manifest;
  struct Item {
    uint64_t offset, length;
    size_t tensor, stream;
  };
  std::vector<Item> items;
  for (size_t t = 0; t < m.tensors.size(); ++t)
    for (size_t s = 0; s < m.tensors[t].streams.size(); ++s)
      items.push_back({m.tensors[t].streams[s].offset, m.tensors[t].streams[s].length, t, s});
  std::stable_sort(items.begin(), items.end(), [](const Item &a, const Item &b) {
    return a.offset != b.offset ? a.offset < b.offset : a.length < b.length;
  });

  ContainerWriter w(out, options);
  std::vector<TensorRecord> records = m.tensors;
  uint64_t pos = kHeaderSize;
  auto copy_gap = [&](uint64_t end) {
    if (end > pos) w.append_stream("unreferenced", -1, src.map.data() + pos, end - pos);
    pos = std::max(pos, end);
  };
  for (const Item &it : items) {
    copy_gap(it.offset);
    const TensorRecord &t = m.tensors[it.tensor];
    const std::span<const uint8_t> bytes = in.stream_view(t, t.streams[it.stream]);
    const StreamRef &s = t.streams[it.stream];
    records[it.tensor].streams[it.stream] =
        w.append_stream(s.role, s.block, bytes.data(), bytes.size());
    pos += it.length; // a zero-length stream inside another (version 1) moves to its end
  }
  copy_gap(src.manifest_offset);
  for (auto &r : records) w.add_tensor(std::move(r));
  ContainerManifest copy = m;
  copy.tensors.clear();
  w.finish(std::move(copy));
}

bool container_fix_checksums(std::vector<uint8_t> &file) {
  if (file.size() < kHeaderSize + kFooterSize || get_u32(file.data() + 8) != 2) return false;
  const uint64_t foot = file.size() - kFooterSize;
  uint8_t footer[kFooterSize];
  std::memcpy(footer, file.data() + foot, kFooterSize);
  if (std::memcmp(footer + 32, kFooterMagic, 8) != 0) return false;
  const uint64_t moff = get_u64(footer), mlen = get_u64(footer + 8);
  if (moff < kHeaderSize || moff > foot || mlen != foot - moff || mlen > kContainerMaxManifest)
    return false;
  std::string stored(reinterpret_cast<const char *>(file.data() + moff), mlen);
  try {
    std::string body = v2::load_body(file.data() + moff, mlen, moff, "image");
    v2::Body b =
        v2::decode_body(reinterpret_cast<const uint8_t *>(body.data()), body.size(), moff, "image");
    std::vector<uint64_t> h;
    for (size_t u = 0; u < b.units.size(); ++u) {
      const TensorRecord &t = b.manifest.tensors[b.units[u].tensor];
      h.clear();
      for (uint32_t i : b.units[u].streams)
        h.push_back(
            XXH64(file.data() + t.streams[i].offset, static_cast<size_t>(t.streams[i].length), 0));
      uint8_t *p = reinterpret_cast<uint8_t *>(body.data()) + b.sums_offset + 8 * u;
      put_u64(p, v2::unit_checksum(h.data(), h.size()));
    }
    stored = v2::store_body(body, !stored.empty() && stored[0] == static_cast<char>(v2::kZstd));
  } catch (const Error &) {
    // The manifest does not decode: only the footer's checksum is made to match.
  }
  file.resize(static_cast<size_t>(moff));
  file.insert(file.end(), stored.begin(), stored.end());
  put_u64(footer + 8, stored.size());
  put_u64(footer + 16, XXH64(stored.data(), stored.size(), 0));
  file.insert(file.end(), footer, footer + kFooterSize);
  return true;
}

} // namespace nwc
