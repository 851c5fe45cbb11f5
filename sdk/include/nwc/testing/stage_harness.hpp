// nwc/testing/stage_harness.hpp — drives one plugin through its real C ABI, for tests that compile
// the plugin's sources into the test executable (so nwc_module_entry is defined there): find the
// descriptor, create an instance with options, reach its per-kind interface, and pass it tensor
// views and vector-backed sinks. Installed with the SDK for plugins built out of tree; header-only,
// no test framework: the check_* helpers return "" or what went wrong, for any framework's CHECK.
//
//   #include "nwc/testing/stage_harness.hpp"
//   nwc::test::Instance q("com.example.quant.x", {nwc::test::opt_int("bits", 4)});
//   assert(q.ok());
//   assert(nwc::test::check_quantizer(q, values, rows, cols) == "");
//   nwc::test::Instance e("com.example.entropy.y");
//   assert(nwc::test::check_entropy_coder(e, symbols) == "");
//   nwc::test::Instance r("com.example.rotation.z");
//   assert(nwc::test::check_rotation(r, weight, rows, cols, &hessian) == "");
//   nwc::test::Instance c("com.example.chunk.w");
//   nwc::test::Block block("t", rows, cols, 0, cols);
//   assert(nwc::test::check_chunker(c, block, values) == "");
//   nwc::test::Instance t("com.example.transform.v");
//   assert(nwc::test::check_transform(t, block, chunks, n, length) == "");
//   nwc::test::Instance k("com.example.comp.u");
//   assert(nwc::test::check_compensator(k, weight, rows, cols, &hessian) == "");
#pragma once

