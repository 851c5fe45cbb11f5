// nwc/cpp/plugin.hpp — header-only C++ helpers for plugin authors.
//
// A plugin is a small C++ class deriving from one of the stage bases below (Chunker, Transform,
// Quantizer, EntropyCoder, Compensator, Rotation). It declares its identity and its option table
// once as static members; NWC_MODULE(...) then emits the C entry point, descriptors, vtables and
// interface tables. Exceptions never cross the ABI: every trampoline catches them and maps them to
// a status plus the instance's last-error string.
//
//   class Raw final : public nwc::EntropyCoder {
//    public:
//     static constexpr const char *id = "nwc.entropy.raw";
//     static constexpr const char *version = "1.0.0";
//     static constexpr uint32_t stream_version = 1;
//     static constexpr const char *name = "raw";
//     static constexpr const char *description = "Fixed-width bit packing.";
//     static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
//     static inline const nwc_option_spec options[] = {...};   // may be empty: use no_options
//     explicit Raw(const nwc::Options &opts);
//     void encode(nwc::ConstTensor<int32_t> symbols, const nwc_cdf_model *, nwc::Sink &out)
//     override; void decode(nwc::Bytes in, const nwc_cdf_model *, nwc::Tensor<int32_t> symbols)
//     override;
//   };
//   NWC_MODULE(Raw)
//
// This C++ layer is source-level API (unstable); the C ABI underneath is stable (docs/abi.md).
#pragma once

#include "nwc/cpp/error.hpp"
#include "nwc/nwc.h"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

// The ABI version a plugin's module and descriptors declare (docs/abi.md). It defaults to the
// version of the headers the plugin is compiled against; define it before including this header
// (or on the command line) only to claim another version, e.g. to check the host's compatibility
// rules with a plugin that says it was built for an older or newer 1.x (tests/consumer).
#ifndef NWC_PLUGIN_ABI_VERSION
#define NWC_PLUGIN_ABI_VERSION NWC_ABI_VERSION
#endif

namespace nwc {

// ---- option schema builders -------------------------------------------------------------------

inline constexpr nwc_option_spec int_option(const char *key, int64_t def, double min, double max,
                                            const char *doc, uint32_t flags = 0,
                                            const char *unit = nullptr) {
  nwc_option_spec s{};
  s.key = key;
  s.type = NWC_OPT_INT;
  s.flags = flags;
  s.default_value.type = NWC_OPT_INT;
  s.default_value.u.i = def;
  s.min = min;
  s.max = max;
  s.unit = unit;
  s.doc = doc;
  return s;
}

inline constexpr nwc_option_spec float_option(const char *key, double def, double min, double max,
                                              const char *doc, uint32_t flags = 0,
                                              const char *unit = nullptr) {
  nwc_option_spec s{};
  s.key = key;
  s.type = NWC_OPT_FLOAT;
  s.flags = flags;
  s.default_value.type = NWC_OPT_FLOAT;
  s.default_value.u.f = def;
  s.min = min;
  s.max = max;
  s.unit = unit;
  s.doc = doc;
  return s;
}

inline constexpr nwc_option_spec bool_option(const char *key, bool def, const char *doc,
                                             uint32_t flags = 0) {
  nwc_option_spec s{};
  s.key = key;
  s.type = NWC_OPT_BOOL;
  s.flags = flags;
  s.default_value.type = NWC_OPT_BOOL;
  s.default_value.u.i = def ? 1 : 0;
  s.min = 1;
  s.max = 0;
  s.doc = doc;
  return s;
}

// choices must point to static storage.
inline constexpr nwc_option_spec enum_option(const char *key, const char *def,
                                             const char *const *choices, uint32_t choice_count,
                                             const char *doc, uint32_t flags = 0) {
  nwc_option_spec s{};
  s.key = key;
  s.type = NWC_OPT_ENUM;
  s.flags = flags;
  s.default_value.type = NWC_OPT_ENUM;
  s.default_value.u.s = def;
  s.min = 1;
  s.max = 0;
  s.choices = choices;
  s.choice_count = choice_count;
  s.doc = doc;
  return s;
}

inline constexpr nwc_option_spec string_option(const char *key, const char *def, const char *doc,
                                               uint32_t flags = 0, uint32_t type = NWC_OPT_STRING) {
  nwc_option_spec s{};
  s.key = key;
  s.type = type;
  s.flags = flags;
  s.default_value.type = type;
  s.default_value.u.s = def;
  s.min = 1;
  s.max = 0;
  s.doc = doc;
  return s;
}

// ---- parsed options -----------------------------------------------------------------------------

// The options of one instance: the schema's defaults overlaid with the values the host passed,
// checked again against the schema (the host validated them already; plugins never trust input).
class Options {
public:
  Options(const nwc_option_spec *specs, uint32_t spec_count, const nwc_options *given)
      : specs_(specs), count_(spec_count) {
    values_.resize(spec_count);
    strings_.resize(spec_count);
    int_lists_.resize(spec_count);
    float_lists_.resize(spec_count);
    for (uint32_t i = 0; i < spec_count; ++i) {
      if (!(specs[i].flags & NWC_OPTF_REQUIRED))
        set(i, specs[i].default_value);
      else
        values_[i].type = 0;
    }
    if (given) {
      for (uint32_t k = 0; k < given->count; ++k) {
        const nwc_option &opt = given->items[k];
        uint32_t i = index_of(opt.key ? opt.key : "");
        if (i == count_)
          fail(NWC_E_INVALID_OPTION,
               std::string("unknown option '") + (opt.key ? opt.key : "") + "'");
        check(specs_[i], opt.value);
        set(i, opt.value);
      }
    }
    for (uint32_t i = 0; i < spec_count; ++i)
      if (values_[i].type == 0)
        fail(NWC_E_INVALID_OPTION, std::string("option '") + specs[i].key + "' is required");
  }

