// gguf.cpp — GGUF v2/v3 reader (little-endian files only).
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv pairs, tensor infos, padding to
// general.alignment, data section. Every read below goes through Cursor, which checks the
// remaining bytes first; every count is checked against what the rest of the file could hold
// before anything is allocated from it.
#include "nwc/formats/gguf.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"

#include "ggml_blocks.hpp"
#include "ggml_quants.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <optional>
#include <set>
#include <type_traits>

namespace nwc {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxKeyLen = 1 << 16;
constexpr uint64_t kMaxStringLen = 256ull << 20;
constexpr uint64_t kMaxNameLen = 1 << 12;
constexpr uint32_t kMaxDims = 8;
constexpr uint64_t kMaxCount = 1ull << 24; // tensors, kv pairs
constexpr uint64_t kArraySummary = 64;     // longer arrays are summarised in Model::metadata

enum ValueType : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64
};

const char *value_type_name(uint32_t t) {
  static const char *names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  return t <= kF64 ? names[t] : "?";
}

uint64_t fixed_size(uint32_t t) {
  switch (t) {
  case kU8:
  case kI8:
  case kBool:
    return 1;
  case kU16:
  case kI16:
    return 2;
  case kU32:
  case kI32:
  case kF32:
    return 4;
  case kU64:
  case kI64:
  case kF64:
    return 8;
  default:
    return 0;
  }
}

// ggml tensor types: id, name, elements per block, bytes per block (0 = size unknown here).
struct GgmlType {
  uint32_t id;
  const char *name;
  uint64_t block, bytes;
};
constexpr GgmlType kGgmlTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292}, {16, "IQ2_XXS", 0, 0},
    {17, "IQ2_XS", 0, 0},     {18, "IQ3_XXS", 0, 0},  {19, "IQ1_S", 0, 0},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 0, 0},    {22, "IQ2_S", 0, 0},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},      {28, "F64", 1, 8},
    {29, "IQ1_M", 0, 0},      {30, "BF16", 1, 2},
};
constexpr uint32_t kF32Type = 0, kF16Type = 1, kBF16Type = 30;

// The quantized types nwc decodes (formats/ggml, bit for bit as ggml's to_float).
std::optional<ggml::Type> quantized_type(uint32_t id) {
  for (const ggml::TypeTraits &t : ggml::kTypes)
    if (static_cast<uint32_t>(t.type) == id && t.type != ggml::Type::F16) return t.type;
  return std::nullopt;
}

const GgmlType *find_type(uint32_t id) {
  for (const auto &t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

std::string type_label(uint32_t id) {
  const GgmlType *t = find_type(id);
  return std::string(t ? t->name : "unknown") + " (" + std::to_string(id) + ")";
}

// Valid UTF-8 passes through; invalid bytes become U+FFFD so the metadata JSON can be dumped.
std::string sanitize_utf8(const uint8_t *s, size_t n, bool &valid) {
  std::string out;
  out.reserve(n);
  valid = true;
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) ok = (s[i + k] & 0xc0) == 0x80;
    if (ok && len > 1) {
      // Reject overlong forms, surrogates and code points past U+10FFFF.
      uint32_t cp = c & (0xff >> (len + 1));
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3fu);
      static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= min_cp[len] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
    }
    if (ok) {
      out.append(reinterpret_cast<const char *>(s + i), len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      valid = false;
      ++i;
    }
  }
  return out;
}

class Cursor {
public:
  Cursor(const uint8_t *data, uint64_t size, std::string path)
      : data_(data), size_(size), path_(std::move(path)) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const std::string &path() const { return path_; }

