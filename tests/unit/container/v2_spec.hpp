// A second, independent implementation of the version 2 manifest body (docs/container.md §5),
// written from the spec for the tests: it parses what the writer wrote into editable fields and
// encodes them back byte for byte, so tests can check the layout and craft manifests that lie.
#pragma once

#include "nwc/formats/container.hpp"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>
#include <xxhash.h>
#include <zstd.h>

namespace v2spec {

struct Stage {
  uint64_t slot = 0, plugin = 0, version = 0, stream_version = 0, options = 0;
};
struct Block {
  uint64_t width = 0, symbols = 0;
};
struct Tensor {
  std::vector<uint64_t> name; // string indices of the components
  uint8_t dtype = 1, storage = 0;
  std::vector<uint64_t> shape;
  uint64_t config = 0; // stage config + 1
  std::vector<Block> blocks;
};
struct Stream {
  uint64_t role = 0, block = 0, length = 0; // block + 1
};
struct Run {
  uint64_t owner = 0, gap = 0;
  std::vector<Stream> streams;
};
struct Body {
  std::vector<std::string> strings;
  uint64_t pipeline_name = 0, pipeline_text = 0, source_model = 0, source_format = 0,
           architecture = 0, extra = 0;
  std::vector<std::vector<Stage>> configs;
  std::vector<Tensor> tensors;
  std::vector<Run> runs;
  std::vector<uint64_t> sums;
};

inline void varint(std::string &o, uint64_t v) {
  while (v >= 0x80) {
    o.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  o.push_back(static_cast<char>(v));
}

inline std::string encode(const Body &b) {
  std::string o;
  varint(o, b.strings.size());
  for (const auto &s : b.strings) {
    varint(o, s.size());
    o += s;
  }
  for (uint64_t v :
       {b.pipeline_name, b.pipeline_text, b.source_model, b.source_format, b.architecture, b.extra})
    varint(o, v);
  varint(o, b.configs.size());
  for (const auto &c : b.configs) {
    varint(o, c.size());
    for (const auto &s : c)
      for (uint64_t v : {s.slot, s.plugin, s.version, s.stream_version, s.options}) varint(o, v);
  }
  varint(o, b.tensors.size());
  for (const auto &t : b.tensors) {
    varint(o, t.name.size());
    for (uint64_t v : t.name) varint(o, v);
    o.push_back(static_cast<char>(t.dtype));
    o.push_back(static_cast<char>(t.storage));
    varint(o, t.shape.size());
    for (uint64_t v : t.shape) varint(o, v);
    varint(o, t.config);
    varint(o, t.blocks.size());
    for (const auto &bl : t.blocks) {
      varint(o, bl.width);
      varint(o, bl.symbols);
    }
  }
  varint(o, b.runs.size());
  for (const auto &r : b.runs) {
    varint(o, r.owner);
    if (r.owner == 0) {
      varint(o, r.gap);
      continue;
    }
    varint(o, r.streams.size());
    for (const auto &s : r.streams)
      for (uint64_t v : {s.role, s.block, s.length}) varint(o, v);
  }
  for (uint64_t h : b.sums)
    for (int i = 0; i < 8; ++i) o.push_back(static_cast<char>(h >> (8 * i)));
  return o;
}

// Parses a well-formed body (as the writer writes it); throws std::runtime_error otherwise.
inline Body parse(const std::string &s) {
  size_t p = 0;
  auto v = [&]() {
    uint64_t x = 0;
    for (int i = 0;; ++i) {
      if (p >= s.size()) throw std::runtime_error("v2spec: truncated");
      const auto c = static_cast<uint8_t>(s[p++]);
      x |= static_cast<uint64_t>(c & 0x7f) << (7 * i);
      if (!(c & 0x80)) return x;
    }
  };
  auto byte = [&]() { return static_cast<uint8_t>(s.at(p++)); };
  Body b;
  b.strings.resize(v());
  for (auto &str : b.strings) {
    const uint64_t n = v();
    str = s.substr(p, n);
    p += n;
  }
  b.pipeline_name = v();
  b.pipeline_text = v();
  b.source_model = v();
  b.source_format = v();
  b.architecture = v();
  b.extra = v();
  b.configs.resize(v());
  for (auto &c : b.configs) {
    c.resize(v());
    for (auto &st : c) st = {v(), v(), v(), v(), v()};
  }
  b.tensors.resize(v());
  for (auto &t : b.tensors) {
    t.name.resize(v());
    for (auto &x : t.name) x = v();
    t.dtype = byte();
    t.storage = byte();
    t.shape.resize(v());
    for (auto &x : t.shape) x = v();
    t.config = v();
    t.blocks.resize(v());
    for (auto &bl : t.blocks) bl = {v(), v()};
  }
  b.runs.resize(v());
  for (auto &r : b.runs) {
    r.owner = v();
    if (r.owner == 0) {
      r.gap = v();
      continue;
    }
    r.streams.resize(v());
    for (auto &st : r.streams) st = {v(), v(), v()};
  }
  if ((s.size() - p) % 8) throw std::runtime_error("v2spec: checksum table is not 8-byte aligned");
  while (p < s.size()) {
    uint64_t h = 0;
    for (int i = 7; i >= 0; --i) h = (h << 8) | static_cast<uint8_t>(s[p + static_cast<size_t>(i)]);
    b.sums.push_back(h);
    p += 8;
  }
  return b;
}

// The checksum units of the spec, recomputed from the stream bytes of `file` (§5.10): per tensor,
// in tensor order, one for its tensor-level streams (if any), then one per block with streams; a
// unit's checksum is XXH64 of its streams' XXH64s as 8 little-endian bytes each, in file order.
inline std::vector<uint64_t> unit_sums(const Body &b, const std::vector<uint8_t> &file) {
  struct S {
    uint64_t offset, length, block;
  };
  std::vector<std::vector<S>> per_tensor(b.tensors.size());
  uint64_t off = nwc::kContainerHeaderSize;
  for (const auto &r : b.runs) {
    if (r.owner == 0) {
      off += r.gap;
      continue;
    }
    for (const auto &s : r.streams) {
      per_tensor.at(r.owner - 1).push_back({off, s.length, s.block});
      off += s.length;
    }
  }
  std::vector<uint64_t> sums;
  auto sum = [&](const std::vector<S> &ss) {
    std::string le;
    for (const auto &s : ss) {
      const uint64_t h = s.offset + s.length <= file.size()
                             ? XXH64(file.data() + s.offset, static_cast<size_t>(s.length), 0)
                             : 0;
      for (int i = 0; i < 8; ++i) le.push_back(static_cast<char>(h >> (8 * i)));
    }
    sums.push_back(XXH64(le.data(), le.size(), 0));
  };
  for (size_t t = 0; t < b.tensors.size(); ++t) {
    const auto &ss = per_tensor[t];
    if (ss.empty()) continue;
    const size_t nb = b.tensors[t].blocks.size();
    for (uint64_t k = 0; k <= nb; ++k) {
      std::vector<S> unit;
      for (const auto &s : ss)
        if (s.block == k) unit.push_back(s);
      if (!unit.empty()) sum(unit);
    }
  }
  return sums;
}

// The manifest of a version 2 file, decompressed (encoding 0 or 1).
inline std::string body_of(const std::vector<uint8_t> &file) {
  const size_t foot = file.size() - nwc::kContainerFooterSize;
  uint64_t moff = 0, mlen = 0;
  for (int i = 7; i >= 0; --i) {
    moff = (moff << 8) | file[foot + static_cast<size_t>(i)];
    mlen = (mlen << 8) | file[foot + 8 + static_cast<size_t>(i)];
  }
  const uint8_t *m = file.data() + moff;
  if (m[0] == 0) return std::string(reinterpret_cast<const char *>(m + 1), mlen - 1);
  const unsigned long long n = ZSTD_getFrameContentSize(m + 1, mlen - 1);
  std::string body(static_cast<size_t>(n), '\0');
  const size_t got = ZSTD_decompress(body.data(), body.size(), m + 1, mlen - 1);
  if (ZSTD_isError(got) || got != n) throw std::runtime_error("v2spec: bad zstd frame");
  return body;
}

// `file` with its manifest replaced by `manifest` (the stored bytes, encoding byte first) and a
// footer that matches it.
inline std::vector<uint8_t> with_manifest(const std::vector<uint8_t> &file,
                                          const std::string &manifest) {
  const size_t foot = file.size() - nwc::kContainerFooterSize;
  uint64_t moff = 0;
  for (int i = 7; i >= 0; --i) moff = (moff << 8) | file[foot + static_cast<size_t>(i)];
  std::vector<uint8_t> out(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(moff));
  out.insert(out.end(), manifest.begin(), manifest.end());
  uint8_t footer[40];
  std::memcpy(footer, file.data() + foot, 40);
  const uint64_t len = manifest.size(), sum = XXH64(manifest.data(), manifest.size(), 0);
  for (int i = 0; i < 8; ++i) {
    footer[8 + i] = static_cast<uint8_t>(len >> (8 * i));
    footer[16 + i] = static_cast<uint8_t>(sum >> (8 * i));
  }
  out.insert(out.end(), footer, footer + 40);
  return out;
}

inline std::string stored(const std::string &body) {
  return std::string(1, '\0') + body;
}

inline std::string zstd(const std::string &body, int level = 3) {
  std::string z(ZSTD_compressBound(body.size()) + 1, '\0');
  z[0] = 1;
  const size_t n = ZSTD_compress(z.data() + 1, z.size() - 1, body.data(), body.size(), level);
  if (ZSTD_isError(n)) throw std::runtime_error("v2spec: zstd failed");
  z.resize(n + 1);
  return z;
}

} // namespace v2spec