  int64_t get_int(std::string_view key) const { return value(key, NWC_OPT_INT).u.i; }
  double get_float(std::string_view key) const { return value(key, NWC_OPT_FLOAT).u.f; }
  bool get_bool(std::string_view key) const { return value(key, NWC_OPT_BOOL).u.i != 0; }
  std::string get_string(std::string_view key) const {
    uint32_t i = find(key);
    return strings_[i];
  }

  // The resolved values, for get_options(); pointers stay valid while this object lives.
  const std::vector<nwc_option> &resolved() {
    resolved_.clear();
    for (uint32_t i = 0; i < count_; ++i)
      resolved_.push_back(nwc_option{specs_[i].key, values_[i]});
    return resolved_;
  }

private:
  uint32_t index_of(std::string_view key) const {
    for (uint32_t i = 0; i < count_; ++i)
      if (key == specs_[i].key) return i;
    return count_;
  }
  uint32_t find(std::string_view key) const {
    uint32_t i = index_of(key);
    if (i == count_)
      fail(NWC_E_INTERNAL, "plugin reads undeclared option '" + std::string(key) + "'");
    return i;
  }
  const nwc_value &value(std::string_view key, uint32_t type) const {
    uint32_t i = find(key);
    if (values_[i].type != type)
      fail(NWC_E_INTERNAL, "plugin reads option '" + std::string(key) + "' with the wrong type");
    return values_[i];
  }
  static bool bounded(const nwc_option_spec &s) { return s.min <= s.max; }
  static void check_range(const nwc_option_spec &s, double v) {
    if (bounded(s) && (v < s.min || v > s.max || std::isnan(v)))
      fail(NWC_E_INVALID_OPTION, std::string("option '") + s.key + "' = " + std::to_string(v) +
                                     " is outside [" + std::to_string(s.min) + ", " +
                                     std::to_string(s.max) + "]");
  }
  static void check(const nwc_option_spec &s, const nwc_value &v) {
    if (v.type != s.type)
      fail(NWC_E_INVALID_OPTION, std::string("option '") + s.key + "' has the wrong type");
    switch (s.type) {
    case NWC_OPT_INT:
      check_range(s, static_cast<double>(v.u.i));
      break;
    case NWC_OPT_FLOAT:
      check_range(s, v.u.f);
      break;
    case NWC_OPT_INT_LIST:
      for (uint32_t j = 0; j < v.count; ++j) check_range(s, static_cast<double>(v.u.il[j]));
      break;
    case NWC_OPT_FLOAT_LIST:
      for (uint32_t j = 0; j < v.count; ++j) check_range(s, v.u.fl[j]);
      break;
    case NWC_OPT_STRING:
    case NWC_OPT_PATH:
      if (!v.u.s) fail(NWC_E_INVALID_OPTION, std::string("option '") + s.key + "' is null");
      break;
    case NWC_OPT_ENUM: {
      if (!v.u.s) fail(NWC_E_INVALID_OPTION, std::string("option '") + s.key + "' is null");
      bool ok = false;
      for (uint32_t j = 0; j < s.choice_count; ++j)
        ok = ok || std::strcmp(v.u.s, s.choices[j]) == 0;
      if (!ok)
        fail(NWC_E_INVALID_OPTION,
             std::string("option '") + s.key + "' = '" + v.u.s + "' is not one of its choices");
      break;
    }
    default:
      break;
    }
  }
  void set(uint32_t i, const nwc_value &v) {
    values_[i] = v;
    switch (v.type) { // deep-copy borrowed payloads
    case NWC_OPT_STRING:
    case NWC_OPT_ENUM:
    case NWC_OPT_PATH:
      strings_[i] = v.u.s ? v.u.s : "";
      values_[i].u.s = strings_[i].c_str();
      break;
    case NWC_OPT_INT_LIST:
      int_lists_[i].assign(v.u.il, v.u.il + v.count);
      values_[i].u.il = int_lists_[i].data();
      break;
    case NWC_OPT_FLOAT_LIST:
      float_lists_[i].assign(v.u.fl, v.u.fl + v.count);
      values_[i].u.fl = float_lists_[i].data();
      break;
    default:
      break;
    }
  }