  void need(uint64_t n, const std::string &what) const {
    if (n > left())
      fail(NWC_E_CORRUPT_STREAM, path_ + ": truncated GGUF file: " + what + " at offset " +
                                     std::to_string(pos_) + " needs " + std::to_string(n) +
                                     " bytes, " + std::to_string(left()) + " left");
  }
  template <typename T> T get(const std::string &what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void skip(uint64_t n, const std::string &what) {
    need(n, what);
    pos_ += n;
  }
  // A gguf string: u64 length, then bytes. Returns a view into the file.
  std::pair<const uint8_t *, uint64_t> raw_string(const std::string &what, uint64_t max_len) {
    const uint64_t len = get<uint64_t>(what + " length");
    if (len > max_len)
      fail(NWC_E_CORRUPT_STREAM, path_ + ": " + what + " at offset " + std::to_string(pos_ - 8) +
                                     " has length " + std::to_string(len) + " (at most " +
                                     std::to_string(max_len) + " allowed)");
    need(len, what);
    const uint8_t *p = data_ + pos_;
    pos_ += len;
    return {p, len};
  }

private:
  const uint8_t *data_;
  uint64_t size_;
  std::string path_;
  uint64_t pos_ = 0;
};

json read_scalar(Cursor &c, uint32_t type, const std::string &what) {
  switch (type) {
  case kU8:
    return c.get<uint8_t>(what);
  case kI8:
    return c.get<int8_t>(what);
  case kU16:
    return c.get<uint16_t>(what);
  case kI16:
    return c.get<int16_t>(what);
  case kU32:
    return c.get<uint32_t>(what);
  case kI32:
    return c.get<int32_t>(what);
  case kF32:
    return c.get<float>(what);
  case kBool:
    return c.get<uint8_t>(what) != 0;
  case kU64:
    return c.get<uint64_t>(what);
  case kI64:
    return c.get<int64_t>(what);
  case kF64:
    return c.get<double>(what);
  case kString: {
    auto [p, n] = c.raw_string(what, kMaxStringLen);
    bool valid;
    return sanitize_utf8(p, static_cast<size_t>(n), valid);
  }
  default:
    fail(NWC_E_CORRUPT_STREAM, c.path() + ": " + what + " has unknown value type " +
                                   std::to_string(type) + " (expected 0..12)");
  }
}

// Reads one kv value. Arrays are one level deep: nested arrays are rejected rather than recursed.
json read_value(Cursor &c, uint32_t type, const std::string &key, uint64_t &array_len) {
  const std::string what = "value of '" + key + "'";
  if (type != kArray) return read_scalar(c, type, what);
  const uint32_t elem = c.get<uint32_t>(what + " array type");
  const uint64_t n = c.get<uint64_t>(what + " array length");
  if (elem == kArray)
    fail(NWC_E_CORRUPT_STREAM, c.path() + ": " + what + " is an array of arrays (not supported)");
  if (elem > kF64)
    fail(NWC_E_CORRUPT_STREAM, c.path() + ": " + what + " has unknown array element type " +
                                   std::to_string(elem) + " (expected 0..12)");
  const uint64_t min_elem = elem == kString ? 8 : fixed_size(elem);
  if (n > c.left() / min_elem)
    fail(NWC_E_CORRUPT_STREAM, c.path() + ": " + what + " claims " + std::to_string(n) +
                                   " elements but only " + std::to_string(c.left()) +
                                   " bytes are left in the file");
  array_len = n;
  if (n > kArraySummary) {
    if (elem == kString) {
      for (uint64_t i = 0; i < n; ++i) c.raw_string(what, kMaxStringLen);
    } else {
      c.skip(n * min_elem, what);
    }
    return json{{"type", "array"}, {"element_type", value_type_name(elem)}, {"length", n}};
  }
  json arr = json::array();
  for (uint64_t i = 0; i < n; ++i) arr.push_back(read_scalar(c, elem, what));
  return arr;
}

// GGUF llama tensor parts and their HF Llama names.
constexpr std::pair<const char *, const char *> kLayerNames[] = {
    {"attn_norm", "input_layernorm"},    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},      {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},       {"attn_q_norm", "self_attn.q_norm"},
    {"attn_k_norm", "self_attn.k_norm"},
};
constexpr std::pair<const char *, const char *> kModelNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight and friends.
std::string hf_name(const std::string &g) {
  for (const auto &[from, to] : kModelNames)
    if (g == from) return to;
  if (g.rfind("blk.", 0) != 0) return g;
  size_t i = 4;
  while (i < g.size() && g[i] >= '0' && g[i] <= '9') ++i;
  if (i == 4 || i - 4 > 6 || i >= g.size() || g[i] != '.') return g;
  const std::string layer = g.substr(4, i - 4);
  const std::string rest = g.substr(i + 1);
  const size_t dot = rest.find('.');
  if (dot == std::string::npos) return g;
  const std::string part = rest.substr(0, dot), suffix = rest.substr(dot); // ".weight"
  for (const auto &[from, to] : kLayerNames)
    if (part == from) return "model.layers." + layer + "." + to + suffix;
  return g;
}

// The inverse: model.layers.N.mlp.up_proj.weight -> blk.N.ffn_up.weight.
std::string gguf_name(const std::string &h) {
  for (const auto &[g, hf] : kModelNames)
    if (h == hf) return g;
  const std::string pre = "model.layers.";
  if (h.rfind(pre, 0) != 0) return h;
  const size_t dot = h.find('.', pre.size());
  if (dot == std::string::npos) return h;
  const std::string layer = h.substr(pre.size(), dot - pre.size()), rest = h.substr(dot + 1);
  for (const auto &[g, hf] : kLayerNames) {
    const std::string part(hf);
    if (rest.rfind(part + ".", 0) == 0) return "blk." + layer + "." + g + rest.substr(part.size());
  }
  return h;
}

struct Info {
  std::string gguf_name;
  std::vector<int64_t> shape; // row-major (GGUF ne reversed)
  uint32_t type;
  uint64_t offset;
  uint64_t bytes; // 0 when the type's size is unknown
  uint64_t numel;
};

struct Header {
  uint32_t version = 0;
  uint64_t n_tensors = 0, n_kv = 0;
};

// Magic, version and the two counts, each count bounded by what the rest of the file can hold.
Header read_header(const MappedFile &file, Cursor &c, const std::string &p) {
  if (file.size() < 4 || std::memcmp(file.data(), "GGUF", 4) != 0)
    fail(NWC_E_CORRUPT_STREAM, p + ": not a GGUF file (bad magic)");
  c.skip(4, "magic");
  Header h;
  h.version = c.get<uint32_t>("version");
  if (h.version != 2 && h.version != 3)
    fail(NWC_E_VERSION, p + ": GGUF version " + std::to_string(h.version) +
                            " is not supported (expected 2 or 3, little-endian)");
  h.n_tensors = c.get<uint64_t>("tensor count");
  h.n_kv = c.get<uint64_t>("kv count");
  // Each kv takes at least 13 bytes and each tensor info at least 32: bound both by the file.
  if (h.n_kv > kMaxCount || h.n_kv > c.left() / 13)
    fail(NWC_E_CORRUPT_STREAM, p + ": truncated or corrupt GGUF file: header claims " +
                                   std::to_string(h.n_kv) +
                                   " key-value pairs, more than the file can hold (" +
                                   std::to_string(c.left()) + " bytes left)");
  if (h.n_tensors > kMaxCount || h.n_tensors > c.left() / 32)
    fail(NWC_E_CORRUPT_STREAM,
         p + ": truncated or corrupt GGUF file: header claims " + std::to_string(h.n_tensors) +
             " tensors, more than the file can hold (" + std::to_string(c.left()) + " bytes left)");
  return h;
}

