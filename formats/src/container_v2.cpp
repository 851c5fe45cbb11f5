// The binary manifest of container version 2. Byte-level spec: docs/container.md §5.
#include "container_v2.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <limits>
#include <unordered_map>
#include <utility>
#include <xxhash.h>
#include <zstd.h>

namespace nwc::v2 {

namespace {

constexpr uint64_t kMaxBody = kContainerMaxManifestBody;
constexpr size_t kMaxNdim = 8;
constexpr int kZstdLevel = 19;
constexpr uint32_t kZstdMagic = 0xFD2FB528u;

const char *const kStorageNames[] = {"pipeline", "raw", "zstd"};

// ---- encoding
// ------------------------------------------------------------------------------------

void put_varint(std::string &out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_u64(std::string &out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

// Strings in order of first reference; ref() returns the index.
class StringTable {
public:
  uint64_t ref(const std::string &s) {
    auto [it, fresh] = index_.emplace(s, strings_.size());
    if (fresh) strings_.push_back(&it->first);
    return it->second;
  }
  void write(std::string &out) const {
    put_varint(out, strings_.size());
    for (const std::string *s : strings_) {
      put_varint(out, s->size());
      out += *s;
    }
  }

private:
  std::unordered_map<std::string, uint64_t> index_;
  std::vector<const std::string *> strings_;
};

std::string json_text(const nlohmann::json &j) {
  return j.is_null() ? std::string("{}") : j.dump();
}

// ---- decoding
// ------------------------------------------------------------------------------------

// Reads the body front to back; every failure names the place and the body offset.
class Cursor {
public:
  Cursor(const uint8_t *data, size_t size, const std::string &file)
      : p_(data), n_(size), file_(file) {}

  [[noreturn]] void bad(const std::string &where, const std::string &what) const {
    fail(NWC_E_CORRUPT_STREAM, file_ + ": manifest: " + where + ": " + what + " (manifest byte " +
                                   std::to_string(pos_) + ")");
  }

  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }

  uint8_t byte(const std::string &where, const char *what) {
    if (pos_ >= n_) bad(where, std::string("truncated: ") + what + " expected");
    return p_[pos_++];
  }

  // LEB128, least significant group first, at most 10 bytes, no redundant trailing zero group.
  uint64_t varint(const std::string &where, const char *what) {
    const size_t start = pos_;
    uint64_t v = 0;
    for (int i = 0;; ++i) {
      if (pos_ >= n_) {
        pos_ = start;
        bad(where, std::string("truncated varint (") + what + ")");
      }
      const uint8_t b = p_[pos_++];
      if (i == 9 && b > 1) {
        pos_ = start;
        bad(where, std::string("varint (") + what + ") exceeds 64 bits");
      }
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) {
        if (b == 0 && i > 0) {
          pos_ = start;
          bad(where, std::string("overlong varint (") + what + ")");
        }
        return v;
      }
    }
  }

  // A count of items that each take at least `min_bytes` of what is left.
  uint64_t count(const std::string &where, const char *what, size_t min_bytes) {
    const size_t start = pos_;
    const uint64_t v = varint(where, what);
    const size_t rest = left();
    if (v > rest / min_bytes) {
      pos_ = start;
      bad(where, std::string(what) + " " + std::to_string(v) + " cannot fit in the " +
                     std::to_string(rest) + " bytes left");
    }
    return v;
  }

  uint64_t bounded(const std::string &where, const char *what, uint64_t hi) {
    const size_t start = pos_;
    const uint64_t v = varint(where, what);
    if (v > hi) {
      pos_ = start;
      bad(where, std::string(what) + " " + std::to_string(v) + " is out of range [0, " +
                     std::to_string(hi) + "]");
    }
    return v;
  }

  const uint8_t *take(size_t n, const std::string &where, const char *what) {
    if (n > left())
      bad(where, std::string("truncated: ") + what + " of " + std::to_string(n) + " bytes, " +
                     std::to_string(left()) + " left");
    const uint8_t *p = p_ + pos_;
    pos_ += n;
    return p;
  }

private:
  const uint8_t *p_;
  size_t n_;
  size_t pos_ = 0;
  const std::string &file_;
};

// Everything decode_body() needs while it walks the body.
struct Decoder {
  Cursor c;
  std::vector<std::string> strings;
  uint64_t budget = 0; // bytes of strings that may still be materialized
  uint64_t json_values = 0;