#include "nwc/nwc.h"

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace nwc::test {

// Option values; string payloads must outlive the create() call (literals are fine).
inline nwc_option opt_int(const char *key, int64_t v) {
  nwc_option o{};
  o.key = key;
  o.value.type = NWC_OPT_INT;
  o.value.u.i = v;
  return o;
}
inline nwc_option opt_float(const char *key, double v) {
  nwc_option o{};
  o.key = key;
  o.value.type = NWC_OPT_FLOAT;
  o.value.u.f = v;
  return o;
}
inline nwc_option opt_bool(const char *key, bool v) {
  nwc_option o{};
  o.key = key;
  o.value.type = NWC_OPT_BOOL;
  o.value.u.i = v ? 1 : 0;
  return o;
}
inline nwc_option opt_enum(const char *key, const char *v) {
  nwc_option o{};
  o.key = key;
  o.value.type = NWC_OPT_ENUM;
  o.value.u.s = v;
  return o;
}

// A host whose log() keeps the messages, so tests can check what create() reported.
struct TestHost {
  nwc_host host{};
  std::vector<std::string> messages;
  TestHost() {
    host.struct_size = sizeof(nwc_host);
    host.abi_version = NWC_ABI_VERSION;
    host.host_data = this;
    host.log = [](const nwc_host *h, int32_t, const char *msg) {
      static_cast<TestHost *>(h->host_data)->messages.emplace_back(msg ? msg : "");
    };
  }
  TestHost(const TestHost &) = delete;
  TestHost &operator=(const TestHost &) = delete;
  std::string last() const { return messages.empty() ? std::string() : messages.back(); }
};

// The descriptor and vtable of the plugin with this id in the module linked into the test.
struct PluginRef {
  const nwc_plugin_descriptor *descriptor = nullptr;
  const nwc_plugin_vtable *vtable = nullptr;
};
inline PluginRef find_plugin(const char *id) {
  const nwc_module *m = nwc_module_entry(NWC_ABI_VERSION);
  if (!m) throw std::runtime_error("nwc_module_entry refused the ABI version");
  for (uint32_t i = 0; i < m->plugin_count(); ++i) {
    const nwc_plugin_descriptor *d = m->descriptor(i);
    if (d && d->id && std::strcmp(d->id, id) == 0) return {d, m->vtable(i)};
  }
  throw std::runtime_error(std::string("plugin not found in module: ") + id);
}

// One plugin instance; destroyed with the object. status is what create() returned.
class Instance {
public:
  Instance(const char *id, const std::vector<nwc_option> &opts = {}) : plugin_(find_plugin(id)) {
    nwc_options o{sizeof(nwc_options), static_cast<uint32_t>(opts.size()), opts.data()};
    status = plugin_.vtable->create(&host.host, &o, &inst_);
  }
  ~Instance() { plugin_.vtable->destroy(inst_); }
  Instance(const Instance &) = delete;
  Instance &operator=(const Instance &) = delete;

  bool ok() const { return status == NWC_OK && inst_ != nullptr; }
  nwc_instance *get() const { return inst_; }
  const nwc_plugin_descriptor &descriptor() const { return *plugin_.descriptor; }
  std::string last_error() const { return plugin_.vtable->last_error(inst_); }
  template <class Iface> const Iface *iface(const char *interface_id) const {
    return static_cast<const Iface *>(plugin_.vtable->get_interface(inst_, interface_id));
  }

  TestHost host;
  nwc_status status = NWC_E_INTERNAL;

private:
  PluginRef plugin_;
  nwc_instance *inst_ = nullptr;
};

// An nwc_sink appending to a vector; fail_after makes write() fail once that many bytes are in.
struct VecSink {
  nwc_sink sink{};
  std::vector<uint8_t> bytes;
  size_t fail_after = static_cast<size_t>(-1);
  VecSink() {
    sink.ctx = this;
    sink.write = [](nwc_sink *s, const void *data, size_t len) -> nwc_status {
      auto *self = static_cast<VecSink *>(s->ctx);
      if (self->bytes.size() + len > self->fail_after) return NWC_E_IO;
      const auto *p = static_cast<const uint8_t *>(data);
      self->bytes.insert(self->bytes.end(), p, p + len);
      return NWC_OK;
    };
  }
  VecSink(const VecSink &) = delete;
  VecSink &operator=(const VecSink &) = delete;
  nwc_sink *get() { return &sink; }
  nwc_bytes view() const { return nwc_bytes{bytes.data(), bytes.size()}; }
};

template <class T> constexpr uint32_t view_dtype() {
  if constexpr (std::is_same_v<T, float>)
    return NWC_DTYPE_F32;
  else if constexpr (std::is_same_v<T, int32_t>)
    return NWC_DTYPE_I32;
  else
    static_assert(sizeof(T) == 0, "unsupported element type");
}

// A contiguous CPU 2-D view [rows, cols] over borrowed memory (the view keeps its shape array).
struct View {
  int64_t shape[2] = {0, 0};
  nwc_tensor_view view{};
  template <class T> View(T *data, int64_t rows, int64_t cols) {
    shape[0] = rows;
    shape[1] = cols;
    view.data = const_cast<std::remove_const_t<T> *>(data);
    view.byte_offset = 0;
    view.dtype = view_dtype<std::remove_const_t<T>>();
    view.device_type = NWC_DEVICE_CPU;
    view.device_id = 0;
    view.ndim = 2;
    view.shape = shape;
    view.strides = nullptr;
  }
  View(const View &) = delete;
  View &operator=(const View &) = delete;
  nwc_tensor_view *get() { return &view; }
};

// Block info for columns [col_begin, col_end) of a [rows, cols] tensor.
struct Block {
  std::string name;
  nwc_block_info info{};
  Block(std::string tensor_name, int64_t rows, int64_t cols, int64_t col_begin, int64_t col_end)
      : name(std::move(tensor_name)) {
    info.struct_size = sizeof(nwc_block_info);
    info.tensor_name = name.c_str();
    info.rows = rows;
    info.cols = cols;
    info.col_begin = col_begin;
    info.col_end = col_end;
  }
  Block(const Block &) = delete;
  Block &operator=(const Block &) = delete;
  const nwc_block_info *get() const { return &info; }
};

// Entropy coder round trip through nwc.entropy/1: symbols coded as a [1, n] view.
inline nwc_status entropy_encode(Instance &inst, const std::vector<int32_t> &symbols,
                                 std::vector<uint8_t> &stream) {
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  if (!e) throw std::runtime_error("instance does not serve " NWC_ENTROPY_INTERFACE);
  View in(symbols.data(), 1, static_cast<int64_t>(symbols.size()));
  VecSink out;
  nwc_status st = e->encode(inst.get(), in.get(), nullptr, out.get());
  stream = std::move(out.bytes);
  return st;
}
// Decodes stream into symbols, whose size is the expected count.
inline nwc_status entropy_decode(Instance &inst, const uint8_t *data, size_t size,
                                 std::vector<int32_t> &symbols) {
  const auto *e = inst.iface<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  if (!e) throw std::runtime_error("instance does not serve " NWC_ENTROPY_INTERFACE);
  View out(symbols.data(), 1, static_cast<int64_t>(symbols.size()));
  return e->decode(inst.get(), nwc_bytes{data, size}, nullptr, out.get());
}
inline nwc_status entropy_decode(Instance &inst, const std::vector<uint8_t> &stream,
                                 std::vector<int32_t> &symbols) {
  return entropy_decode(inst, stream.data(), stream.size(), symbols);
}

// ---- ABI 1.2 chunker hooks ----------------------------------------------------------------------

// A contiguous CPU 1-D view [n] over borrowed F32 or I64 memory (row scales, chunk columns).
struct View1D {
  int64_t shape[1] = {0};
  nwc_tensor_view view{};
  View1D(float *data, int64_t n) { init(data, NWC_DTYPE_F32, n); }
  View1D(int64_t *data, int64_t n) { init(data, NWC_DTYPE_I64, n); }
  View1D(const View1D &) = delete;
  View1D &operator=(const View1D &) = delete;
  nwc_tensor_view *get() { return &view; }

private:
  void init(void *data, uint32_t dtype, int64_t n) {
    shape[0] = n;
    view.data = data;
    view.dtype = dtype;
    view.device_type = NWC_DEVICE_CPU;
    view.ndim = 1;
    view.shape = shape;
    view.strides = nullptr;
  }
};

// The tensor-level values a 1.2 host passes with every block (borrowed; either may be null).
inline void set_tensor_side(Block &block, const float *row_scales,
                            const uint8_t *chunk_levels = nullptr) {
  block.info.row_scales = row_scales;
  block.info.chunk_levels = chunk_levels;
}

inline const nwc_chunker_interface &chunker_interface(Instance &inst) {
  const auto *c = inst.iface<nwc_chunker_interface>(NWC_CHUNKER_INTERFACE);
  if (!c) throw std::runtime_error("instance does not serve " NWC_CHUNKER_INTERFACE);
  return *c;
}

// Calls row_scales() on the whole tensor weight (F32 [rows, cols], row-major); scales is resized
// to rows. Throws when the chunker does not provide the hook.
inline nwc_status chunker_row_scales(Instance &inst, const Block &block,
                                     const std::vector<float> &weight, std::vector<float> &scales,
                                     uint32_t &storage_dtype) {
  const auto &c = chunker_interface(inst);
  if (c.struct_size < sizeof(nwc_chunker_interface) || !c.row_scales)
    throw std::runtime_error("chunker does not provide row_scales (ABI 1.2)");
  scales.assign(static_cast<size_t>(block.info.rows), -1.0f);
  View w(weight.data(), block.info.rows, block.info.cols);
  View1D s(scales.data(), block.info.rows);
  storage_dtype = 0xffffffffu;
  return c.row_scales(inst.get(), block.get(), w.get(), s.get(), &storage_dtype);
}

// Calls chunk_columns() for a block with count chunks; columns is resized to count. Throws when
// the chunker does not provide the hook.
inline nwc_status chunker_chunk_columns(Instance &inst, const Block &block, int64_t count,
                                        std::vector<int64_t> &columns) {
  const auto &c = chunker_interface(inst);
  if (c.struct_size < sizeof(nwc_chunker_interface) || !c.chunk_columns)
    throw std::runtime_error("chunker does not provide chunk_columns (ABI 1.2)");
  columns.assign(static_cast<size_t>(count), -2);
  View1D v(columns.data(), count);
  return c.chunk_columns(inst.get(), block.get(), v.get());
}

// ---- Checks every plugin of a kind must pass
// -----------------------------------------------------

// A quantizer's outputs for values [n, m] (block: the whole tensor "layers.0.weight").
struct QuantizerOutput {
  nwc_status status = NWC_E_INTERNAL;
  std::vector<int32_t> symbols;
  std::vector<float> dequantized;
  std::vector<uint8_t> side;
};

inline const nwc_quantizer_interface &quantizer_interface(Instance &inst) {
  const auto *q = inst.iface<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  if (!q) throw std::runtime_error("instance does not serve " NWC_QUANTIZER_INTERFACE);
  return *q;
}

// quantize through the C ABI on values [n, m] of a block covering tensor `tensor`. Outputs start
// as INT32_MIN and NaN, so that an element the quantizer never writes shows.
inline QuantizerOutput run_quantize(Instance &inst, const std::vector<float> &values, int64_t n,
                                    int64_t m, const char *tensor = "layers.0.weight") {
  QuantizerOutput out;
  out.symbols.assign(values.size(), INT32_MIN);
  out.dequantized.assign(values.size(), std::nanf(""));
  Block block(tensor, n, m, 0, m);
  View in(values.data(), n, m), sym(out.symbols.data(), n, m), dq(out.dequantized.data(), n, m);
  VecSink side;
  out.status = quantizer_interface(inst).quantize(inst.get(), block.get(), in.get(), sym.get(),
                                                  dq.get(), side.get());
  out.side = std::move(side.bytes);
  return out;
}

// dequantize through the C ABI; values start as NaN.
inline nwc_status run_dequantize(Instance &inst, const std::vector<int32_t> &symbols,
                                 const uint8_t *side, size_t side_size, int64_t n, int64_t m,
                                 std::vector<float> &values,
                                 const char *tensor = "layers.0.weight") {
  values.assign(static_cast<size_t>(n * m), std::nanf(""));
  Block block(tensor, n, m, 0, m);
  View sym(symbols.data(), n, m), out(values.data(), n, m);
  return quantizer_interface(inst).dequantize(inst.get(), block.get(), sym.get(),
                                              nwc_bytes{side, side_size}, out.get());
}

// Bitwise equality of float vectors (NaN payloads included).
inline bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// What the host relies on from a quantizer, on values [n, m]: quantize succeeds; a second call
// gives the same symbols, dequantized values and side bytes (determinism: containers are
// reproducible); dequantize(symbols, side) gives the dequantized values of quantize bit for bit
// (the decoder reconstructs what the encoder saw); side information cut short is an error status,
// never a crash or a silent success. Returns "" or the first failure.
inline std::string check_quantizer(Instance &inst, const std::vector<float> &values, int64_t n,
                                   int64_t m) {
  const QuantizerOutput a = run_quantize(inst, values, n, m);
  if (a.status != NWC_OK) return "quantize failed: " + inst.last_error();
  const QuantizerOutput b = run_quantize(inst, values, n, m);
  if (b.status != NWC_OK || a.symbols != b.symbols ||
      !bitwise_equal(a.dequantized, b.dequantized) || a.side != b.side)
    return "quantize is not deterministic: a second call gave other outputs";
  std::vector<float> back;
  if (run_dequantize(inst, a.symbols, a.side.data(), a.side.size(), n, m, back) != NWC_OK)
    return "dequantize failed: " + inst.last_error();
  if (!bitwise_equal(back, a.dequantized))
    return "dequantize(symbols, side) differs from the dequantized values of quantize";
  for (size_t cut = 0; cut < a.side.size(); ++cut)
    if (run_dequantize(inst, a.symbols, a.side.data(), cut, n, m, back) == NWC_OK)
      return "dequantize accepted side information cut to " + std::to_string(cut) + " of " +
             std::to_string(a.side.size()) + " bytes";
  return "";
}

// What the host relies on from an entropy coder: encode succeeds and is deterministic; decode
// gives the symbols back; every strict prefix of the stream is an error status when decoded (a
// truncated container is reported, never decoded into wrong weights). Returns "" or the first
// failure.
inline std::string check_entropy_coder(Instance &inst, const std::vector<int32_t> &symbols) {
  std::vector<uint8_t> a, b;
  if (entropy_encode(inst, symbols, a) != NWC_OK) return "encode failed: " + inst.last_error();
  if (entropy_encode(inst, symbols, b) != NWC_OK || a != b)
    return "encode is not deterministic: a second call gave other bytes";
  std::vector<int32_t> back(symbols.size(), 0);
  if (entropy_decode(inst, a, back) != NWC_OK) return "decode failed: " + inst.last_error();
  if (back != symbols) return "decode(encode(symbols)) differs from the symbols";
  for (size_t cut = 0; cut < a.size(); ++cut) {
    std::vector<int32_t> part(symbols.size(), 0);
    if (entropy_decode(inst, a.data(), cut, part) == NWC_OK)
      return "decode accepted the stream cut to " + std::to_string(cut) + " of " +
             std::to_string(a.size()) + " bytes";
  }
  return "";
}

// What the host relies on from a chunker, on one block (e.g. Block("t", rows, cols, 0, cols), with
// set_tensor_side() when the chunker reads host row scales) whose values are F32 [rows, width]:
// plan gives the same geometry twice; split succeeds and is deterministic (chunks and side bytes);
// merge(split(values)) gives the values back up to float rounding (max |difference| <= tolerance ·
// max |value|; 0 for chunkers that only move values); every strict prefix of non-empty side
// information is an error status when merged. Returns "" or the first failure.
inline std::string check_chunker(Instance &inst, const Block &block,
                                 const std::vector<float> &values, double tolerance = 0.0) {
  const auto &c = chunker_interface(inst);
  const int64_t rows = block.info.rows, width = block.info.col_end - block.info.col_begin;
  if (static_cast<int64_t>(values.size()) != rows * width)
    throw std::invalid_argument("check_chunker: values are not rows x (col_end - col_begin)");
  nwc_chunk_geometry g{}, g2{};
  if (c.plan(inst.get(), block.get(), &g) != NWC_OK) return "plan failed: " + inst.last_error();
  if (c.plan(inst.get(), block.get(), &g2) != NWC_OK || g.count != g2.count ||
      g.length != g2.length)
    return "plan is not deterministic";
  if (g.count < 0 || g.length <= 0) return "plan gave an empty or negative geometry";
  auto split = [&](std::vector<float> &chunks, std::vector<uint8_t> &side) {
    chunks.assign(static_cast<size_t>(g.count * g.length), 0.0f);
    View in(values.data(), rows, width), out(chunks.data(), g.count, g.length);
    VecSink sink;
    const nwc_status st = c.split(inst.get(), block.get(), in.get(), out.get(), sink.get());
    side = std::move(sink.bytes);
    return st;
  };
  auto merge = [&](const std::vector<float> &chunks, const uint8_t *side, size_t size,
                   std::vector<float> &out) {
    out.assign(values.size(), 0.0f);
    View in(chunks.data(), g.count, g.length), o(out.data(), rows, width);
    return c.merge(inst.get(), block.get(), in.get(), nwc_bytes{side, size}, o.get());
  };
  std::vector<float> a, b, back;
  std::vector<uint8_t> sa, sb;
  if (split(a, sa) != NWC_OK) return "split failed: " + inst.last_error();
  if (split(b, sb) != NWC_OK || !bitwise_equal(a, b) || sa != sb)
    return "split is not deterministic: a second call gave other chunks or side bytes";
  if (merge(a, sa.data(), sa.size(), back) != NWC_OK) return "merge failed: " + inst.last_error();
  double scale = 0, worst = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    scale = std::fmax(scale, std::fabs(static_cast<double>(values[i])));
    worst = std::fmax(worst, std::fabs(static_cast<double>(back[i]) - values[i]));
  }
  if (!(worst <= tolerance * scale))
    return "merge(split(values)) differs from the values by " + std::to_string(worst) +
           " (largest value " + std::to_string(scale) + ")";
  for (size_t cut = 0; cut < sa.size(); ++cut)
    if (merge(a, sa.data(), cut, back) == NWC_OK)
      return "merge accepted side information cut to " + std::to_string(cut) + " of " +
             std::to_string(sa.size()) + " bytes";
  return "";
}