// The key-value pairs into `metadata` (keys unique); array lengths by key into array_lens.
void read_metadata(Cursor &c, uint64_t n_kv, const std::string &p, json &metadata,
                   std::map<std::string, uint64_t> &array_lens) {
  for (uint64_t i = 0; i < n_kv; ++i) {
    auto [kp, kn] = c.raw_string("key of kv pair " + std::to_string(i), kMaxKeyLen);
    bool valid;
    const std::string key = sanitize_utf8(kp, static_cast<size_t>(kn), valid);
    const uint32_t type = c.get<uint32_t>("type of '" + key + "'");
    uint64_t alen = 0;
    json v = read_value(c, type, key, alen);
    if (type == kArray) array_lens[key] = alen;
    if (metadata.contains(key))
      fail(NWC_E_CORRUPT_STREAM, p + ": GGUF key '" + key + "' appears twice");
    metadata[key] = std::move(v);
  }
}

// Typed access to the key-value pairs, failing with the file and key on a value of the wrong kind.
struct Metadata {
  const json &kv;
  const std::string &p;

  // A non-negative integer; false when the key is absent (or holds an array or object).
  bool get_int(const std::string &key, int64_t &out) const {
    auto it = kv.find(key);
    if (it == kv.end() || it->is_array() || it->is_object()) return false;
    if (!it->is_number_integer() ||
        (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) ||
        it->get<int64_t>() < 0)
      fail(NWC_E_CORRUPT_STREAM,
           p + ": GGUF key '" + key + "' must be a non-negative integer, got " + it->dump());
    out = it->get<int64_t>();
    return true;
  }
  void get_double(const std::string &key, double &out) const {
    auto it = kv.find(key);
    if (it == kv.end()) return;
    if (!it->is_number())
      fail(NWC_E_CORRUPT_STREAM,
           p + ": GGUF key '" + key + "' must be a number, got " + it->dump());
    out = it->get<double>();
  }
  // general.alignment: a power of two in 1..1048576, 32 when absent.
  uint64_t alignment() const {
    int64_t alignment = 32;
    get_int("general.alignment", alignment);
    if (alignment <= 0 || alignment > (1 << 20) || (alignment & (alignment - 1)) != 0)
      fail(NWC_E_CORRUPT_STREAM, p + ": general.alignment " + std::to_string(alignment) +
                                     " is not a power of two in 1..1048576");
    return static_cast<uint64_t>(alignment);
  }
};

// One tensor info: a valid name not in `names` (added), dimensions whose product fits, a size that
// is a whole number of its type's blocks, an aligned offset.
Info read_tensor_info(Cursor &c, uint64_t i, uint64_t align, const std::string &p,
                      std::set<std::string> &names) {
  auto [np, nn] = c.raw_string("name of tensor " + std::to_string(i), kMaxNameLen);
  bool valid;
  Info t;
  t.gguf_name = sanitize_utf8(np, static_cast<size_t>(nn), valid);
  const std::string where = p + ": tensor '" + t.gguf_name + "'";
  if (!valid) fail(NWC_E_CORRUPT_STREAM, where + " has a name that is not valid UTF-8");
  if (!names.insert(t.gguf_name).second) fail(NWC_E_CORRUPT_STREAM, where + " is listed twice");
  const uint32_t n_dims = c.get<uint32_t>("n_dims of '" + t.gguf_name + "'");
  if (n_dims == 0 || n_dims > kMaxDims)
    fail(NWC_E_CORRUPT_STREAM, where + " has n_dims " + std::to_string(n_dims) + " (expected 1.." +
                                   std::to_string(kMaxDims) + ")");
  uint64_t ne[kMaxDims];
  t.numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    ne[d] = c.get<uint64_t>("dims of '" + t.gguf_name + "'");
    if (ne[d] > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_mul_overflow(t.numel, ne[d], &t.numel))
      fail(NWC_E_CORRUPT_STREAM, where + " has dimensions whose product overflows");
  }
  for (uint32_t d = n_dims; d-- > 0;) t.shape.push_back(static_cast<int64_t>(ne[d]));
  t.type = c.get<uint32_t>("type of '" + t.gguf_name + "'");
  t.offset = c.get<uint64_t>("offset of '" + t.gguf_name + "'");
  t.bytes = 0;
  if (const GgmlType *gt = find_type(t.type); gt && gt->block) {
    if (ne[0] % gt->block != 0)
      fail(NWC_E_CORRUPT_STREAM,
           where + " of type " + type_label(t.type) + " has ne[0] = " + std::to_string(ne[0]) +
               ", not a multiple of its block (" + std::to_string(gt->block) + ")");
    if (__builtin_mul_overflow(t.numel / gt->block, gt->bytes, &t.bytes))
      fail(NWC_E_CORRUPT_STREAM, where + " is too large");
  }
  if (t.offset % align != 0)
    fail(NWC_E_CORRUPT_STREAM, where + " offset " + std::to_string(t.offset) +
                                   " is not a multiple of the alignment " + std::to_string(align));
  return t;
}