  const std::string &ref(const std::string &where, const char *what) {
    const uint64_t i = c.varint(where, what);
    if (i >= strings.size())
      c.bad(where, std::string(what) + ": string " + std::to_string(i) +
                       " is out of range (the string table has " + std::to_string(strings.size()) +
                       ")");
    charge(strings[i].size(), where);
    return strings[i];
  }

  void charge(uint64_t n, const std::string &where) {
    if (n > budget)
      c.bad(where, "strings referenced from the string table expand beyond the limit for a "
                   "manifest of this size");
    budget -= n;
  }

  nlohmann::json json_object(const std::string &where, const char *what) {
    const std::string &text = ref(where, what);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(
          text.begin(), text.end(),
          [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json &) {
            if (depth > kMaxJsonDepth)
              c.bad(where, std::string(what) + ": JSON nested deeper than " +
                               std::to_string(kMaxJsonDepth) + " levels");
            if (event != nlohmann::json::parse_event_t::key && ++json_values > kMaxJsonValues)
              c.bad(where, "more than " + std::to_string(kMaxJsonValues) + " JSON values");
            return true;
          });
    } catch (const nlohmann::json::exception &e) {
      std::string msg = e.what();
      std::replace(msg.begin(), msg.end(), '\n', ' ');
      c.bad(where, std::string(what) + ": invalid JSON: " + msg);
    }
    if (!j.is_object()) c.bad(where, std::string(what) + ": expected a JSON object");
    return j;
  }
};

std::string tensor_where(const std::vector<TensorRecord> &tensors, uint64_t t) {
  const std::string &name = tensors[static_cast<size_t>(t)].name;
  return name.empty() ? "tensor #" + std::to_string(t) : "tensor '" + name + "'";
}

} // namespace

bool valid_utf8(std::string_view s) {
  const auto *p = reinterpret_cast<const unsigned char *>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

std::vector<Unit> units_of(const std::vector<TensorRecord> &tensors) {
  std::vector<Unit> units;
  std::vector<std::vector<uint32_t>> per_block;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorRecord &tr = tensors[t];
    if (tr.streams.empty()) continue;
    per_block.assign(tr.blocks.size() + 1, {});
    for (size_t s = 0; s < tr.streams.size(); ++s) {
      const int32_t b = tr.streams[s].block; // validated: -1 <= b < blocks
      per_block[static_cast<size_t>(b + 1)].push_back(static_cast<uint32_t>(s));
    }
    for (size_t k = 0; k < per_block.size(); ++k)
      if (!per_block[k].empty())
        units.push_back(
            {static_cast<uint32_t>(t), static_cast<int32_t>(k) - 1, std::move(per_block[k])});
  }
  return units;
}

uint64_t unit_checksum(const uint64_t *stream_sums, size_t n) {
  std::vector<uint8_t> le(8 * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < 8; ++k) le[8 * i + k] = static_cast<uint8_t>(stream_sums[i] >> (8 * k));
  return XXH64(le.data(), le.size(), 0);
}