// What the host relies on from a transform, on chunks F32 [n, length] of a block: latent_length
// is positive; forward and inverse succeed and are deterministic (the encoder and every decoder
// compute the same latents and chunks); inverse gives finite values; the probability model, if
// any, is the same object on every call. A learned transform need not invert exactly: how close
// inverse(forward(chunks)) is belongs to the transform's own tests. Returns "" or the first
// failure.
inline std::string check_transform(Instance &inst, const Block &block,
                                   const std::vector<float> &chunks, int64_t n, int64_t length) {
  const auto *t = inst.iface<nwc_transform_interface>(NWC_TRANSFORM_INTERFACE);
  if (!t) throw std::runtime_error("instance does not serve " NWC_TRANSFORM_INTERFACE);
  if (static_cast<int64_t>(chunks.size()) != n * length)
    throw std::invalid_argument("check_transform: chunks are not n x length");
  int64_t m = 0;
  if (t->latent_length(inst.get(), length, &m) != NWC_OK)
    return "latent_length failed: " + inst.last_error();
  if (m <= 0) return "latent_length is not positive";
  auto forward = [&](std::vector<float> &latents) {
    latents.assign(static_cast<size_t>(n * m), 0.0f);
    View in(chunks.data(), n, length), out(latents.data(), n, m);
    return t->forward(inst.get(), block.get(), in.get(), out.get());
  };
  auto inverse = [&](const std::vector<float> &latents, std::vector<float> &out) {
    out.assign(chunks.size(), 0.0f);
    View in(latents.data(), n, m), o(out.data(), n, length);
    return t->inverse(inst.get(), block.get(), in.get(), o.get());
  };
  std::vector<float> a, b, x, y;
  if (forward(a) != NWC_OK) return "forward failed: " + inst.last_error();
  if (forward(b) != NWC_OK || !bitwise_equal(a, b))
    return "forward is not deterministic: a second call gave other latents";
  std::vector<float> rounded = a; // what a decoder sees: quantized latents
  for (float &v : rounded) v = std::nearbyint(v);
  if (inverse(rounded, x) != NWC_OK) return "inverse failed: " + inst.last_error();
  if (inverse(rounded, y) != NWC_OK || !bitwise_equal(x, y))
    return "inverse is not deterministic: a second call gave other chunks";
  for (float v : x)
    if (!std::isfinite(v)) return "inverse gave a value that is not finite";
  if (t->probability_model && t->probability_model(inst.get()) != t->probability_model(inst.get()))
    return "probability_model returned another object on a second call";
  return "";
}