  const nwc_option_spec *specs_;
  uint32_t count_;
  std::vector<nwc_value> values_;
  std::vector<std::string> strings_;
  std::vector<std::vector<int64_t>> int_lists_;
  std::vector<std::vector<double>> float_lists_;
  std::vector<nwc_option> resolved_;
};

// ---- tensors, bytes, sinks ----------------------------------------------------------------------

template <class T> constexpr uint32_t dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return NWC_DTYPE_F32;
  else if constexpr (std::is_same_v<T, int32_t>)
    return NWC_DTYPE_I32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return NWC_DTYPE_I64;
  else if constexpr (std::is_same_v<T, int8_t>)
    return NWC_DTYPE_I8;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return NWC_DTYPE_U8;
  else
    static_assert(sizeof(T) == 0, "unsupported element type");
}

// A checked, contiguous, CPU 2-D view [rows, cols] (a 1-D view is [1, n]). T may be const.
template <class T> struct Matrix {
  T *data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;

  Matrix() = default;
  Matrix(T *d, int64_t r, int64_t c) : data(d), rows(r), cols(c) {}
  explicit Matrix(const nwc_tensor_view *v) {
    if (!v || v->ndim < 1 || v->ndim > 2)
      fail(NWC_E_INVALID_ARG, "expected a 1-D or 2-D tensor view");
    if (v->dtype != dtype_of<std::remove_const_t<T>>())
      fail(NWC_E_UNSUPPORTED_DTYPE, "tensor view has an unexpected dtype");
    if (v->device_type != NWC_DEVICE_CPU) fail(NWC_E_DEVICE, "expected a CPU tensor view");
    rows = v->ndim == 2 ? v->shape[0] : 1;
    cols = v->shape[v->ndim - 1];
    if (rows < 0 || cols < 0) fail(NWC_E_INVALID_ARG, "negative tensor shape");
    if (v->strides) {
      if (v->strides[v->ndim - 1] != 1 || (v->ndim == 2 && v->strides[0] != cols))
        fail(NWC_E_INVALID_ARG, "expected a contiguous tensor view");
    }
    data = reinterpret_cast<T *>(static_cast<unsigned char *>(v->data) + v->byte_offset);
  }
  int64_t size() const { return rows * cols; }
  T &operator()(int64_t r, int64_t c) const { return data[r * cols + c]; }
  T *row(int64_t r) const { return data + r * cols; }
};

template <class T> using ConstTensor = Matrix<const T>;
template <class T> using Tensor = Matrix<T>;

struct Bytes {
  const uint8_t *data = nullptr;
  size_t size = 0;
};

// Appends to a host sink; throws on failure.
class Sink {
public:
  explicit Sink(nwc_sink *s) : s_(s) {}
  void write(const void *data, size_t len) {
    if (!s_) fail(NWC_E_INVALID_ARG, "no output sink");
    nwc_status st = s_->write(s_, data, len);
    if (st != NWC_OK) fail(st, "output sink failed");
  }
  template <class T> void put(const T &v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write(&v, sizeof(T));
  }

private:
  nwc_sink *s_;
};

// Reads untrusted bytes with bounds checks; every overrun is NWC_E_CORRUPT_STREAM.
class Reader {
public:
  explicit Reader(Bytes b) : p_(b.data), end_(b.data + b.size) {}
  template <class T> T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    read(&v, sizeof(T));
    return v;
  }
  void read(void *out, size_t len) {
    if (static_cast<size_t>(end_ - p_) < len) fail(NWC_E_CORRUPT_STREAM, "stream is truncated");
    if (len) std::memcpy(out, p_, len);
    p_ += len;
  }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t *position() const { return p_; }
  void skip(size_t len) {
    if (remaining() < len) fail(NWC_E_CORRUPT_STREAM, "stream is truncated");
    p_ += len;
  }

private:
  const uint8_t *p_;
  const uint8_t *end_;
};

// ---- host access --------------------------------------------------------------------------------

class Host {
public:
  explicit Host(const nwc_host *h = nullptr) : h_(h) {}
  void log(int32_t level, const std::string &msg) const {
    if (h_ && h_->log) h_->log(h_, level, msg.c_str());
  }
  void warn(const std::string &msg) const { log(NWC_LOG_WARNING, msg); }
  void progress(uint64_t done, uint64_t total, const char *what) const {
    if (h_ && h_->progress) h_->progress(h_, done, total, what);
  }
  const nwc_host *raw() const { return h_; }

private:
  const nwc_host *h_;
};

// ---- stage bases --------------------------------------------------------------------------------