std::string encode_body(const ContainerManifest &m, const std::vector<Run> &runs,
                        const std::vector<uint64_t> &sums) {
  StringTable strings;
  std::string out;
  put_varint(out, strings.ref(m.pipeline_name));
  put_varint(out, strings.ref(m.pipeline_text));
  put_varint(out, strings.ref(m.source_model));
  put_varint(out, strings.ref(m.source_format));
  put_varint(out, strings.ref(json_text(m.architecture)));
  put_varint(out, strings.ref(json_text(m.extra)));

  put_varint(out, m.stage_configs.size());
  for (const auto &c : m.stage_configs) {
    put_varint(out, c.stages.size());
    for (const auto &s : c.stages) {
      put_varint(out, strings.ref(s.slot));
      put_varint(out, strings.ref(s.plugin_id));
      put_varint(out, strings.ref(s.plugin_version));
      put_varint(out, s.stream_version);
      put_varint(out, strings.ref(json_text(s.options)));
    }
  }

  put_varint(out, m.tensors.size());
  std::vector<std::string> parts;
  for (const auto &t : m.tensors) {
    parts.clear();
    size_t from = 0;
    for (;;) {
      const size_t dot = t.name.find('.', from);
      parts.push_back(t.name.substr(from, dot == std::string::npos ? dot : dot - from));
      if (dot == std::string::npos) break;
      from = dot + 1;
    }
    put_varint(out, parts.size());
    for (const auto &p : parts) put_varint(out, strings.ref(p));
    out.push_back(static_cast<char>(static_cast<uint32_t>(t.dtype)));
    uint8_t storage = 0;
    while (storage < 3 && t.storage != kStorageNames[storage]) ++storage;
    out.push_back(static_cast<char>(storage)); // validated by check_tensor: < 3
    put_varint(out, t.shape.size());
    for (int64_t d : t.shape) put_varint(out, static_cast<uint64_t>(d));
    put_varint(out, static_cast<uint64_t>(static_cast<int64_t>(t.stage_config) + 1));
    put_varint(out, t.blocks.size());
    for (const auto &b : t.blocks) {
      put_varint(out, static_cast<uint64_t>(b.col_end - b.col_begin));
      put_varint(out, static_cast<uint64_t>(b.symbol_count));
    }
  }

  put_varint(out, runs.size());
  for (const auto &r : runs) {
    put_varint(out, r.owner);
    if (r.owner == 0) {
      put_varint(out, r.gap);
      continue;
    }
    const TensorRecord &t = m.tensors[static_cast<size_t>(r.owner - 1)];
    put_varint(out, r.streams.size());
    for (uint32_t i : r.streams) {
      const StreamRef &s = t.streams[i];
      put_varint(out, strings.ref(s.role));
      put_varint(out, static_cast<uint64_t>(static_cast<int64_t>(s.block) + 1));
      put_varint(out, s.length);
    }
  }
  for (uint64_t h : sums) put_u64(out, h);

  std::string body;
  strings.write(body);
  body += out;
  return body;
}