// ---- rotations (ABI 1.4) ------------------------------------------------------------------------

inline const nwc_rotation_interface &rotation_interface(Instance &inst) {
  const auto *r = inst.iface<nwc_rotation_interface>(NWC_ROTATION_INTERFACE);
  if (!r) throw std::runtime_error("instance does not serve " NWC_ROTATION_INTERFACE);
  return *r;
}

// plan() for tensor name [rows, cols]; hessian F32 [cols, cols] or null. side gets the bytes.
inline nwc_status rotation_plan(Instance &inst, const char *name, int64_t rows, int64_t cols,
                                const std::vector<float> *hessian, std::vector<uint8_t> &side) {
  VecSink out;
  nwc_status st;
  if (hessian) {
    View h(hessian->data(), cols, cols);
    st = rotation_interface(inst).plan(inst.get(), name, rows, cols, h.get(), out.get());
  } else {
    st = rotation_interface(inst).plan(inst.get(), name, rows, cols, nullptr, out.get());
  }
  side = std::move(out.bytes);
  return st;
}
// forward / forward_hessian / inverse in place on a [rows, cols] matrix.
inline nwc_status rotation_forward(Instance &inst, const std::vector<uint8_t> &side,
                                   std::vector<float> &w, int64_t rows, int64_t cols) {
  View v(w.data(), rows, cols);
  return rotation_interface(inst).forward(inst.get(), nwc_bytes{side.data(), side.size()}, v.get());
}
inline nwc_status rotation_forward_hessian(Instance &inst, const std::vector<uint8_t> &side,
                                           std::vector<float> &h, int64_t cols) {
  View v(h.data(), cols, cols);
  return rotation_interface(inst).forward_hessian(inst.get(), nwc_bytes{side.data(), side.size()},
                                                  v.get());
}
inline nwc_status rotation_inverse(Instance &inst, const uint8_t *side, size_t side_size,
                                   std::vector<float> &w, int64_t rows, int64_t cols) {
  View v(w.data(), rows, cols);
  return rotation_interface(inst).inverse(inst.get(), nwc_bytes{side, side_size}, v.get());
}