std::vector<Info> read_tensor_infos(Cursor &c, uint64_t n_tensors, uint64_t align,
                                    const std::string &p) {
  std::vector<Info> infos;
  infos.reserve(static_cast<size_t>(n_tensors));
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) infos.push_back(read_tensor_info(c, i, align, p, names));
  return infos;
}

// Every tensor's data lies inside the data section, and no two overlap.
void check_data_section(const std::vector<Info> &infos, uint64_t data_size, const std::string &p) {
  for (const Info &t : infos) {
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      fail(NWC_E_CORRUPT_STREAM,
           p + ": tensor '" + t.gguf_name + "' data [" + std::to_string(t.offset) + ", " +
               std::to_string(t.offset + t.bytes) + ") lies outside the data section (size " +
               std::to_string(data_size) + ")");
  }
  std::vector<const Info *> sorted;
  for (const Info &t : infos)
    if (t.bytes) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const Info *a, const Info *b) { return a->offset < b->offset; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->offset < sorted[i - 1]->offset + sorted[i - 1]->bytes)
      fail(NWC_E_CORRUPT_STREAM, p + ": tensors '" + sorted[i - 1]->gguf_name + "' and '" +
                                     sorted[i]->gguf_name + "' overlap in the data section");
}

// n values of ggml blocks of `type` as float, bit for bit as ggml's to_float; a block whose fp16
// scale is not finite is an error naming `where`.
std::vector<float> dequantize_blocks(ggml::Type type, const uint8_t *src, uint64_t n,
                                     const std::string &where) {
  const ggml::TypeTraits &tr = ggml::traits(type);
  std::vector<float> out(n);
  std::vector<int32_t> symbols(static_cast<size_t>(tr.block));
  std::vector<uint8_t> side(static_cast<size_t>(tr.side_bytes));
  for (uint64_t b = 0; b < n / static_cast<uint64_t>(tr.block); ++b) {
    const uint8_t *block = src + b * static_cast<uint64_t>(tr.block_bytes);
    ggml::unpack_block(type, block, symbols.data(), side.data());
    if (!ggml::side_is_valid(type, side.data()))
      fail(NWC_E_CORRUPT_STREAM,
           where + " block " + std::to_string(b) + " has a scale that is not a finite number");
    ggml::dequantize_block(type, symbols.data(), side.data(),
                           out.data() + b * static_cast<uint64_t>(tr.block));
  }
  return out;
}

// A tensor whose loader reads its data from the mapped file: F32, F16, BF16 and the ggml block
// types of formats/ggml decode to float; other types are listed (so the model can be inspected)
// but fail to load.
ModelTensor make_tensor(const Info &t, const std::shared_ptr<MappedFile> &file, const uint8_t *data,
                        const std::string &p) {
  ModelTensor mt;
  mt.info.name = hf_name(t.gguf_name);
  mt.info.shape = t.shape;
  const uint8_t *src = data + t.offset;
  const uint64_t n = t.numel;
  switch (t.type) {
  case kF32Type:
  case kF16Type:
  case kBF16Type: {
    const DType dt = t.type == kF32Type   ? DType::F32
                     : t.type == kF16Type ? DType::F16
                                          : DType::BF16;
    mt.info.dtype = dt;
    mt.load = [file, src, n, dt]() {
      std::vector<float> out(n);
      to_float(dt, src, n, out.data());
      return out;
    };
    break;
  }
  default: {
    // No DType holds a ggml block type; loads decode to float, so F32 is what callers get.
    mt.info.dtype = DType::F32;
    if (const std::optional<ggml::Type> q = quantized_type(t.type)) {
      const std::string where = p + ": tensor '" + t.gguf_name + "'";
      mt.load = [file, src, n, type = *q, where]() {
        return dequantize_blocks(type, src, n, where);
      };
      // The blocks themselves, for writers of GGUF that keep them (write_gguf).
      mt.load_native = [file, src, n, type = *q]() -> std::optional<NativeBlocks> {
        const ggml::TypeTraits &tr = ggml::traits(type);
        const uint64_t bytes = n / static_cast<uint64_t>(tr.block) * tr.block_bytes;
        return NativeBlocks{"ggml", tr.name, static_cast<uint64_t>(tr.block),
                            static_cast<uint64_t>(tr.block_bytes),
                            std::vector<uint8_t>(src, src + bytes)};
      };
      break;
    }
    // Listed so that the model can still be inspected; loading it is the error.
    const std::string msg = p + ": tensor '" + t.gguf_name + "' has ggml type " +
                            type_label(t.type) +
                            ", which nwc cannot load (supported: F32, F16, BF16, Q4_0, Q4_1, "
                            "Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)";
    mt.load = [msg]() -> std::vector<float> { fail(NWC_E_UNSUPPORTED_DTYPE, msg); };
    break;
  }
  }
  return mt;
}