Body decode_body(const uint8_t *data, size_t size, uint64_t area_end, const std::string &file) {
  Decoder d{Cursor(data, size, file), {}, 0, 0};
  d.budget = std::min<uint64_t>(
      kStringBudgetMax, kStringBudgetBase + kStringBudgetFactor * static_cast<uint64_t>(size));
  Cursor &c = d.c;
  Body body;
  ContainerManifest &m = body.manifest;

  const uint64_t nstrings = c.count("string table", "string count", 1);
  d.strings.reserve(static_cast<size_t>(nstrings));
  for (uint64_t i = 0; i < nstrings; ++i) {
    const std::string where = "string " + std::to_string(i);
    const uint64_t len = c.count(where, "length", 1);
    const auto *p = c.take(static_cast<size_t>(len), where, "string");
    std::string s(reinterpret_cast<const char *>(p), static_cast<size_t>(len));
    if (!valid_utf8(s)) c.bad(where, "not valid UTF-8");
    d.strings.push_back(std::move(s));
  }

  m.pipeline_name = d.ref("top level", "pipeline name");
  m.pipeline_text = d.ref("top level", "pipeline text");
  m.source_model = d.ref("top level", "source model");
  m.source_format = d.ref("top level", "source format");
  m.architecture = d.json_object("top level", "architecture");
  m.extra = d.json_object("top level", "extra");

  const uint64_t nconfigs = c.count("stage configs", "stage config count", 1);
  m.stage_configs.resize(static_cast<size_t>(nconfigs));
  for (uint64_t k = 0; k < nconfigs; ++k) {
    const std::string where = "stage_config " + std::to_string(k);
    const uint64_t nstages = c.count(where, "stage count", 5);
    auto &stages = m.stage_configs[static_cast<size_t>(k)].stages;
    stages.resize(static_cast<size_t>(nstages));
    for (uint64_t s = 0; s < nstages; ++s) {
      const std::string sw = where + ": stage " + std::to_string(s);
      StageRecord &st = stages[static_cast<size_t>(s)];
      st.slot = d.ref(sw, "slot");
      st.plugin_id = d.ref(sw, "plugin");
      st.plugin_version = d.ref(sw, "version");
      st.stream_version = static_cast<uint32_t>(
          c.bounded(sw, "stream_version", std::numeric_limits<uint32_t>::max()));
      st.options = d.json_object(sw, "options");
    }
  }

  // A tensor takes at least 7 bytes: name (2), dtype, storage, ndim, stage config, block count.
  const uint64_t ntensors = c.count("tensors", "tensor count", 7);
  m.tensors.resize(static_cast<size_t>(ntensors));
  for (uint64_t t = 0; t < ntensors; ++t) {
    TensorRecord &tr = m.tensors[static_cast<size_t>(t)];
    std::string where = "tensor #" + std::to_string(t);
    const uint64_t nparts = c.count(where, "name component count", 1);
    if (nparts == 0) c.bad(where, "name has no components");
    for (uint64_t i = 0; i < nparts; ++i) {
      if (i) {
        d.charge(1, where);
        tr.name += '.';
      }
      tr.name += d.ref(where, "name component");
    }
    where = tensor_where(m.tensors, t);
    const uint8_t code = c.byte(where, "dtype");
    if (!dtype_from_code(code, tr.dtype))
      c.bad(where, "unknown dtype code " + std::to_string(code) +
                       " (expected 1 F32, 2 F16, 3 BF16, 6 I8, 7 U8, 8 I32 or 9 I64)");
    const uint8_t storage = c.byte(where, "storage");
    if (storage > 2)
      c.bad(where, "unknown storage code " + std::to_string(storage) +
                       " (expected 0 pipeline, 1 raw, 2 zstd)");
    tr.storage = kStorageNames[storage];
    const uint64_t ndim = c.varint(where, "dimension count");
    if (ndim > kMaxNdim)
      c.bad(where, "shape has " + std::to_string(ndim) + " dimensions (at most 8)");
    for (uint64_t i = 0; i < ndim; ++i)
      tr.shape.push_back(static_cast<int64_t>(c.bounded(
          where, "dimension", static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))));
    tr.stage_config =
        static_cast<int32_t>(static_cast<int64_t>(c.bounded(where, "stage config + 1", nconfigs))) -
        1;
    const uint64_t nblocks = c.count(where, "block count", 2);
    tr.blocks.resize(static_cast<size_t>(nblocks));
    int64_t next = 0;
    for (uint64_t b = 0; b < nblocks; ++b) {
      const std::string bw = where + ": block " + std::to_string(b);
      const uint64_t width =
          c.bounded(bw, "width", static_cast<uint64_t>(std::numeric_limits<int64_t>::max() - next));
      BlockRecord &br = tr.blocks[static_cast<size_t>(b)];
      br.col_begin = next;
      br.col_end = next + static_cast<int64_t>(width);
      br.symbol_count = static_cast<int64_t>(c.bounded(
          bw, "symbol_count", static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
      next = br.col_end;
    }
  }

  // The stream table: runs in file order from offset 16, covering the stream area exactly.
  const uint64_t nruns = c.count("stream table", "run count", 2);
  body.runs.resize(static_cast<size_t>(nruns));
  uint64_t offset = kContainerHeaderSize;
  for (uint64_t r = 0; r < nruns; ++r) {
    Run &run = body.runs[static_cast<size_t>(r)];
    const std::string rw = "stream table: run " + std::to_string(r);
    run.owner = c.bounded(rw, "owner", ntensors);
    if (run.owner == 0) {
      run.gap = c.varint(rw, "unreferenced byte count");
      if (run.gap == 0) c.bad(rw, "unreferenced byte count 0");
      if (run.gap > area_end - offset)
        c.bad(rw, "unreferenced bytes [" + std::to_string(offset) + ", +" +
                      std::to_string(run.gap) + ") run past the stream area, which ends at " +
                      std::to_string(area_end));
      offset += run.gap;
      continue;
    }
    TensorRecord &tr = m.tensors[static_cast<size_t>(run.owner - 1)];
    const std::string tw = tensor_where(m.tensors, run.owner - 1);
    const uint64_t n = c.count(rw + " (" + tw + ")", "stream count", 3);
    if (n == 0) c.bad(rw + " (" + tw + ")", "stream count 0");
    for (uint64_t i = 0; i < n; ++i) {
      const std::string sw = tw + ": stream " + std::to_string(tr.streams.size());
      StreamRef s;
      s.role = d.ref(sw, "role");
      if (s.role.empty()) c.bad(sw, "empty role");
      const uint64_t block = c.bounded(sw, "block + 1", tr.blocks.size());
      s.block = static_cast<int32_t>(static_cast<int64_t>(block) - 1);
      s.offset = offset;
      s.length = c.varint(sw, "length");
      if (s.length > area_end - offset)
        c.bad(sw, "bytes [" + std::to_string(offset) + ", " + std::to_string(offset) + "+" +
                      std::to_string(s.length) + ") run past the stream area, which ends at " +
                      std::to_string(area_end));
      offset += s.length;
      run.streams.push_back(static_cast<uint32_t>(tr.streams.size()));
      tr.streams.push_back(std::move(s));
    }
  }
  if (offset != area_end)
    c.bad("stream table", "describes the stream area up to offset " + std::to_string(offset) +
                              ", but it ends at " + std::to_string(area_end));

  body.units = units_of(m.tensors);
  body.sums_offset = c.pos();
  if (c.left() != 8 * body.units.size())
    c.bad("checksum table", std::to_string(body.units.size()) + " checksum units need " +
                                std::to_string(8 * body.units.size()) + " bytes, " +
                                std::to_string(c.left()) + " are left");
  body.sums.resize(body.units.size());
  for (auto &h : body.sums) {
    const uint8_t *p = c.take(8, "checksum table", "checksum");
    h = 0;
    for (int k = 7; k >= 0; --k) h = (h << 8) | p[k];
  }
  return body;
}

std::string store_body(const std::string &body, bool compress) {
  if (compress && !body.empty()) {
    const size_t cap = ZSTD_compressBound(body.size());
    std::string z(1 + cap, '\0');
    z[0] = static_cast<char>(kZstd);
    const size_t n = ZSTD_compress(z.data() + 1, cap, body.data(), body.size(), kZstdLevel);
    if (!ZSTD_isError(n) && n < body.size() && body.size() <= kMaxExpansion * (n + 1)) {
      z.resize(1 + n);
      return z;
    }
  }
  std::string s(1, static_cast<char>(kStored));
  s += body;
  return s;
}

std::string load_body(const uint8_t *data, size_t size, uint64_t offset, const std::string &file) {
  const std::string where = file + ": manifest at offset " + std::to_string(offset) + ": ";
  auto bad = [&](const std::string &what) { fail(NWC_E_CORRUPT_STREAM, where + what); };
  if (size == 0) bad("empty (a version 2 manifest starts with its encoding byte)");
  const uint8_t encoding = data[0];
  const uint8_t *p = data + 1;
  const size_t n = size - 1;
  if (encoding == kStored) {
    if (n > kMaxBody)
      bad("body of " + std::to_string(n) + " bytes exceeds the limit of " +
          std::to_string(kMaxBody));
    return std::string(reinterpret_cast<const char *>(p), n);
  }
  if (encoding != kZstd)
    bad("unknown encoding " + std::to_string(encoding) + " (expected 0 stored or 1 zstd)");
  if (n < 4 ||
      (p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24)) != kZstdMagic)
    bad("encoding 1 (zstd) but no zstd frame follows");
  const unsigned long long declared = ZSTD_getFrameContentSize(p, n);
  if (declared == ZSTD_CONTENTSIZE_ERROR) bad("invalid zstd frame header");
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN)
    bad("the zstd frame does not declare its decompressed size");
  const uint64_t limit = std::min<uint64_t>(kMaxBody, kMaxExpansion * static_cast<uint64_t>(size));
  if (declared > limit)
    bad("zstd frame declares " + std::to_string(declared) + " bytes, more than the limit of " +
        std::to_string(limit) + " for a manifest of " + std::to_string(size) + " bytes");
  const size_t frame = ZSTD_findFrameCompressedSize(p, n);
  if (ZSTD_isError(frame)) bad(std::string("truncated zstd frame: ") + ZSTD_getErrorName(frame));
  if (frame != n)
    bad(std::to_string(n - frame) + " bytes follow the zstd frame (one frame is expected)");
  std::string body(static_cast<size_t>(declared), '\0');
  const size_t got = ZSTD_decompress(body.data(), body.size(), p, n);
  if (ZSTD_isError(got)) bad(std::string("zstd frame does not decode: ") + ZSTD_getErrorName(got));
  if (got != declared)
    bad("zstd frame decodes to " + std::to_string(got) + " bytes, its header declares " +
        std::to_string(declared));
  return body;
}

} // namespace nwc::v2