// tr(E · H · Eᵀ) in double for E [rows, cols], H [cols, cols].
inline double hessian_error(const std::vector<float> &e, const std::vector<float> &h, int64_t rows,
                            int64_t cols) {
  double total = 0.0;
  std::vector<double> eh(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float *er = e.data() + r * cols;
    for (int64_t j = 0; j < cols; ++j) eh[j] = 0.0;
    for (int64_t k = 0; k < cols; ++k) {
      const double ek = er[k];
      if (ek == 0.0) continue;
      const float *hk = h.data() + k * cols;
      for (int64_t j = 0; j < cols; ++j) eh[j] += ek * hk[j];
    }
    for (int64_t j = 0; j < cols; ++j) total += eh[j] * er[j];
  }
  return total;
}

// What the host relies on from a rotation, on weight [rows, cols] and optionally a Hessian
// [cols, cols] (symmetric positive semi-definite): plan succeeds and writes the same side bytes
// twice; forward then inverse gives the weight back within tol relative to its largest magnitude
// (the transform is orthogonal, so the decoder undoes it), and forward keeps the Frobenius norm;
// forward and inverse give the same bits when called again; the Hessian-weighted error of a
// perturbation is the same in both bases, tr(E H Eᵀ) = tr(E' H' E'ᵀ) with E' = forward(E) and
// H' = forward_hessian(H) (compensators minimize the same output error on the rotated matrix);
// inverse refuses side information cut short or with a byte appended (NWC_E_CORRUPT_STREAM, never
// a crash or a silent success). Returns "" or the first failure.
inline std::string check_rotation(Instance &inst, const std::vector<float> &weight, int64_t rows,
                                  int64_t cols, const std::vector<float> *hessian = nullptr,
                                  double tol = 1e-5) {
  const char *name = "layers.0.weight";
  std::vector<uint8_t> side, side2;
  if (rotation_plan(inst, name, rows, cols, hessian, side) != NWC_OK)
    return "plan failed: " + inst.last_error();
  if (rotation_plan(inst, name, rows, cols, hessian, side2) != NWC_OK || side != side2)
    return "plan is not deterministic: a second call wrote other side bytes";
  std::vector<float> w = weight;
  if (rotation_forward(inst, side, w, rows, cols) != NWC_OK)
    return "forward failed: " + inst.last_error();
  std::vector<float> w2 = weight;
  if (rotation_forward(inst, side, w2, rows, cols) != NWC_OK || !bitwise_equal(w, w2))
    return "forward is not deterministic: a second call gave other values";
  double norm = 0.0, norm_rot = 0.0, peak = 0.0;
  for (size_t i = 0; i < weight.size(); ++i) {
    norm += static_cast<double>(weight[i]) * weight[i];
    norm_rot += static_cast<double>(w[i]) * w[i];
    peak = std::fmax(peak, std::fabs(static_cast<double>(weight[i])));
  }
  if (std::fabs(std::sqrt(norm_rot) - std::sqrt(norm)) > tol * std::fmax(1.0, std::sqrt(norm)))
    return "forward changed the Frobenius norm: the transform is not orthogonal";
  std::vector<float> back = w, back2 = w;
  if (rotation_inverse(inst, side.data(), side.size(), back, rows, cols) != NWC_OK)
    return "inverse failed: " + inst.last_error();
  if (rotation_inverse(inst, side.data(), side.size(), back2, rows, cols) != NWC_OK ||
      !bitwise_equal(back, back2))
    return "inverse is not deterministic: a second call gave other values";
  for (size_t i = 0; i < weight.size(); ++i)
    if (!(std::fabs(static_cast<double>(back[i]) - weight[i]) <= tol * std::fmax(1.0, peak)))
      return "inverse(forward(W)) differs from W at element " + std::to_string(i);
  if (hessian) {
    // E: a deterministic perturbation with entries of both signs and several magnitudes.
    std::vector<float> e(weight.size());
    uint32_t x = 12345u;
    for (auto &v : e) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<float>(static_cast<int32_t>(x >> 8) % 2001 - 1000) / 1000.0f;
    }
    const double before = hessian_error(e, *hessian, rows, cols);
    std::vector<float> er = e, hr = *hessian;
    if (rotation_forward(inst, side, er, rows, cols) != NWC_OK)
      return "forward failed: " + inst.last_error();
    if (rotation_forward_hessian(inst, side, hr, cols) != NWC_OK)
      return "forward_hessian failed: " + inst.last_error();
    const double after = hessian_error(er, hr, rows, cols);
    if (!(std::fabs(after - before) <= 100.0 * tol * std::fmax(1e-12, std::fabs(before))))
      return "tr(E H E^T) changed under the rotation: " + std::to_string(before) + " before, " +
             std::to_string(after) + " after";
  }
  for (size_t cut = 0; cut < side.size(); ++cut) {
    std::vector<float> part = w;
    if (rotation_inverse(inst, side.data(), cut, part, rows, cols) == NWC_OK)
      return "inverse accepted side information cut to " + std::to_string(cut) + " of " +
             std::to_string(side.size()) + " bytes";
  }
  std::vector<uint8_t> longer = side;
  longer.push_back(0);
  std::vector<float> part = w;
  if (rotation_inverse(inst, longer.data(), longer.size(), part, rows, cols) == NWC_OK)
    return "inverse accepted side information with a byte appended";
  return "";
}