class Stage {
public:
  virtual ~Stage() = default;
  Host host;
};

struct BlockInfo {
  std::string_view tensor_name;
  int64_t rows = 0, cols = 0, col_begin = 0, col_end = 0;
  const float *row_scales = nullptr;     // [rows] or null (ABI 1.2)
  const uint8_t *chunk_levels = nullptr; // [chunk count] or null (ABI 1.2)
  const float *importance = nullptr;     // [n, m] like the quantizer's latents, or null (ABI 1.3)
  int64_t width() const { return col_end - col_begin; }
  static BlockInfo from(const nwc_block_info *b) {
    if (!b) fail(NWC_E_INVALID_ARG, "missing block info");
    BlockInfo info;
    info.tensor_name = b->tensor_name ? b->tensor_name : "";
    info.rows = b->rows;
    info.cols = b->cols;
    info.col_begin = b->col_begin;
    info.col_end = b->col_end;
    if (b->struct_size >= offsetof(nwc_block_info, chunk_levels) + sizeof(b->chunk_levels)) {
      info.row_scales = b->row_scales;
      info.chunk_levels = b->chunk_levels;
    }
    if (b->struct_size >= offsetof(nwc_block_info, importance) + sizeof(b->importance))
      info.importance = b->importance;
    if (info.rows < 0 || info.col_begin < 0 || info.col_end < info.col_begin ||
        info.col_end > info.cols)
      fail(NWC_E_INVALID_ARG, "inconsistent block info");
    return info;
  }
};

// Checks that the view called `what` of block b is [rows, cols] = [want_rows, want_cols]; fails
// with NWC_E_INVALID_ARG otherwise: "tensor 'T': <what> are [r, c], expected [R, C]", or with
// `against` (what the expected shape comes from) "..., <against> are [R, C]".
inline void require_shape(const BlockInfo &b, const char *what, int64_t rows, int64_t cols,
                          int64_t want_rows, int64_t want_cols, const char *against = nullptr) {
  if (rows == want_rows && cols == want_cols) return;
  fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': " + what + " are [" +
                              std::to_string(rows) + ", " + std::to_string(cols) + "], " +
                              (against ? std::string(against) + " are [" : "expected [") +
                              std::to_string(want_rows) + ", " + std::to_string(want_cols) + "]");
}

class Chunker : public Stage {
public:
  static constexpr uint32_t kind = NWC_KIND_CHUNKER;
  virtual nwc_chunk_geometry plan(const BlockInfo &block) = 0;
  virtual void split(const BlockInfo &block, ConstTensor<float> values, Tensor<float> chunks,
                     Sink &side) = 0;
  virtual void merge(const BlockInfo &block, ConstTensor<float> chunks, Bytes side,
                     Tensor<float> values) = 0;
  // ABI 1.2 hooks, exported only when the plugin sets the flag (see chunker.h).
  static constexpr bool has_row_scales = false;
  static constexpr bool has_chunk_columns = false;
  // Row scales of the whole tensor; returns the storage dtype (0 = this instance scales nothing).
  virtual uint32_t row_scales(const BlockInfo &, ConstTensor<float>, Tensor<float>) { return 0; }
  virtual void chunk_columns(const BlockInfo &, Tensor<int64_t>) {
    fail(NWC_E_INVALID_ARG, "this chunker cannot map chunks to columns");
  }

protected:
  // The views of a split or merge: values [rows, width] of the block, chunks [count, length] of
  // its plan; NWC_E_INVALID_ARG naming the tensor otherwise.
  static void require_views(const BlockInfo &b, const nwc_chunk_geometry &geo, int64_t value_rows,
                            int64_t value_cols, int64_t chunk_rows, int64_t chunk_cols) {
    require_shape(b, "values", value_rows, value_cols, b.rows, b.width());
    require_shape(b, "chunks", chunk_rows, chunk_cols, geo.count, geo.length);
  }
};

class Transform : public Stage {
public:
  static constexpr uint32_t kind = NWC_KIND_TRANSFORM;
  virtual int64_t latent_length(int64_t chunk_length) = 0;
  virtual void forward(const BlockInfo &block, ConstTensor<float> chunks,
                       Tensor<float> latents) = 0;
  virtual void inverse(const BlockInfo &block, ConstTensor<float> latents,
                       Tensor<float> chunks) = 0;
  virtual const nwc_cdf_model *probability_model() { return nullptr; }
};