// Architecture from "<arch>.*" keys (general.architecture, "llama" when absent).
void read_architecture(Model &m, const Metadata &meta,
                       const std::map<std::string, uint64_t> &array_lens) {
  Architecture &a = m.arch;
  std::string arch = "llama";
  if (auto it = m.metadata.find("general.architecture"); it != m.metadata.end()) {
    if (!it->is_string())
      fail(NWC_E_CORRUPT_STREAM, meta.p + ": GGUF key 'general.architecture' must be a string");
    arch = it->get<std::string>();
    a.family = arch;
  }
  const std::string pre = arch + ".";
  meta.get_int(pre + "embedding_length", a.dim);
  meta.get_int(pre + "feed_forward_length", a.hidden_dim);
  meta.get_int(pre + "block_count", a.n_layers);
  meta.get_int(pre + "attention.head_count", a.n_heads);
  a.n_kv_heads = a.n_heads;
  meta.get_int(pre + "attention.head_count_kv", a.n_kv_heads);
  meta.get_int(pre + "context_length", a.max_seq_len);
  meta.get_double(pre + "attention.layer_norm_rms_epsilon", a.norm_eps);
  meta.get_double(pre + "rope.freq_base", a.rope_theta);
  if (!meta.get_int(pre + "vocab_size", a.vocab_size)) {
    if (auto it = array_lens.find("tokenizer.ggml.tokens"); it != array_lens.end())
      a.vocab_size = static_cast<int64_t>(it->second);
    else if (const ModelTensor *e = m.find("model.embed_tokens.weight");
             e && e->info.shape.size() == 2)
      a.vocab_size = e->info.shape[0];
  }
  // llama.cpp's converter permutes the q/k rows of HF checkpoints back to Meta's layout, because
  // ggml's normal RoPE mode rotates adjacent pairs (2i, 2i+1): llama2.c's convention. Its qwen2
  // and qwen3 architectures use the NeoX mode, HF's rotate-half, and keep HF's rows.
  const bool neox = arch == "qwen2" || arch == "qwen3";
  a.rope_style = neox ? "rotate_half" : "interleaved";
  a.tied_embeddings = m.find("lm_head.weight") == nullptr;
  int64_t key_length = 0;
  if (meta.get_int(pre + "attention.key_length", key_length) && a.n_heads > 0 &&
      key_length * a.n_heads != a.dim)
    a.head_dim = key_length;
  // Biases and q/k norms are optional tensors of these architectures: present in block 0 means
  // present in every block (the runtime checks each).
  a.attention_bias = m.find("model.layers.0.self_attn.q_proj.bias") != nullptr;
  a.attention_out_bias = m.find("model.layers.0.self_attn.o_proj.bias") != nullptr;
  a.mlp_bias = m.find("model.layers.0.mlp.gate_proj.bias") != nullptr;
  a.qk_norm = m.find("model.layers.0.self_attn.q_norm.weight") != nullptr;
}

} // namespace

Model read_gguf(const fs::path &path) {
  auto file = std::make_shared<MappedFile>(path);
  const std::string p = path.string();
  Cursor c(file->data(), file->size(), p);
  const Header header = read_header(*file, c, p);

  Model m;
  m.format = "gguf";
  m.path = path;
  m.keepalive = file;
  m.metadata = json::object();
  std::map<std::string, uint64_t> array_lens;
  read_metadata(c, header.n_kv, p, m.metadata, array_lens);
  const Metadata meta{m.metadata, p};
  const uint64_t align = meta.alignment();
  const std::vector<Info> infos = read_tensor_infos(c, header.n_tensors, align, p);

  // The data section starts at the next multiple of the alignment after the infos.
  const uint64_t data_start = (c.pos() + align - 1) / align * align;
  if (data_start > file->size() && header.n_tensors > 0)
    fail(NWC_E_CORRUPT_STREAM, p + ": truncated GGUF file: data section starts at " +
                                   std::to_string(data_start) + ", file has " +
                                   std::to_string(file->size()) + " bytes");
  check_data_section(infos, data_start <= file->size() ? file->size() - data_start : 0, p);

  std::set<std::string> hf_names;
  const uint8_t *data = file->data() + std::min<uint64_t>(data_start, file->size());
  for (const Info &t : infos) {
    ModelTensor mt = make_tensor(t, file, data, p);
    if (!hf_names.insert(mt.info.name).second)
      fail(NWC_E_CORRUPT_STREAM, p + ": tensors map to the same name '" + mt.info.name +
                                     "' (from '" + t.gguf_name + "')");
    m.tensors.push_back(std::move(mt));
  }
  read_architecture(m, meta, array_lens);
  // llama.cpp's RoPE frequency divisors (Llama 3's scaling) belong to the architecture.
  if (auto it =
          std::find_if(m.tensors.begin(), m.tensors.end(),
                       [](const ModelTensor &t) { return t.info.name == "rope_freqs.weight"; });
      it != m.tensors.end()) {
    const int64_t pairs = m.arch.head_size() / 2;
    if (it->info.shape != std::vector<int64_t>{pairs})
      fail(NWC_E_CORRUPT_STREAM, p + ": tensor 'rope_freqs.weight' must hold " +
                                     std::to_string(pairs) + " values (head size / 2)");
    for (const float f : it->load()) {
      if (!(f > 0.0f) || !std::isfinite(f))
        fail(NWC_E_CORRUPT_STREAM,
             p + ": tensor 'rope_freqs.weight' holds a value that is not finite and positive");
      m.arch.rope_freq_factors.push_back(f);
    }
    m.tensors.erase(it);
  }
  m.metadata["gguf.version"] = header.version;
  return m;
}