// Synthetic inputs for compensator and rotation checks, the same on every machine: a weight
// [rows, cols] of about unit scale (uniform values in (-1, 1) with every 7th row scaled by 4, so
// rows differ in range), and a Hessian X·Xᵀ/m + 0.01·I [cols, cols] from m = cols + 16 samples
// whose neighbouring input channels are correlated (as a real layer's inputs are) and whose
// channel scales differ (so act-order has an order to find).
inline std::vector<float> synthetic_weight(int64_t rows, int64_t cols, uint32_t seed = 1) {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  uint32_t x = seed * 2654435761u + 1u;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      x = x * 1664525u + 1013904223u;
      const float u = static_cast<float>(x >> 8) / 8388608.0f - 1.0f; // [-1, 1)
      w[static_cast<size_t>(r * cols + c)] = r % 7 == 0 ? 4.0f * u : u;
    }
  return w;
}
inline std::vector<float> synthetic_hessian(int64_t cols, uint32_t seed = 1) {
  const int64_t m = cols + 16;
  std::vector<double> x(static_cast<size_t>(cols * m)), u(static_cast<size_t>(m), 0.0);
  uint32_t s = seed * 40503u + 7u;
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t t = 0; t < m; ++t) {
      s = s * 1664525u + 1013904223u;
      // u: unit noise correlated with the previous channel's; x: u at this channel's scale.
      u[static_cast<size_t>(t)] =
          0.5 * u[static_cast<size_t>(t)] + static_cast<double>(s >> 8) / 8388608.0 - 1.0;
      x[static_cast<size_t>(i * m + t)] =
          u[static_cast<size_t>(t)] * (1.0 + static_cast<double>(i % 5));
    }
  std::vector<float> h(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double d = i == j ? 0.01 : 0.0;
      for (int64_t t = 0; t < m; ++t)
        d += x[static_cast<size_t>(i * m + t)] * x[static_cast<size_t>(j * m + t)] /
             static_cast<double>(m);
      h[static_cast<size_t>(i * cols + j)] = static_cast<float>(d);
    }
  return h;
}