class Quantizer : public Stage {
public:
  static constexpr uint32_t kind = NWC_KIND_QUANTIZER;
  // Set to true in a quantizer that implements quantize_fitted (ABI 1.1).
  static constexpr bool supports_fitted = false;
  virtual void quantize(const BlockInfo &block, ConstTensor<float> latents, Tensor<int32_t> symbols,
                        Tensor<float> dequantized, Sink &side) = 0;
  virtual void dequantize(const BlockInfo &block, ConstTensor<int32_t> symbols, Bytes side,
                          Tensor<float> latents) = 0;
  // Side parameters fitted on reference, latents coded with them (see quantizer.h).
  virtual void quantize_fitted(const BlockInfo &, ConstTensor<float>, ConstTensor<float>,
                               Tensor<int32_t>, Tensor<float>, Sink &) {
    fail(NWC_E_INVALID_ARG, "this quantizer cannot fit its parameters on reference values");
  }
  // Set to true in a quantizer that implements export_native (ABI 1.5).
  static constexpr bool supports_native = false;
  // The storage format export_native writes: names of fewer than 16 bytes.
  struct NativeLayout {
    std::string format, type;
    uint64_t values_per_block = 0, bytes_per_block = 0;
  };
  // The block's codes as native blocks of another runtime's format (see quantizer.h).
  virtual NativeLayout export_native(const BlockInfo &, ConstTensor<int32_t>, Bytes, Sink &) {
    fail(NWC_E_UNSUPPORTED_SHAPE, "this quantizer has no native block format");
  }
};

class EntropyCoder : public Stage {
public:
  static constexpr uint32_t kind = NWC_KIND_ENTROPY_CODER;
  virtual void encode(ConstTensor<int32_t> symbols, const nwc_cdf_model *model, Sink &out) = 0;
  virtual void decode(Bytes stream, const nwc_cdf_model *model, Tensor<int32_t> symbols) = 0;
};

class Rotation : public Stage {
public:
  static constexpr uint32_t kind = NWC_KIND_ROTATION;
  // Chooses the transform of tensor_name ([rows, cols]) and writes what the decoder needs to
  // rebuild it to side. hessian: F32 [cols, cols], or null without calibration.
  virtual void plan(std::string_view tensor_name, int64_t rows, int64_t cols,
                    const nwc_tensor_view *hessian, Sink &side) = 0;
  // weight [rows, cols] -> U · weight · Vᵀ, in place.
  virtual void forward(Bytes side, Tensor<float> weight) = 0;
  // hessian [cols, cols] -> V · hessian · Vᵀ, in place.
  virtual void forward_hessian(Bytes side, Tensor<float> hessian) = 0;
  // weight [rows, cols] -> Uᵀ · weight · V, in place; side is untrusted (NWC_E_CORRUPT_STREAM).
  virtual void inverse(Bytes side, Tensor<float> weight) = 0;
};

class Compensator : public Stage {
public:
  static constexpr uint32_t kind = NWC_KIND_COMPENSATOR;
  virtual uint32_t requirements() const { return 0; }
  virtual void compensate(std::string_view tensor_name, ConstTensor<float> weight,
                          const nwc_tensor_view *hessian, nwc_block_codec &codec) = 0;
};