namespace {

// The llama.cpp architecture a model is written as: "qwen2" and "qwen3" for those model types,
// "llama" otherwise; a field that architecture cannot describe is refused, naming it.
std::string gguf_architecture(const Model &model) {
  const Architecture &a = model.arch;
  const std::string arch = a.family == "qwen2" || a.family == "qwen3" ? a.family : "llama";
  const auto refuse = [&](const std::string &field) {
    fail(NWC_E_INVALID_ARG, model.path.string() + ": GGUF's \"" + arch +
                                "\" architecture as nwc writes it has no " + field +
                                " (use the HF layout)");
  };
  // llama.cpp's "llama" applies Llama 3's frequency scaling through a rope_freqs tensor
  // (written below); Mistral's window only in its own architectures, not written here.
  if (arch != "llama" && (!a.rope_scaling.type.empty() || !a.rope_freq_factors.empty()))
    refuse(a.rope_scaling.type.empty() ? "rope_freq_factors" : "rope_scaling");
  if (!a.rope_scaling.type.empty() && a.rope_scaling.type != "llama3")
    refuse("rope_scaling type '" + a.rope_scaling.type + "'");
  if (a.sliding_window > 0) refuse("sliding_window");
  if (arch == "llama" && a.qk_norm) refuse("qk_norm");
  if (arch == "qwen2" && (a.attention_out_bias || a.mlp_bias || a.qk_norm))
    refuse(a.qk_norm ? "qk_norm" : a.mlp_bias ? "mlp_bias" : "attention_out_bias");
  if (arch == "qwen3" && (a.attention_bias || a.attention_out_bias || a.mlp_bias))
    refuse(a.mlp_bias ? "mlp_bias" : "attention_bias");
  return arch;
}

} // namespace

namespace {

// The ggml type a tensor's native blocks are written in, or nullopt (with the reason in notes)
// when they cannot be: not ggml blocks of a type nwc decodes, or blocks that do not decode bit
// for bit to the tensor's values (a stage after the quantizer changed them).
std::optional<ggml::Type> keepable_blocks(const ModelTensor &t, const std::string &where,
                                          std::vector<std::string> &notes) {
  if (!t.load_native) return std::nullopt;
  const std::optional<NativeBlocks> nb = t.load_native();
  if (!nb) return std::nullopt;
  const std::string what = where + ": tensor '" + t.info.name + "': ";
  const std::optional<ggml::Type> type =
      nb->format == "ggml" ? ggml::type_from_name(nb->type) : std::nullopt;
  if (!type) {
    notes.push_back(what + nb->format + " " + nb->type + " blocks are not a ggml type nwc writes");
    return std::nullopt;
  }
  const ggml::TypeTraits &tr = ggml::traits(*type);
  const auto &shape = t.info.shape;
  if (nb->values_per_block != static_cast<uint64_t>(tr.block) ||
      nb->bytes_per_block != static_cast<uint64_t>(tr.block_bytes) || shape.size() != 2 ||
      shape[1] % tr.block != 0 ||
      nb->bytes.size() != t.info.numel() / static_cast<uint64_t>(tr.block) * tr.block_bytes)
    fail(NWC_E_CORRUPT_STREAM, what + std::to_string(nb->bytes.size()) + " bytes of " + tr.name +
                                   " blocks do not hold its shape");
  const std::vector<float> decoded =
      dequantize_blocks(*type, nb->bytes.data(), t.info.numel(), what + tr.name);
  const std::vector<float> values = t.load();
  if (values.size() != decoded.size() ||
      std::memcmp(values.data(), decoded.data(), values.size() * sizeof(float)) != 0) {
    notes.push_back(what + "its " + tr.name +
                    " blocks do not decode to its values (a stage after the quantizer changes "
                    "them): written as floats");
    return std::nullopt;
  }
  return type;
}

// The rope_freqs tensor of a model with Llama 3's RoPE scaling, as convert_hf_to_gguf.py computes
// it (LlamaModel.generate_extra_tensors), in double: 1 for wavelengths below
// original_max_position_embeddings / high_freq_factor, factor above
// original_max_position_embeddings / low_freq_factor, interpolated between.
std::vector<double> llama3_freq_factors(const Architecture &a) {
  const RopeScaling &r = a.rope_scaling;
  const int64_t d = a.head_size();
  const double old_len = static_cast<double>(r.original_max_position_embeddings);
  if (!(r.factor > 0) || !(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor) ||
      !(old_len > 0))
    fail(NWC_E_INVALID_ARG, "rope_scaling (llama3) needs factor > 0, 0 < low_freq_factor < "
                            "high_freq_factor and original_max_position_embeddings > 0");
  const double low_wavelen = old_len / r.low_freq_factor,
               high_wavelen = old_len / r.high_freq_factor;
  std::vector<double> out;
  for (int64_t i = 0; i < d; i += 2) {
    const double freq = std::pow(a.rope_theta, -static_cast<double>(i) / static_cast<double>(d));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0);
    } else if (wavelen > low_wavelen) {
      out.push_back(r.factor);
    } else {
      const double smooth =
          (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      out.push_back(1.0 / ((1.0 - smooth) / r.factor + smooth));
    }
  }
  return out;
}

// llama.cpp's file type for a file whose most frequent matrix type is t (llama_model_loader's
// guess: Q3_K, Q4_K and Q5_K count as their _M mixtures).
uint32_t file_type_of(ggml::Type t) {
  switch (t) {
  case ggml::Type::F16:
    return 1;
  case ggml::Type::Q4_0:
    return 2;
  case ggml::Type::Q4_1:
    return 3;
  case ggml::Type::Q8_0:
    return 7;
  case ggml::Type::Q5_0:
    return 8;
  case ggml::Type::Q5_1:
    return 9;
  case ggml::Type::Q2_K:
    return 10;
  case ggml::Type::Q3_K:
    return 12;
  case ggml::Type::Q4_K:
    return 15;
  case ggml::Type::Q5_K:
    return 17;
  case ggml::Type::Q6_K:
    return 18;
  case ggml::Type::IQ4_NL:
    return 25;
  case ggml::Type::IQ4_XS:
    return 30;
  }
  return 0;
}

} // namespace