// ---- compensators -------------------------------------------------------------------------------

// A block codec for compensators without a pipeline behind it: it reconstructs each value as the
// nearest multiple of 1/steps_per_unit, keeps what committed blocks reconstruct in reconstruction
// ([rows, cols]), and counts how often each column was committed (dry runs are not counted).
// Malformed calls (columns out of range, views of the wrong type or shape) fail with
// NWC_E_INVALID_ARG and are described in error.
struct GridBlockCodec {
  nwc_block_codec codec{};
  int64_t rows, cols;
  float steps_per_unit;
  std::vector<int> commits;          // per column
  std::vector<float> reconstruction; // [rows, cols], committed blocks only
  std::string error;                 // the first malformed call
  GridBlockCodec(int64_t rows_, int64_t cols_, float steps = 64.0f)
      : rows(rows_), cols(cols_), steps_per_unit(steps), commits(static_cast<size_t>(cols_), 0),
        reconstruction(static_cast<size_t>(rows_ * cols_), 0.0f) {
    codec.struct_size = sizeof(nwc_block_codec);
    codec.ctx = this;
    codec.rows = rows;
    codec.cols = cols;
    codec.encode = [](nwc_block_codec *c, int64_t c0, int64_t c1, const nwc_tensor_view *values,
                      nwc_tensor_view *recon) -> nwc_status {
      return c->encode_ex(c, c0, c1, values, nullptr, 0, recon);
    };
    codec.encode_ex = [](nwc_block_codec *c, int64_t c0, int64_t c1, const nwc_tensor_view *values,
                         const nwc_tensor_view *fit, uint32_t flags,
                         nwc_tensor_view *recon) -> nwc_status {
      return static_cast<GridBlockCodec *>(c->ctx)->encode(c0, c1, values, fit, flags, recon);
    };
  }
  GridBlockCodec(const GridBlockCodec &) = delete;
  GridBlockCodec &operator=(const GridBlockCodec &) = delete;
  nwc_block_codec *get() { return &codec; }

private:
  bool well_formed(const nwc_tensor_view *v, int64_t width) const {
    return v && v->data && v->dtype == NWC_DTYPE_F32 && v->ndim == 2 && v->shape &&
           v->shape[0] == rows && v->shape[1] == width && !v->strides;
  }
  nwc_status encode(int64_t c0, int64_t c1, const nwc_tensor_view *values,
                    const nwc_tensor_view *fit, uint32_t flags, nwc_tensor_view *recon) {
    const int64_t width = c1 - c0;
    if (c0 < 0 || c1 > cols || width <= 0 || !well_formed(values, width) ||
        !well_formed(recon, width) || (fit && !well_formed(fit, width))) {
      if (error.empty())
        error = "block [" + std::to_string(c0) + ", " + std::to_string(c1) + ") of a " +
                std::to_string(rows) + " x " + std::to_string(cols) +
                " tensor with malformed arguments";
      return NWC_E_INVALID_ARG;
    }
    const auto *in = reinterpret_cast<const float *>(static_cast<const char *>(values->data) +
                                                     values->byte_offset);
    auto *out = reinterpret_cast<float *>(static_cast<char *>(recon->data) + recon->byte_offset);
    for (int64_t i = 0; i < rows * width; ++i)
      out[i] = std::nearbyint(in[i] * steps_per_unit) / steps_per_unit;
    if (flags & NWC_BLOCK_DRY_RUN) return NWC_OK;
    for (int64_t k = c0; k < c1; ++k) commits[static_cast<size_t>(k)]++;
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(reconstruction.data() + r * cols + c0, out + r * width,
                  static_cast<size_t>(width) * sizeof(float));
    return NWC_OK;
  }
};