// Calls the host's block codec on columns [begin, end) of values (F32 [rows, width]).
inline void encode_block(nwc_block_codec &codec, int64_t begin, int64_t end,
                         ConstTensor<float> values, Tensor<float> reconstruction) {
  int64_t shape[2] = {values.rows, values.cols};
  nwc_tensor_view in{
      const_cast<float *>(values.data), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view out{reconstruction.data, 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_status st = codec.encode(&codec, begin, end, &in, &out);
  if (st != NWC_OK)
    fail(st, "block codec failed on columns [" + std::to_string(begin) + ", " +
                 std::to_string(end) + ")");
}

// The same with fit values and flags (ABI 1.1): fit may be empty (data == nullptr) to fit on
// values; NWC_BLOCK_DRY_RUN computes the reconstruction without committing the block.
inline void encode_block_ex(nwc_block_codec &codec, int64_t begin, int64_t end,
                            ConstTensor<float> values, ConstTensor<float> fit, uint32_t flags,
                            Tensor<float> reconstruction) {
  if (codec.struct_size < sizeof(nwc_block_codec) || !codec.encode_ex)
    fail(NWC_E_VERSION, "the host's block codec predates ABI 1.1 (no encode_ex)");
  int64_t shape[2] = {values.rows, values.cols};
  nwc_tensor_view in{
      const_cast<float *>(values.data), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view ref{
      const_cast<float *>(fit.data), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view out{reconstruction.data, 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_status st = codec.encode_ex(&codec, begin, end, &in, fit.data ? &ref : nullptr, flags, &out);
  if (st != NWC_OK)
    fail(st, "block codec failed on columns [" + std::to_string(begin) + ", " +
                 std::to_string(end) + ")");
}

} // namespace nwc

// ---- the ABI side: instance, trampolines, module ------------------------------------------------

struct nwc_instance {
  std::unique_ptr<nwc::Stage> stage;
  std::unique_ptr<nwc::Options> options;
  std::string last_error;
};

namespace nwc::detail {

inline nwc_status report(nwc_instance *inst, const nwc_host *host) noexcept {
  std::string msg;
  nwc_status code = NWC_E_INTERNAL;
  try {
    throw;
  } catch (const Error &e) {
    code = e.code();
    msg = e.what();
  } catch (const std::bad_alloc &) {
    code = NWC_E_NOMEM;
    msg = "out of memory";
  } catch (const std::exception &e) {
    msg = std::string("internal error: ") + e.what();
  } catch (...) {
    msg = "internal error: unknown exception";
  }
  try {
    if (inst) inst->last_error = msg;
    if (host && host->log) host->log(host, NWC_LOG_ERROR, msg.c_str());
  } catch (...) {
  }
  return code;
}

template <class F> nwc_status guarded(nwc_instance *inst, F &&f) noexcept {
  if (!inst) return NWC_E_INVALID_ARG;
  try {
    inst->last_error.clear();
    f();
    return NWC_OK;
  } catch (...) {
    return report(inst, nullptr);
  }
}

template <class P> P &self(nwc_instance *inst) {
  return static_cast<P &>(*inst->stage);
}

template <class P> struct Trampolines {
  static nwc_status create(const nwc_host *host, const nwc_options *opts, nwc_instance **out) {
    if (!out) return NWC_E_INVALID_ARG;
    *out = nullptr;
    std::unique_ptr<nwc_instance> inst;
    try {
      inst = std::make_unique<nwc_instance>();
      inst->options = std::make_unique<Options>(P::options, P::option_count, opts);
      auto stage = std::make_unique<P>(*inst->options);
      stage->host = Host(host);
      inst->stage = std::move(stage);
    } catch (...) {
      nwc_status st = report(nullptr, host);
      return st;
    }
    *out = inst.release();
    return NWC_OK;
  }
  static void destroy(nwc_instance *inst) { delete inst; }
  static nwc_status get_options(nwc_instance *inst, nwc_options *out) {
    return guarded(inst, [&] {
      if (!out) fail(NWC_E_INVALID_ARG, "null output");
      const auto &r = inst->options->resolved();
      out->struct_size = sizeof(nwc_options);
      out->count = static_cast<uint32_t>(r.size());
      out->items = r.data();
    });
  }
  static const char *last_error(const nwc_instance *inst) {
    return inst ? inst->last_error.c_str() : "null instance";
  }

  // per-kind tables
  static nwc_status plan(nwc_instance *i, const nwc_block_info *b, nwc_chunk_geometry *out) {
    return guarded(i, [&] {
      if (!out) fail(NWC_E_INVALID_ARG, "null output");
      *out = self<P>(i).plan(BlockInfo::from(b));
    });
  }
  static nwc_status split(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *v,
                          nwc_tensor_view *c, nwc_sink *side) {
    return guarded(i, [&] {
      Sink s(side);
      self<P>(i).split(BlockInfo::from(b), ConstTensor<float>(v), Tensor<float>(c), s);
    });
  }
  static nwc_status merge(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *c,
                          nwc_bytes side, nwc_tensor_view *v) {
    return guarded(i, [&] {
      self<P>(i).merge(BlockInfo::from(b), ConstTensor<float>(c), Bytes{side.data, side.size},
                       Tensor<float>(v));
    });
  }
  static nwc_status row_scales(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *w,
                               nwc_tensor_view *scales, uint32_t *dtype) {
    return guarded(i, [&] {
      if (!dtype) fail(NWC_E_INVALID_ARG, "null output");
      *dtype =
          self<P>(i).row_scales(BlockInfo::from(b), ConstTensor<float>(w), Tensor<float>(scales));
    });
  }
  static nwc_status chunk_columns(nwc_instance *i, const nwc_block_info *b, nwc_tensor_view *c) {
    return guarded(i, [&] { self<P>(i).chunk_columns(BlockInfo::from(b), Tensor<int64_t>(c)); });
  }
  static nwc_status latent_length(nwc_instance *i, int64_t chunk, int64_t *out) {
    return guarded(i, [&] {
      if (!out) fail(NWC_E_INVALID_ARG, "null output");
      *out = self<P>(i).latent_length(chunk);
    });
  }
  static nwc_status forward(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *c,
                            nwc_tensor_view *l) {
    return guarded(i, [&] {
      self<P>(i).forward(BlockInfo::from(b), ConstTensor<float>(c), Tensor<float>(l));
    });
  }
  static nwc_status inverse(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *l,
                            nwc_tensor_view *c) {
    return guarded(i, [&] {
      self<P>(i).inverse(BlockInfo::from(b), ConstTensor<float>(l), Tensor<float>(c));
    });
  }
  static const nwc_cdf_model *probability_model(nwc_instance *i) {
    try {
      return i ? self<P>(i).probability_model() : nullptr;
    } catch (...) {
      report(i, nullptr);
      return nullptr;
    }
  }
  static nwc_status quantize(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *l,
                             nwc_tensor_view *s, nwc_tensor_view *d, nwc_sink *side) {
    return guarded(i, [&] {
      Sink sk(side);
      self<P>(i).quantize(BlockInfo::from(b), ConstTensor<float>(l), Tensor<int32_t>(s),
                          Tensor<float>(d), sk);
    });
  }
  static nwc_status dequantize(nwc_instance *i, const nwc_block_info *b, const nwc_tensor_view *s,
                               nwc_bytes side, nwc_tensor_view *l) {
    return guarded(i, [&] {
      self<P>(i).dequantize(BlockInfo::from(b), ConstTensor<int32_t>(s),
                            Bytes{side.data, side.size}, Tensor<float>(l));
    });
  }
  static nwc_status quantize_fitted(nwc_instance *i, const nwc_block_info *b,
                                    const nwc_tensor_view *l, const nwc_tensor_view *ref,
                                    nwc_tensor_view *s, nwc_tensor_view *d, nwc_sink *side) {
    return guarded(i, [&] {
      Sink sk(side);
      self<P>(i).quantize_fitted(BlockInfo::from(b), ConstTensor<float>(l), ConstTensor<float>(ref),
                                 Tensor<int32_t>(s), Tensor<float>(d), sk);
    });
  }
  static nwc_status export_native(nwc_instance *i, const nwc_block_info *b,
                                  const nwc_tensor_view *s, nwc_bytes side,
                                  nwc_native_layout *layout, nwc_sink *out) {
    return guarded(i, [&] {
      if (!layout || layout->struct_size < sizeof(nwc_native_layout))
        fail(NWC_E_INVALID_ARG, "native layout missing or too small");
      Sink sk(out);
      const Quantizer::NativeLayout l = self<P>(i).export_native(
          BlockInfo::from(b), ConstTensor<int32_t>(s), Bytes{side.data, side.size}, sk);
      if (l.format.size() >= sizeof(layout->format) || l.type.size() >= sizeof(layout->type))
        fail(NWC_E_INTERNAL, "native format or type name longer than 15 bytes");
      std::memset(layout->format, 0, sizeof(layout->format));
      std::memset(layout->type, 0, sizeof(layout->type));
      std::memcpy(layout->format, l.format.data(), l.format.size());
      std::memcpy(layout->type, l.type.data(), l.type.size());
      layout->values_per_block = l.values_per_block;
      layout->bytes_per_block = l.bytes_per_block;
    });
  }
  static nwc_status encode(nwc_instance *i, const nwc_tensor_view *s, const nwc_cdf_model *m,
                           nwc_sink *out) {
    return guarded(i, [&] {
      Sink sk(out);
      self<P>(i).encode(ConstTensor<int32_t>(s), m, sk);
    });
  }
  static nwc_status decode(nwc_instance *i, nwc_bytes in, const nwc_cdf_model *m,
                           nwc_tensor_view *s) {
    return guarded(i, [&] { self<P>(i).decode(Bytes{in.data, in.size}, m, Tensor<int32_t>(s)); });
  }
  static uint32_t requirements(const nwc_instance *i) {
    try {
      return i ? static_cast<const P &>(*i->stage).requirements() : 0u;
    } catch (...) {
      return 0u;
    }
  }
  static nwc_status compensate(nwc_instance *i, const char *name, const nwc_tensor_view *w,
                               const nwc_tensor_view *h, nwc_block_codec *codec) {
    return guarded(i, [&] {
      if (!codec) fail(NWC_E_INVALID_ARG, "null block codec");
      self<P>(i).compensate(name ? name : "", ConstTensor<float>(w), h, *codec);
    });
  }

  static nwc_status rotation_plan(nwc_instance *i, const char *name, int64_t rows, int64_t cols,
                                  const nwc_tensor_view *h, nwc_sink *side) {
    return guarded(i, [&] {
      if (rows < 0 || cols < 0) fail(NWC_E_INVALID_ARG, "negative tensor shape");
      Sink sk(side);
      self<P>(i).plan(name ? name : "", rows, cols, h, sk);
    });
  }
  static nwc_status rotation_forward(nwc_instance *i, nwc_bytes side, nwc_tensor_view *w) {
    return guarded(i, [&] { self<P>(i).forward(Bytes{side.data, side.size}, Tensor<float>(w)); });
  }
  static nwc_status rotation_forward_hessian(nwc_instance *i, nwc_bytes side, nwc_tensor_view *h) {
    return guarded(i, [&] {
      Tensor<float> t(h);
      if (t.rows != t.cols) fail(NWC_E_INVALID_ARG, "the Hessian is not square");
      self<P>(i).forward_hessian(Bytes{side.data, side.size}, t);
    });
  }
  static nwc_status rotation_inverse(nwc_instance *i, nwc_bytes side, nwc_tensor_view *w) {
    return guarded(i, [&] { self<P>(i).inverse(Bytes{side.data, side.size}, Tensor<float>(w)); });
  }

  static const void *get_interface(const nwc_instance *, const char *id) {
    if (!id) return nullptr;
    std::string_view want(id);
    if constexpr (std::is_base_of_v<Chunker, P>) {
      static const nwc_chunker_interface t{sizeof(t),
                                           0,
                                           plan,
                                           split,
                                           merge,
                                           P::has_row_scales ? row_scales : nullptr,
                                           P::has_chunk_columns ? chunk_columns : nullptr};
      if (want == NWC_CHUNKER_INTERFACE) return &t;
    } else if constexpr (std::is_base_of_v<Transform, P>) {
      static const nwc_transform_interface t{sizeof(t), 0,       latent_length,
                                             forward,   inverse, probability_model};
      if (want == NWC_TRANSFORM_INTERFACE) return &t;
    } else if constexpr (std::is_base_of_v<Quantizer, P>) {
      static const nwc_quantizer_interface t{sizeof(t),
                                             0,
                                             quantize,
                                             dequantize,
                                             P::supports_fitted ? quantize_fitted : nullptr,
                                             P::supports_native ? export_native : nullptr};
      if (want == NWC_QUANTIZER_INTERFACE) return &t;
    } else if constexpr (std::is_base_of_v<EntropyCoder, P>) {
      static const nwc_entropy_interface t{sizeof(t), 0, encode, decode};
      if (want == NWC_ENTROPY_INTERFACE) return &t;
    } else if constexpr (std::is_base_of_v<Compensator, P>) {
      static const nwc_compensator_interface t{sizeof(t), 0, requirements, compensate};
      if (want == NWC_COMPENSATOR_INTERFACE) return &t;
    } else if constexpr (std::is_base_of_v<Rotation, P>) {
      static const nwc_rotation_interface t{
          sizeof(t),       0, rotation_plan, rotation_forward, rotation_forward_hessian,
          rotation_inverse};
      if (want == NWC_ROTATION_INTERFACE) return &t;
    }
    return nullptr;
  }

  static const nwc_plugin_descriptor *descriptor() {
    static const nwc_plugin_descriptor d{sizeof(nwc_plugin_descriptor),
                                         NWC_PLUGIN_ABI_VERSION,
                                         P::kind,
                                         P::flags,
                                         P::id,
                                         P::version,
                                         P::stream_version,
                                         P::option_count,
                                         P::name,
                                         P::description,
                                         P::options};
    return &d;
  }
  static const nwc_plugin_vtable *vtable() {
    static const nwc_plugin_vtable v{
        sizeof(nwc_plugin_vtable), 0, create, destroy, get_options, get_interface, last_error};
    return &v;
  }
};

template <class... Ps> struct Module {
  static inline int init_count = 0;
  static nwc_status init(const nwc_host *) {
    ++init_count;
    return NWC_OK;
  }
  static void deinit() {
    if (init_count > 0) --init_count;
  }
  static uint32_t count() { return static_cast<uint32_t>(sizeof...(Ps)); }
  static const nwc_plugin_descriptor *descriptor(uint32_t i) {
    const nwc_plugin_descriptor *all[] = {Trampolines<Ps>::descriptor()...};
    return i < sizeof...(Ps) ? all[i] : nullptr;
  }
  static const nwc_plugin_vtable *vtable(uint32_t i) {
    const nwc_plugin_vtable *all[] = {Trampolines<Ps>::vtable()...};
    return i < sizeof...(Ps) ? all[i] : nullptr;
  }
  static const nwc_module *entry(uint32_t host_abi) {
    if (NWC_ABI_MAJOR(host_abi) != NWC_ABI_MAJOR(NWC_PLUGIN_ABI_VERSION)) return nullptr;
    static const nwc_module m{
        sizeof(nwc_module), NWC_PLUGIN_ABI_VERSION, init, deinit, count, descriptor, vtable};
    return &m;
  }
};

} // namespace nwc::detail

// Declares a plugin's option table: NWC_OPTIONS(nwc::int_option(...), ...). Use NWC_NO_OPTIONS
// for a plugin without options.
#define NWC_OPTIONS(...)                                                                           \
  static inline const nwc_option_spec options[] = {__VA_ARGS__};                                   \
  static constexpr uint32_t option_count =                                                         \
      static_cast<uint32_t>(sizeof(options) / sizeof(nwc_option_spec))
#define NWC_NO_OPTIONS                                                                             \
  static inline const nwc_option_spec *const options = nullptr;                                    \
  static constexpr uint32_t option_count = 0

// Emits nwc_module_entry for the listed plugin classes. Use once per shared library.
#define NWC_MODULE(...)                                                                            \
  extern "C" NWC_EXPORT const nwc_module *nwc_module_entry(uint32_t host_abi_version) {            \
    return ::nwc::detail::Module<__VA_ARGS__>::entry(host_abi_version);                            \
  }