GgufWriteReport write_gguf(const Model &model, const fs::path &path, DType dtype,
                           const GgufMetadata &extra, bool keep_blocks) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail(NWC_E_UNSUPPORTED_DTYPE, path.string() + ": GGUF output supports F32, F16 and BF16");
  const Architecture &a = model.arch;
  if (a.dim <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0 || a.n_layers <= 0)
    fail(NWC_E_INVALID_ARG, model.path.string() + ": no Llama architecture to describe in GGUF");
  if (a.rope_style != "interleaved" && a.rope_style != "rotate_half")
    fail(NWC_E_INVALID_ARG, model.path.string() + ": unknown RoPE style '" + a.rope_style + "'");
  const std::string arch = gguf_architecture(model);
  const std::string pre = arch + ".";
  // llama.cpp's "llama" RoPE pairs adjacent channels (2i, 2i+1); its qwen2/qwen3 ("NeoX") RoPE
  // pairs i and i + head_dim/2, HF's rotate-half. q/k rows (and their biases) are permuted to the
  // pairing of the architecture written.
  const bool neox = arch != "llama";
  const bool permute = (a.rope_style == "rotate_half") != neox;
  const int64_t head_dim = a.head_size();
  // The tensors written: the model's, and llama.cpp's rope_freqs when RoPE frequencies are scaled.
  std::vector<ModelTensor> tensors = model.tensors;
  const std::vector<double> freq_factors =
      a.rope_scaling.type == "llama3" ? llama3_freq_factors(a) : a.rope_freq_factors;
  if (!freq_factors.empty()) {
    if (static_cast<int64_t>(freq_factors.size()) != head_dim / 2)
      fail(NWC_E_INVALID_ARG, model.path.string() + ": " + std::to_string(freq_factors.size()) +
                                  " RoPE frequency factors for heads of " +
                                  std::to_string(head_dim) + " (expected head size / 2)");
    ModelTensor f;
    f.info.name = "rope_freqs.weight";
    f.info.shape = {static_cast<int64_t>(freq_factors.size())};
    f.load = [v = std::vector<float>(freq_factors.begin(), freq_factors.end())] { return v; };
    tensors.push_back(std::move(f));
  }
  constexpr uint64_t kAlign = 32;
  // ggml_type and llama_ftype of the tensors: F32 0/0, F16 1/1, BF16 30/32.
  const uint32_t ggml_type = dtype == DType::F32 ? 0u : dtype == DType::F16 ? 1u : 30u;
  uint32_t file_type = dtype == DType::F32 ? 0u : dtype == DType::F16 ? 1u : 32u;

  // Tensors whose source holds ggml blocks (a GGUF file, a container coded by nwc.quant.ggml) are
  // written as those blocks, not re-quantized; decided before the header, which gives each
  // tensor's type and size. The file type is then llama.cpp's guess from the most frequent one.
  GgufWriteReport report;
  std::vector<std::optional<ggml::Type>> kept(tensors.size());
  if (keep_blocks) {
    std::map<ggml::Type, size_t> counts;
    for (size_t i = 0; i < tensors.size(); ++i)
      if ((kept[i] = keepable_blocks(tensors[i], model.path.string(), report.notes)))
        ++counts[*kept[i]];
    size_t most = 0;
    for (const auto &[type, count] : counts)
      if (count > most) {
        most = count;
        file_type = file_type_of(type);
      }
  }

  GgufMetadata kv = {
      {"general.architecture", arch},
      {"general.name", model.path.stem().string()},
      {"general.file_type", file_type},
      {pre + "context_length", static_cast<uint32_t>(a.max_seq_len)},
      {pre + "embedding_length", static_cast<uint32_t>(a.dim)},
      {pre + "feed_forward_length", static_cast<uint32_t>(a.hidden_dim)},
      {pre + "block_count", static_cast<uint32_t>(a.n_layers)},
      {pre + "attention.head_count", static_cast<uint32_t>(a.n_heads)},
      {pre + "attention.head_count_kv", static_cast<uint32_t>(a.n_kv_heads)},
      {pre + "attention.layer_norm_rms_epsilon", static_cast<float>(a.norm_eps)},
      {pre + "rope.freq_base", static_cast<float>(a.rope_theta)},
      {pre + "rope.dimension_count", static_cast<uint32_t>(head_dim)},
  };
  if (head_dim * a.n_heads != a.dim) { // a head size of its own (llama.cpp's n_embd_head_k/v)
    kv.emplace_back(pre + "attention.key_length", static_cast<uint32_t>(head_dim));
    kv.emplace_back(pre + "attention.value_length", static_cast<uint32_t>(head_dim));
  }
  if (a.vocab_size > 0) kv.emplace_back(pre + "vocab_size", static_cast<uint32_t>(a.vocab_size));
  for (const auto &e : extra) {
    for (const auto &own : kv)
      if (own.first == e.first)
        fail(NWC_E_INVALID_ARG,
             path.string() + ": GGUF key '" + e.first + "' is written from the model, not given");
    kv.push_back(e);
  }

  std::vector<uint8_t> head;
  auto put = [&](const void *p, size_t n) {
    head.insert(head.end(), static_cast<const uint8_t *>(p), static_cast<const uint8_t *>(p) + n);
  };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string &s) {
    u64(s.size());
    put(s.data(), s.size());
  };
  auto value = [&](const GgufValue &v) {
    std::visit(
        [&](const auto &x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, uint32_t>) {
            u32(kU32);
            u32(x);
          } else if constexpr (std::is_same_v<T, int32_t>) {
            u32(kI32);
            put(&x, 4);
          } else if constexpr (std::is_same_v<T, float>) {
            u32(kF32);
            put(&x, 4);
          } else if constexpr (std::is_same_v<T, bool>) {
            u32(kBool);
            const uint8_t b = x ? 1 : 0;
            put(&b, 1);
          } else if constexpr (std::is_same_v<T, std::string>) {
            u32(kString);
            str(x);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            u32(kArray);
            u32(kString);
            u64(x.size());
            for (const std::string &s : x) str(s);
          } else if constexpr (std::is_same_v<T, std::vector<float>>) {
            u32(kArray);
            u32(kF32);
            u64(x.size());
            put(x.data(), x.size() * 4);
          } else {
            static_assert(std::is_same_v<T, std::vector<int32_t>>);
            u32(kArray);
            u32(kI32);
            u64(x.size());
            put(x.data(), x.size() * 4);
          }
        },
        v);
  };
  head.insert(head.end(), {'G', 'G', 'U', 'F'});
  u32(3);
  u64(tensors.size());
  u64(kv.size());
  for (const auto &[key, v] : kv) {
    str(key);
    value(v);
  }
  // Vectors (norm weights) stay F32 whatever the dtype, as convert_hf_to_gguf.py keeps them:
  // ggml's CPU backend multiplies by them only in F32.
  const auto tensor_dtype = [&](const ModelTensor &t) {
    return t.info.shape.size() == 1 ? DType::F32 : dtype;
  };
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ModelTensor &t = tensors[i];
    str(gguf_name(t.info.name));
    u32(static_cast<uint32_t>(t.info.shape.size()));
    for (auto d = t.info.shape.rbegin(); d != t.info.shape.rend(); ++d)
      u64(static_cast<uint64_t>(*d));
    uint64_t bytes = t.info.numel() * dtype_size(tensor_dtype(t));
    if (kept[i]) {
      const ggml::TypeTraits &tr = ggml::traits(*kept[i]);
      u32(static_cast<uint32_t>(*kept[i]));
      bytes = t.info.numel() / static_cast<uint64_t>(tr.block) * tr.block_bytes;
      report.tensor_types.emplace_back(t.info.name, tr.name);
    } else {
      const DType d = tensor_dtype(t);
      u32(d == DType::F32 ? 0u : ggml_type);
      report.tensor_types.emplace_back(t.info.name, d == DType::F32   ? "f32"
                                                    : d == DType::F16 ? "f16"
                                                                      : "bf16");
    }
    u64(offset);
    offsets.push_back(offset);
    offset += (bytes + kAlign - 1) / kAlign * kAlign;
  }
  while (head.size() % kAlign) head.push_back(0);

  AtomicFile out(path);
  out.write(head.data(), head.size());
  const uint64_t data_start = head.size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ModelTensor &t = tensors[i];
    const std::string &n = t.info.name;
    auto ends = [&](const std::string &suffix) {
      return n.size() >= suffix.size() &&
             n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    // q/k rows (a bias is one column of its weight's rows) in the architecture's RoPE pairing.
    const bool to_rotate_half = neox;
    int64_t heads = 0;
    if (permute && (ends("self_attn.q_proj.weight") || ends("self_attn.q_proj.bias")))
      heads = a.n_heads;
    if (permute && (ends("self_attn.k_proj.weight") || ends("self_attn.k_proj.bias")))
      heads = a.n_kv_heads;
    const int64_t cols = ends(".bias") ? 1 : a.dim;
    std::vector<uint8_t> bytes;
    if (kept[i]) {
      bytes = std::move(t.load_native()->bytes);
      if (heads > 0) { // whole rows of blocks move: permute row indices, then the rows
        std::vector<float> index(static_cast<size_t>(heads * head_dim));
        for (size_t r = 0; r < index.size(); ++r) index[r] = static_cast<float>(r);
        index = permute_rope_rows(index, heads, head_dim, 1, to_rotate_half);
        const size_t row = bytes.size() / index.size();
        std::vector<uint8_t> moved(bytes.size());
        for (size_t r = 0; r < index.size(); ++r)
          std::memcpy(moved.data() + r * row, bytes.data() + static_cast<size_t>(index[r]) * row,
                      row);
        bytes.swap(moved);
      }
    } else {
      std::vector<float> v = t.load();
      if (heads > 0) v = permute_rope_rows(v, heads, head_dim, cols, to_rotate_half);
      bytes.resize(v.size() * dtype_size(tensor_dtype(t)));
      from_float(tensor_dtype(t), v.data(), v.size(), bytes.data());
    }
    std::vector<uint8_t> pad(static_cast<size_t>(data_start + offsets[i] - out.size()), 0);
    out.write(pad.data(), pad.size());
    out.write(bytes.data(), bytes.size());
  }
  out.commit();
  return report;
}

} // namespace nwc