inline const nwc_compensator_interface &compensator_interface(Instance &inst) {
  const auto *c = inst.iface<nwc_compensator_interface>(NWC_COMPENSATOR_INTERFACE);
  if (!c) throw std::runtime_error("instance does not serve " NWC_COMPENSATOR_INTERFACE);
  return *c;
}

// Runs compensate on weight [rows, cols] (and hessian [cols, cols] or NULL) through codec.
inline nwc_status run_compensate(Instance &inst, const std::vector<float> &weight, int64_t rows,
                                 int64_t cols, const std::vector<float> *hessian,
                                 GridBlockCodec &codec) {
  View w(weight.data(), rows, cols);
  if (!hessian)
    return compensator_interface(inst).compensate(inst.get(), "layers.0.weight", w.get(), nullptr,
                                                  codec.get());
  View h(hessian->data(), cols, cols);
  return compensator_interface(inst).compensate(inst.get(), "layers.0.weight", w.get(), h.get(),
                                                codec.get());
}

// What the host relies on from a compensator, on weight [rows, cols] and a Hessian [cols, cols]
// (symmetric positive definite; required when the compensator declares
// NWC_COMPENSATOR_NEEDS_HESSIAN, which is then refused as missing with an error status, not a
// crash): compensate succeeds through a grid block codec of step 1/steps_per_unit, commits every
// column exactly once, and commits the same reconstruction when called again (determinism: every
// encoder of a pipeline gets the same container). When out is given, it receives the committed
// reconstruction, for the plugin's own quality checks (hessian_error() of W - out against plain
// rounding, say). Returns "" or the first failure.
inline std::string check_compensator(Instance &inst, const std::vector<float> &weight, int64_t rows,
                                     int64_t cols, const std::vector<float> *hessian,
                                     float steps_per_unit = 64.0f,
                                     std::vector<float> *out = nullptr) {
  if (static_cast<int64_t>(weight.size()) != rows * cols ||
      (hessian && static_cast<int64_t>(hessian->size()) != cols * cols))
    throw std::invalid_argument("check_compensator: weight or hessian of the wrong size");
  const auto &c = compensator_interface(inst);
  const bool needs_hessian = (c.requirements(inst.get()) & NWC_COMPENSATOR_NEEDS_HESSIAN) != 0;
  if (needs_hessian && !hessian)
    throw std::invalid_argument("check_compensator: the compensator needs a Hessian");
  if (needs_hessian) {
    GridBlockCodec none(rows, cols, steps_per_unit);
    if (run_compensate(inst, weight, rows, cols, nullptr, none) == NWC_OK)
      return "compensate accepted a missing Hessian although it declares that it needs one";
  }
  auto once = [&](GridBlockCodec &codec) -> std::string {
    if (run_compensate(inst, weight, rows, cols, hessian, codec) != NWC_OK)
      return "compensate failed: " + (codec.error.empty()
                                          ? inst.last_error()
                                          : "it called the codec with a " + codec.error);
    if (!codec.error.empty()) return "compensate called the codec with a " + codec.error;
    for (int64_t k = 0; k < cols; ++k)
      if (codec.commits[static_cast<size_t>(k)] != 1)
        return "column " + std::to_string(k) + " committed " +
               std::to_string(codec.commits[static_cast<size_t>(k)]) + " times (expected once)";
    return "";
  };
  GridBlockCodec a(rows, cols, steps_per_unit), b(rows, cols, steps_per_unit);
  if (auto e = once(a); !e.empty()) return e;
  if (auto e = once(b); !e.empty()) return "second call: " + e;
  if (!bitwise_equal(a.reconstruction, b.reconstruction))
    return "compensate is not deterministic: a second call committed other values";
  if (out) *out = a.reconstruction;
  return "";
}

} // namespace nwc::test
