#include "nwc/host/codec.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

#include <algorithm>
#include <atomic>
#include <boost/dll/runtime_symbol_info.hpp>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <unistd.h>
#include <zstd.h>

namespace nwc::host {

namespace {

// A 2-D [rows, cols] nwc_tensor_view over a buffer the host owns.
struct View {
  int64_t shape[2];
  nwc_tensor_view view;
  View(void *data, uint32_t dtype, int64_t rows, int64_t cols) : shape{rows, cols} {
    view = nwc_tensor_view{data, 0, dtype, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  }
  View(const View &) = delete;
  View &operator=(const View &) = delete;
  nwc_tensor_view *get() { return &view; }
};

struct VectorSink {
  std::vector<uint8_t> bytes;
  nwc_sink sink{this, &VectorSink::write};
  static nwc_status write(nwc_sink *s, const void *data, size_t len) {
    auto *self = static_cast<VectorSink *>(s->ctx);
    try {
      const auto *p = static_cast<const uint8_t *>(data);
      self->bytes.insert(self->bytes.end(), p, p + len);
      return NWC_OK;
    } catch (...) {
      return NWC_E_NOMEM;
    }
  }
};

// The live stages of one chain (one per worker thread: instances are [instance-serial]).
struct Stages {
  std::array<std::unique_ptr<Instance>, 5> inst;
  const nwc_chunker_interface *chunker = nullptr;
  const nwc_transform_interface *transform = nullptr;
  const nwc_quantizer_interface *quantizer = nullptr;
  const nwc_entropy_interface *entropy = nullptr;
  const nwc_compensator_interface *compensator = nullptr;

  Instance &at(Slot s) const { return *inst[static_cast<size_t>(s)]; }
  bool has(Slot s) const { return inst[static_cast<size_t>(s)] != nullptr; }
};

std::unique_ptr<Stages> make_stages(const std::array<StageSpec, 5> &specs, const Registry &reg,
                                    bool decode) {
  auto st = std::make_unique<Stages>();
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].plugin.empty()) continue;
    if (decode && static_cast<Slot>(i) == Slot::Compensator) continue; // encoder-only
    st->inst[i] = reg.create(specs[i].plugin, specs[i].options);
  }
  st->chunker = &st->at(Slot::Chunker).interface_as<nwc_chunker_interface>(NWC_CHUNKER_INTERFACE);
  st->quantizer =
      &st->at(Slot::Quantizer).interface_as<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  st->entropy = &st->at(Slot::Entropy).interface_as<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  if (st->has(Slot::Transform))
    st->transform =
        &st->at(Slot::Transform).interface_as<nwc_transform_interface>(NWC_TRANSFORM_INTERFACE);
  if (st->has(Slot::Compensator))
    st->compensator = &st->at(Slot::Compensator)
                           .interface_as<nwc_compensator_interface>(NWC_COMPENSATOR_INTERFACE);
  return st;
}

// Treats any tensor as a matrix: 1-D as [1, n], N-D as [shape[0], prod(rest)].
std::pair<int64_t, int64_t> as_matrix(const std::vector<int64_t> &shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {1, shape[0]};
  int64_t cols = 1;
  for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  return {shape[0], cols};
}

// ---- tensor-level side information (ABI 1.2) ---------------------------------------------------
// Stored as tensor streams (block -1): "row_scales" = [u8 NWC_DTYPE_F32|F16|BF16][rows values, LE]
// and "levels" = [u8 bits per level: 2, 4 or 8][levels of the columns, packed LSB first].

struct TensorSide {
  std::vector<float> row_scales; // empty = none
  std::vector<uint8_t> levels;   // per column; empty = none
};

bool chunker_has(const nwc_chunker_interface *c, size_t offset) {
  return c->struct_size >= offset + sizeof(void *);
}

DType scale_dtype(uint32_t code, const std::string &where) {
  switch (code) {
  case NWC_DTYPE_F32:
    return DType::F32;
  case NWC_DTYPE_F16:
    return DType::F16;
  case NWC_DTYPE_BF16:
    return DType::BF16;
  default:
    fail(NWC_E_CORRUPT_STREAM, where + ": row scales have dtype code " + std::to_string(code) +
                                   " (expected F32, F16 or BF16)");
  }
}

std::vector<uint8_t> encode_row_scales(uint32_t code, std::vector<float> &scales,
                                       const std::string &where) {
  DType dt = scale_dtype(code, where);
  std::vector<uint8_t> out(1 + scales.size() * dtype_size(dt));
  out[0] = static_cast<uint8_t>(code);
  from_float(dt, scales.data(), scales.size(), out.data() + 1);
  to_float(dt, out.data() + 1, scales.size(), scales.data()); // what the decoder will see
  for (float v : scales)
    if (!std::isfinite(v) || v == 0.0f)
      fail(NWC_E_INVALID_ARG, where + ": row scale " + std::to_string(v) +
                                  " is zero or not finite at the stored precision");
  return out;
}

std::vector<float> decode_row_scales(const std::vector<uint8_t> &bytes, int64_t rows,
                                     const std::string &where) {
  if (bytes.empty()) fail(NWC_E_CORRUPT_STREAM, where + ": empty row_scales stream");
  DType dt = scale_dtype(bytes[0], where);
  if (bytes.size() != 1 + static_cast<size_t>(rows) * dtype_size(dt))
    fail(NWC_E_CORRUPT_STREAM, where + ": row_scales stream has " + std::to_string(bytes.size()) +
                                   " bytes, expected " +
                                   std::to_string(1 + static_cast<size_t>(rows) * dtype_size(dt)));
  std::vector<float> out(static_cast<size_t>(rows));
  to_float(dt, bytes.data() + 1, out.size(), out.data());
  for (float v : out)
    if (!std::isfinite(v) || v == 0.0f)
      fail(NWC_E_CORRUPT_STREAM, where + ": row_scales stream holds a zero or non-finite scale");
  return out;
}

std::vector<uint8_t> pack_levels(const std::vector<uint8_t> &levels) {
  uint8_t top = 0;
  for (uint8_t l : levels) top = std::max(top, l);
  const unsigned bits = top < 4 ? 2 : top < 16 ? 4 : 8;
  std::vector<uint8_t> out(1 + (levels.size() * bits + 7) / 8, 0);
  out[0] = static_cast<uint8_t>(bits);
  for (size_t i = 0; i < levels.size(); ++i) {
    const size_t bit = i * bits;
    out[1 + bit / 8] |= static_cast<uint8_t>(levels[i] << (bit % 8));
  }
  return out;
}

std::vector<uint8_t> unpack_levels(const std::vector<uint8_t> &bytes, int64_t cols,
                                   const std::string &where) {
  if (bytes.empty() || (bytes[0] != 2 && bytes[0] != 4 && bytes[0] != 8))
    fail(NWC_E_CORRUPT_STREAM, where + ": levels stream must start with 2, 4 or 8 bits per level");
  const unsigned bits = bytes[0];
  const size_t need = 1 + (static_cast<size_t>(cols) * bits + 7) / 8;
  if (bytes.size() != need)
    fail(NWC_E_CORRUPT_STREAM, where + ": levels stream has " + std::to_string(bytes.size()) +
                                   " bytes, expected " + std::to_string(need));
  std::vector<uint8_t> out(static_cast<size_t>(cols));
  const unsigned mask = (1u << bits) - 1u;
  for (size_t i = 0; i < out.size(); ++i) {
    const size_t bit = i * bits;
    out[i] = static_cast<uint8_t>((bytes[1 + bit / 8] >> (bit % 8)) & mask);
  }
  return out;
}

nwc_block_info block_info(const std::string &name, int64_t rows, int64_t cols, int64_t c0,
                          int64_t c1, const TensorSide &side) {
  return nwc_block_info{sizeof(nwc_block_info),
                        0,
                        name.c_str(),
                        rows,
                        cols,
                        c0,
                        c1,
                        side.row_scales.empty() ? nullptr : side.row_scales.data(),
                        nullptr};
}

struct Geometry {
  int64_t count = 0, length = 0, latent = 0;
  int64_t symbols() const { return count * latent; }
};

// Chunk geometry of a block, checked so that a plugin cannot make the host allocate wildly.
Geometry plan_block(const Stages &st, const nwc_block_info &info) {
  nwc_chunk_geometry g{};
  st.at(Slot::Chunker).check(st.chunker->plan(st.at(Slot::Chunker).raw(), &info, &g), "plan");
  Geometry out{g.count, g.length, g.length};
  if (st.transform)
    st.at(Slot::Transform)
        .check(st.transform->latent_length(st.at(Slot::Transform).raw(), g.length, &out.latent),
               "latent_length");
  const int64_t width = info.col_end - info.col_begin;
  const int64_t limit = 8 * info.rows * width + (1 << 20);
  if (out.count < 0 || out.length <= 0 || out.latent <= 0 || out.count > limit ||
      out.length > limit || out.count * out.length > limit || out.count * out.latent > limit)
    fail(NWC_E_INTERNAL, std::string("tensor ") + info.tensor_name + ": plugin " +
                             st.at(Slot::Chunker).plugin().id +
                             " planned an unreasonable geometry");
  return out;
}

// The quality level of each chunk of a block, from the tensor's per-column levels.
std::vector<uint8_t> chunk_levels(const Stages &st, const nwc_block_info &info, const Geometry &g,
                                  const std::vector<uint8_t> &levels) {
  if (levels.empty()) return {};
  const Instance &ch = st.at(Slot::Chunker);
  if (!chunker_has(st.chunker, offsetof(nwc_chunker_interface, chunk_columns)) ||
      !st.chunker->chunk_columns)
    fail(NWC_E_INVALID_ARG, std::string("tensor ") + info.tensor_name +
                                ": per-column quality levels need a chunker that maps chunks to "
                                "columns (such as nwc.chunk.column); " +
                                ch.plugin().id + " does not");
  std::vector<int64_t> cols(static_cast<size_t>(g.count));
  int64_t shape[1] = {g.count};
  nwc_tensor_view v{cols.data(), 0, NWC_DTYPE_I64, NWC_DEVICE_CPU, 0, 1, shape, nullptr};
  ch.check(st.chunker->chunk_columns(ch.raw(), &info, &v), "chunk_columns");
  std::vector<uint8_t> out(cols.size());
  for (size_t k = 0; k < cols.size(); ++k) {
    if (cols[k] < info.col_begin || cols[k] >= info.col_end)
      fail(NWC_E_INVALID_ARG, std::string("tensor ") + info.tensor_name + ": chunker " +
                                  ch.plugin().id + " put chunk " + std::to_string(k) +
                                  " in column " + std::to_string(cols[k]) +
                                  ", outside the block (per-column levels need chunks within "
                                  "one column)");
    out[k] = levels[static_cast<size_t>(cols[k])];
  }
  return out;
}

struct EncodedBlock {
  BlockRecord record;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> streams; // role, bytes
  // What the block was coded from and to ([rows, width] each), kept only for coalescing.
  std::vector<float> values, fit, recon;
};

// Host side of nwc_block_codec for one tensor.
struct BlockCodec {
  nwc_block_codec c{};
  const Stages *stages = nullptr;
  std::string name;
  int64_t rows = 0, cols = 0;
  TensorSide tensor_side;
  std::vector<float> *full_reconstruction = nullptr; // [rows, cols], filled by committed blocks
  std::vector<float> *unit_reconstruction = nullptr; // the same with unit row scales
  std::vector<EncodedBlock> blocks;
  bool keep_inputs = false; // keep each block's values and reconstruction (coalesce_blocks)
  std::string error;        // exception message when encode failed
  nwc_status error_code = NWC_OK;

  static nwc_status encode(nwc_block_codec *self, int64_t c0, int64_t c1,
                           const nwc_tensor_view *values, nwc_tensor_view *recon) {
    return encode_ex(self, c0, c1, values, nullptr, 0, recon);
  }

  static nwc_status encode_ex(nwc_block_codec *self, int64_t c0, int64_t c1,
                              const nwc_tensor_view *values, const nwc_tensor_view *fit,
                              uint32_t flags, nwc_tensor_view *recon) {
    auto *bc = static_cast<BlockCodec *>(self->ctx);
    try {
      bc->encode_block(c0, c1, values, fit, flags, recon);
      return NWC_OK;
    } catch (const Error &e) {
      bc->error = e.what();
      bc->error_code = e.code();
      return e.code();
    } catch (const std::bad_alloc &) {
      bc->error = "out of memory";
      bc->error_code = NWC_E_NOMEM;
      return NWC_E_NOMEM;
    } catch (const std::exception &e) {
      bc->error = e.what();
      bc->error_code = NWC_E_INTERNAL;
      return NWC_E_INTERNAL;
    }
  }

  void encode_block(int64_t c0, int64_t c1, const nwc_tensor_view *values,
                    const nwc_tensor_view *fit, uint32_t flags, nwc_tensor_view *recon) {
    if (c0 < 0 || c1 <= c0 || c1 > cols)
      fail(NWC_E_INVALID_ARG, "tensor " + name + ": compensator asked for columns [" +
                                  std::to_string(c0) + ", " + std::to_string(c1) + ")");
    const int64_t w = c1 - c0;
    auto check_view = [&](const nwc_tensor_view *v, const char *what) {
      if (!v || !v->data || v->dtype != NWC_DTYPE_F32 || v->ndim != 2 || v->shape[0] != rows ||
          v->shape[1] != w || v->strides)
        fail(NWC_E_INVALID_ARG, "tensor " + name + ": compensator passed a bad " + what + " view");
    };
    check_view(values, "values");
    check_view(recon, "reconstruction");
    if (fit) check_view(fit, "fit values");
    if (flags & ~NWC_BLOCK_DRY_RUN)
      fail(NWC_E_INVALID_ARG, "tensor " + name + ": unknown block codec flags");
    const bool dry = (flags & NWC_BLOCK_DRY_RUN) != 0;
    const Stages &st = *stages;
    nwc_block_info info = block_info(name, rows, cols, c0, c1, tensor_side);
    Geometry g = plan_block(st, info);
    const std::vector<uint8_t> levels = chunk_levels(st, info, g, tensor_side.levels);
    if (!levels.empty()) info.chunk_levels = levels.data();

    EncodedBlock out;
    out.record = {c0, c1, g.symbols()};
    std::vector<float> chunks(static_cast<size_t>(g.count * g.length));
    View chunks_v(chunks.data(), NWC_DTYPE_F32, g.count, g.length);
    VectorSink chunk_side;
    st.at(Slot::Chunker)
        .check(st.chunker->split(st.at(Slot::Chunker).raw(), &info, values, chunks_v.get(),
                                 &chunk_side.sink),
               "split");

    std::vector<float> latents_buf;
    std::vector<float> *latents = &chunks;
    if (st.transform) {
      latents_buf.resize(static_cast<size_t>(g.count * g.latent));
      View lat_v(latents_buf.data(), NWC_DTYPE_F32, g.count, g.latent);
      st.at(Slot::Transform)
          .check(st.transform->forward(st.at(Slot::Transform).raw(), &info, chunks_v.get(),
                                       lat_v.get()),
                 "forward");
      latents = &latents_buf;
    }
    View lat_in(latents->data(), NWC_DTYPE_F32, g.count, g.latent);
    std::vector<int32_t> symbols(static_cast<size_t>(g.symbols()));
    std::vector<float> dequant(symbols.size());
    View sym_v(symbols.data(), NWC_DTYPE_I32, g.count, g.latent);
    View deq_v(dequant.data(), NWC_DTYPE_F32, g.count, g.latent);
    VectorSink quant_side;
    if (fit) {
      // The reference goes through the same chunker and transform; a chunker whose side
      // information depends on the values cannot serve both, so that is refused.
      std::vector<float> ref_chunks(chunks.size()), ref_lat_buf;
      View ref_chunks_v(ref_chunks.data(), NWC_DTYPE_F32, g.count, g.length);
      VectorSink ref_side;
      st.at(Slot::Chunker)
          .check(st.chunker->split(st.at(Slot::Chunker).raw(), &info, fit, ref_chunks_v.get(),
                                   &ref_side.sink),
                 "split");
      if (ref_side.bytes != chunk_side.bytes)
        fail(NWC_E_INVALID_ARG, "tensor " + name + ": chunker " + st.at(Slot::Chunker).plugin().id +
                                    " writes value-dependent side information, which fitted "
                                    "quantization (GPTQ groups) cannot use");
      nwc_tensor_view *ref_lat = ref_chunks_v.get();
      View ref_lat_v(nullptr, NWC_DTYPE_F32, g.count, g.latent);
      if (st.transform) {
        ref_lat_buf.resize(static_cast<size_t>(g.count * g.latent));
        ref_lat_v.view.data = ref_lat_buf.data();
        st.at(Slot::Transform)
            .check(st.transform->forward(st.at(Slot::Transform).raw(), &info, ref_chunks_v.get(),
                                         ref_lat_v.get()),
                   "forward");
        ref_lat = ref_lat_v.get();
      }
      if (st.quantizer->struct_size < sizeof(nwc_quantizer_interface) ||
          !st.quantizer->quantize_fitted)
        fail(NWC_E_INVALID_ARG, "tensor " + name + ": quantizer " +
                                    st.at(Slot::Quantizer).plugin().id +
                                    " cannot fit its parameters on reference values (needed by "
                                    "the compensator)");
      st.at(Slot::Quantizer)
          .check(st.quantizer->quantize_fitted(st.at(Slot::Quantizer).raw(), &info, lat_in.get(),
                                               ref_lat, sym_v.get(), deq_v.get(), &quant_side.sink),
                 "quantize_fitted");
    } else {
      st.at(Slot::Quantizer)
          .check(st.quantizer->quantize(st.at(Slot::Quantizer).raw(), &info, lat_in.get(),
                                        sym_v.get(), deq_v.get(), &quant_side.sink),
                 "quantize");
    }

    const nwc_cdf_model *model =
        st.transform ? st.transform->probability_model(st.at(Slot::Transform).raw()) : nullptr;
    VectorSink coded;
    if (!dry) // a trial needs only the reconstruction
      st.at(Slot::Entropy)
          .check(st.entropy->encode(st.at(Slot::Entropy).raw(), sym_v.get(), model, &coded.sink),
                 "encode");

    // Reconstruct exactly as the decoder will: dequantized latents -> inverse -> merge.
    std::vector<float> rec_chunks_buf;
    nwc_tensor_view *rec_chunks = deq_v.get();
    View rec_chunks_v(nullptr, NWC_DTYPE_F32, g.count, g.length);
    if (st.transform) {
      rec_chunks_buf.resize(static_cast<size_t>(g.count * g.length));
      rec_chunks_v.view.data = rec_chunks_buf.data();
      st.at(Slot::Transform)
          .check(st.transform->inverse(st.at(Slot::Transform).raw(), &info, deq_v.get(),
                                       rec_chunks_v.get()),
                 "inverse");
      rec_chunks = rec_chunks_v.get();
    }
    nwc_bytes side{chunk_side.bytes.data(), chunk_side.bytes.size()};
    st.at(Slot::Chunker)
        .check(st.chunker->merge(st.at(Slot::Chunker).raw(), &info, rec_chunks, side, recon),
               "merge");

    if (dry) return;
    if (full_reconstruction) {
      const auto *r = static_cast<const float *>(recon->data);
      for (int64_t i = 0; i < rows; ++i)
        std::copy(r + i * w, r + (i + 1) * w, full_reconstruction->data() + i * cols + c0);
    }
    if (unit_reconstruction && !tensor_side.row_scales.empty()) {
      // The block merged with unit row scales: what fine-tuned scales will multiply.
      std::vector<float> ones(static_cast<size_t>(rows), 1.0f), unit(static_cast<size_t>(rows * w));
      nwc_block_info unit_info = info;
      unit_info.row_scales = ones.data();
      View unit_v(unit.data(), NWC_DTYPE_F32, rows, w);
      st.at(Slot::Chunker)
          .check(st.chunker->merge(st.at(Slot::Chunker).raw(), &unit_info, rec_chunks, side,
                                   unit_v.get()),
                 "merge");
      for (int64_t i = 0; i < rows; ++i)
        std::copy(unit.begin() + i * w, unit.begin() + (i + 1) * w,
                  unit_reconstruction->data() + i * cols + c0);
    }
    if (keep_inputs) {
      const auto n = static_cast<size_t>(rows * w);
      const auto *v = static_cast<const float *>(values->data);
      const auto *r = static_cast<const float *>(recon->data);
      out.values.assign(v, v + n);
      out.recon.assign(r, r + n);
      if (fit) {
        const auto *f = static_cast<const float *>(fit->data);
        out.fit.assign(f, f + n);
      }
    }
    if (!chunk_side.bytes.empty()) out.streams.emplace_back("chunker", std::move(chunk_side.bytes));
    if (!quant_side.bytes.empty())
      out.streams.emplace_back("quantizer", std::move(quant_side.bytes));
    out.streams.emplace_back("entropy", std::move(coded.bytes));
    blocks.push_back(std::move(out));
  }
};

// Codes runs of adjacent compensator blocks as one block of at most `max_cols` columns where that
// reproduces their reconstruction bit for bit (true of column-local stages such as the column
// chunker and the neural codec): fewer streams and container records, the same decoded tensor.
// Error feedback still happens at the compensator's granularity; a run that codes differently
// keeps its blocks.
void coalesce_blocks(BlockCodec &bc, int64_t max_cols) {
  const int64_t rows = bc.rows;
  std::vector<EncodedBlock> merged;
  size_t i = 0;
  while (i < bc.blocks.size()) {
    const int64_t c0 = bc.blocks[i].record.col_begin;
    size_t j = i + 1;
    while (j < bc.blocks.size() && bc.blocks[j].record.col_end - c0 <= max_cols &&
           bc.blocks[j].fit.empty() == bc.blocks[i].fit.empty())
      ++j;
    if (j - i < 2) {
      merged.push_back(std::move(bc.blocks[i++]));
      continue;
    }
    const int64_t c1 = bc.blocks[j - 1].record.col_end, w = c1 - c0;
    auto gather = [&](std::vector<float> EncodedBlock::*part) {
      std::vector<float> m(static_cast<size_t>(rows * w));
      for (size_t k = i; k < j; ++k) {
        const auto &b = bc.blocks[k];
        const int64_t bw = b.record.col_end - b.record.col_begin, off = b.record.col_begin - c0;
        for (int64_t r = 0; r < rows; ++r)
          std::copy_n((b.*part).begin() + r * bw, bw, m.begin() + r * w + off);
      }
      return m;
    };
    std::vector<float> values = gather(&EncodedBlock::values),
                       expect = gather(&EncodedBlock::recon);
    std::vector<float> fit =
        bc.blocks[i].fit.empty() ? std::vector<float>{} : gather(&EncodedBlock::fit);
    std::vector<float> recon(values.size()), unit;
    BlockCodec trial;
    trial.stages = bc.stages;
    trial.name = bc.name;
    trial.rows = rows;
    trial.cols = bc.cols;
    trial.tensor_side = bc.tensor_side;
    if (bc.unit_reconstruction) {
      unit.assign(bc.unit_reconstruction->size(), 0.0f);
      trial.unit_reconstruction = &unit;
    }
    int64_t shape[2] = {rows, w};
    auto view = [&](std::vector<float> &v) {
      return nwc_tensor_view{v.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
    };
    nwc_tensor_view vv = view(values), fv = view(fit), rv = view(recon);
    trial.encode_block(c0, c1, &vv, fit.empty() ? nullptr : &fv, 0, &rv);
    bool same = std::memcmp(recon.data(), expect.data(), recon.size() * sizeof(float)) == 0;
    for (int64_t r = 0; same && bc.unit_reconstruction && r < rows; ++r)
      same = std::memcmp(unit.data() + r * bc.cols + c0,
                         bc.unit_reconstruction->data() + r * bc.cols + c0,
                         static_cast<size_t>(w) * sizeof(float)) == 0;
    if (same) {
      merged.push_back(std::move(trial.blocks.front()));
    } else {
      for (size_t k = i; k < j; ++k) merged.push_back(std::move(bc.blocks[k]));
    }
    i = j;
  }
  bc.blocks = std::move(merged);
}

std::vector<uint8_t> raw_bytes(DType dtype, const std::vector<float> &values) {
  std::vector<uint8_t> out(values.size() * dtype_size(dtype));
  from_float(dtype, values.data(), values.size(), out.data());
  return out;
}

DType storage_dtype(DType original) {
  return original == DType::F16 || original == DType::BF16 ? original : DType::F32;
}

// Files behind bitstream-affecting path options (a codec): recorded in manifest.extra.resources
// as {config, slot, option, file, path, bytes, xxh64[, stream]} so decoding can find and verify
// them; with `embed`, their bytes go into the container as a stream.
void record_resources(const Plugin &p, const OptionValues &resolved, size_t config,
                      const std::string &slot, bool embed, ContainerWriter &writer,
                      nlohmann::json &resources) {
  for (const auto &spec : p.options) {
    if (spec.type != NWC_OPT_PATH || !(spec.flags & NWC_OPTF_AFFECTS_BITSTREAM)) continue;
    const OptionValue *v = resolved.find(spec.key);
    if (!v) continue;
    const std::string path = std::filesystem::absolute(std::get<std::string>(v->value)).string();
    MappedFile f(path);
    const uint64_t hash = container_checksum(f.data(), f.size());
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
    nlohmann::json r = {{"config", config},
                        {"slot", slot},
                        {"plugin", p.id},
                        {"option", spec.key},
                        {"file", std::filesystem::path(path).filename().string()},
                        {"path", path},
                        {"bytes", f.size()},
                        {"xxh64", hex}};
    if (embed) {
      StreamRef ref = writer.append_stream("resource", -1, f.data(), f.size());
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(ref.xxh64));
      r["stream"] = {{"offset", ref.offset}, {"length", ref.length}, {"xxh64", hex}};
    }
    resources.push_back(std::move(r));
  }
}

} // namespace

std::vector<uint8_t> levels_from_hessian(const float *hessian, int64_t n,
                                         const std::vector<double> &fractions) {
  if (fractions.size() > 15) fail(NWC_E_INVALID_ARG, "levels: at most 15 fractions");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) order[static_cast<size_t>(j)] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return hessian[a * n + a] > hessian[b * n + b]; });
  std::vector<uint8_t> levels(static_cast<size_t>(n), 0);
  size_t next = 0;
  for (size_t k = 0; k < fractions.size(); ++k) {
    const auto count = static_cast<size_t>(std::ceil(fractions[k] * static_cast<double>(n) - 1e-9));
    for (size_t c = 0; c < count && next < order.size(); ++c, ++next)
      levels[static_cast<size_t>(order[next])] = static_cast<uint8_t>(fractions.size() - k);
  }
  return levels;
}

HessianRef::HessianRef(std::shared_ptr<const std::vector<float>> values)
    : entries_(values ? values->size() : 0), load_([v = std::move(values)] { return v; }) {}

HessianRef::HessianRef(std::shared_ptr<std::vector<float>> values)
    : HessianRef(std::shared_ptr<const std::vector<float>>(std::move(values))) {}

HessianRef::HessianRef(uint64_t entries, Loader load) : entries_(entries), load_(std::move(load)) {}

std::shared_ptr<const std::vector<float>> HessianRef::load() const {
  auto v = load_ ? load_() : nullptr;
  if (!v || v->size() != entries_)
    fail(NWC_E_INTERNAL, "Hessian: loaded " + std::to_string(v ? v->size() : 0) +
                             " entries, expected " + std::to_string(entries_));
  return v;
}

struct EncodedTensor {
  TensorRecord record; // offsets filled when written
  std::vector<std::pair<std::string, std::pair<int32_t, std::vector<uint8_t>>>> streams;
  nlohmann::json chain; // stage chain used (pipeline storage)
  OptionValues resolved[5];
};

// A coded tensor as one message to rank 0: u64 header length, JSON header (record fields and
// stream roles, blocks and lengths), then the stream bytes in order. The chain and resolved
// options are not sent: rank 0 derives them from the pipeline, as the coding rank did.
static std::vector<uint8_t> pack_encoded(const EncodedTensor &e) {
  const TensorRecord &r = e.record;
  nlohmann::json blocks = nlohmann::json::array(), streams = nlohmann::json::array();
  for (const auto &b : r.blocks) blocks.push_back({b.col_begin, b.col_end, b.symbol_count});
  uint64_t payload = 0;
  for (const auto &st : e.streams) {
    streams.push_back({st.first, st.second.first, st.second.second.size()});
    payload += st.second.second.size();
  }
  const std::string header =
      nlohmann::json{{"name", r.name},   {"dtype", std::string(dtype_name(r.dtype))},
                     {"shape", r.shape}, {"storage", r.storage},
                     {"blocks", blocks}, {"streams", streams}}
          .dump();
  std::vector<uint8_t> msg(8 + header.size());
  const uint64_t hlen = header.size();
  std::memcpy(msg.data(), &hlen, 8);
  std::memcpy(msg.data() + 8, header.data(), header.size());
  msg.reserve(msg.size() + payload);
  for (const auto &st : e.streams)
    msg.insert(msg.end(), st.second.second.begin(), st.second.second.end());
  return msg;
}

static std::unique_ptr<EncodedTensor> unpack_encoded(const std::vector<uint8_t> &msg,
                                                     const std::string &expected_name) {
  auto bad = [&](const std::string &why) {
    fail(NWC_E_INTERNAL, "MPI: message for tensor " + expected_name + " " + why);
  };
  uint64_t hlen = 0;
  if (msg.size() < 8) bad("is truncated");
  std::memcpy(&hlen, msg.data(), 8);
  if (hlen > msg.size() - 8) bad("is truncated");
  auto e = std::make_unique<EncodedTensor>();
  try {
    const auto h =
        nlohmann::json::parse(msg.begin() + 8, msg.begin() + 8 + static_cast<long>(hlen));
    TensorRecord &r = e->record;
    r.name = h.at("name").get<std::string>();
    if (r.name != expected_name) bad("holds tensor " + r.name);
    if (!dtype_from_name(h.at("dtype").get<std::string>(), r.dtype)) bad("has an unknown dtype");
    r.shape = h.at("shape").get<std::vector<int64_t>>();
    r.storage = h.at("storage").get<std::string>();
    for (const auto &b : h.at("blocks"))
      r.blocks.push_back({b.at(0).get<int64_t>(), b.at(1).get<int64_t>(), b.at(2).get<int64_t>()});
    uint64_t at = 8 + hlen;
    for (const auto &st : h.at("streams")) {
      const uint64_t len = st.at(2).get<uint64_t>();
      if (len > msg.size() - at) bad("is truncated");
      e->streams.push_back({st.at(0).get<std::string>(),
                            {st.at(1).get<int32_t>(),
                             std::vector<uint8_t>(msg.begin() + static_cast<long>(at),
                                                  msg.begin() + static_cast<long>(at + len))}});
      at += len;
    }
    if (at != msg.size()) bad("has trailing bytes");
  } catch (const nlohmann::json::exception &ex) {
    bad(std::string("has a malformed header: ") + ex.what());
  }
  return e;
}

unsigned resolve_threads(unsigned threads) {
  if (threads > 0) return threads;
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? hc : 1;
}

// Codes one tensor (values: [rows, cols] as the record's shape says) with a stage chain:
// tensor-level side information, then the compensator (or one block), into enc's record and
// streams; the decoder's reconstruction goes to *reconstruction when given.
static void encode_with_chain(EncodedTensor &enc, std::vector<float> &values,
                              const StageChain &chain, const Stages &st, const Pipeline &pipeline,
                              const CompressSettings &settings, std::vector<float> *reconstruction,
                              std::vector<float> *unit_reconstruction = nullptr) {
  TensorRecord &rec = enc.record;
  rec.storage = "pipeline";
  enc.chain = chain.to_json();
  for (size_t s = 0; s < 5; ++s)
    if (st.inst[s]) enc.resolved[s] = st.inst[s]->resolved_options();

  auto [rows, cols] = as_matrix(rec.shape);
  BlockCodec bc;
  bc.stages = &st;
  bc.name = rec.name;
  bc.rows = rows;
  bc.cols = cols;
  bc.full_reconstruction = reconstruction;
  if (reconstruction) reconstruction->assign(values.size(), 0.0f);
  bc.unit_reconstruction = unit_reconstruction;
  if (unit_reconstruction) unit_reconstruction->assign(values.size(), 0.0f);
  bc.keep_inputs = st.compensator && pipeline.stream_columns > 0;
  bc.c = nwc_block_codec{sizeof(nwc_block_codec), 0, &bc, rows, cols, &BlockCodec::encode,
                         &BlockCodec::encode_ex};
  int64_t shape[2] = {rows, cols};
  nwc_tensor_view wv{values.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  // Tensor-level side information first: every block is coded with it.
  if (chunker_has(st.chunker, offsetof(nwc_chunker_interface, row_scales)) &&
      st.chunker->row_scales) {
    std::vector<float> scales(static_cast<size_t>(rows), 1.0f);
    int64_t sshape[1] = {rows};
    nwc_tensor_view sv{scales.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 1, sshape, nullptr};
    uint32_t code = 0;
    nwc_block_info whole = block_info(rec.name, rows, cols, 0, cols, TensorSide{});
    st.at(Slot::Chunker)
        .check(st.chunker->row_scales(st.at(Slot::Chunker).raw(), &whole, &wv, &sv, &code),
               "row_scales");
    if (code != 0) {
      auto bytes = encode_row_scales(
          code, scales, "tensor " + rec.name + ": chunker " + st.at(Slot::Chunker).plugin().id);
      bc.tensor_side.row_scales = std::move(scales);
      enc.streams.push_back({"row_scales", {-1, std::move(bytes)}});
    }
  }
  std::vector<uint8_t> hessian_levels;
  const std::vector<uint8_t> *column_levels = nullptr;
  if (auto lv = settings.column_levels.find(rec.name); lv != settings.column_levels.end())
    column_levels = &lv->second;
  else if (pipeline.levels.enabled) {
    auto h = settings.hessians.find(rec.name);
    if (h == settings.hessians.end())
      fail(NWC_E_INVALID_ARG,
           pipeline.levels.where + ": [levels] needs the calibration Hessian of " + rec.name +
               " (pass --calibration FILE from `nwc calibrate`, or --calibrate)");
    hessian_levels = levels_from_hessian(h->second.load()->data(), cols, pipeline.levels.fractions);
    column_levels = &hessian_levels;
  }
  if (column_levels) {
    const auto &levels = *column_levels;
    if (static_cast<int64_t>(levels.size()) != cols)
      fail(NWC_E_INVALID_ARG, "tensor " + rec.name + ": " + std::to_string(levels.size()) +
                                  " quality levels for " + std::to_string(cols) + " columns");
    if (!st.transform)
      fail(NWC_E_INVALID_ARG,
           "tensor " + rec.name + ": quality levels need a transform stage that uses them");
    bc.tensor_side.levels = levels;
    enc.streams.push_back({"levels", {-1, pack_levels(levels)}});
  }
  if (st.compensator) {
    nwc_tensor_view hv{};
    const nwc_tensor_view *hessian = nullptr;
    int64_t hshape[2] = {cols, cols};
    std::shared_ptr<const std::vector<float>> hvalues; // held while the compensator runs
    if (auto h = settings.hessians.find(rec.name); h != settings.hessians.end()) {
      hvalues = h->second.load();
      hv = nwc_tensor_view{const_cast<float *>(hvalues->data()),
                           0,
                           NWC_DTYPE_F32,
                           NWC_DEVICE_CPU,
                           0,
                           2,
                           hshape,
                           nullptr};
      hessian = &hv;
    }
    nwc_status cs = st.compensator->compensate(st.at(Slot::Compensator).raw(), rec.name.c_str(),
                                               &wv, hessian, &bc.c);
    if (!bc.error.empty()) fail(bc.error_code, bc.error); // the stage's own message
    st.at(Slot::Compensator).check(cs, ("compensate on tensor " + rec.name).c_str());
  } else { // no compensator: the whole tensor is one block
    std::vector<float> recon(values.size());
    nwc_tensor_view rv{recon.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
    bc.encode_block(0, cols, &wv, nullptr, 0, &rv);
  }

  // Blocks must tile [0, cols) exactly once.
  std::sort(bc.blocks.begin(), bc.blocks.end(), [](const EncodedBlock &a, const EncodedBlock &b) {
    return a.record.col_begin < b.record.col_begin;
  });
  int64_t expect = 0;
  for (const auto &b : bc.blocks) {
    if (b.record.col_begin != expect)
      fail(NWC_E_INTERNAL,
           "tensor " + rec.name + ": plugin " + st.at(Slot::Compensator).plugin().id +
               " did not code every column exactly once (gap or overlap at column " +
               std::to_string(expect) + ")");
    expect = b.record.col_end;
  }
  if (expect != cols)
    fail(NWC_E_INTERNAL, "tensor " + rec.name + ": plugin " + st.at(Slot::Compensator).plugin().id +
                             " left columns [" + std::to_string(expect) + ", " +
                             std::to_string(cols) + ") uncoded");
  if (bc.keep_inputs) coalesce_blocks(bc, pipeline.stream_columns);
  for (size_t b = 0; b < bc.blocks.size(); ++b) {
    rec.blocks.push_back(bc.blocks[b].record);
    for (auto &s : bc.blocks[b].streams)
      enc.streams.push_back({s.first, {static_cast<int32_t>(b), std::move(s.second)}});
  }
}

TensorCoding encode_tensor(const Pipeline &pipeline, const Registry &registry,
                           const TensorInfo &info, std::vector<float> values,
                           const CompressSettings &settings) {
  auto chain = pipeline.chain_for(info.name);
  if (!chain) fail(NWC_E_INVALID_ARG, "tensor " + info.name + " is not selected by the pipeline");
  if (values.size() != info.numel())
    fail(NWC_E_INVALID_ARG, "tensor " + info.name + ": wrong number of values");
  auto st = make_stages(chain->stages, registry, false);
  TensorCoding out;
  out.encoded = std::make_shared<EncodedTensor>();
  out.encoded->record.name = info.name;
  out.encoded->record.dtype = info.dtype;
  out.encoded->record.shape = info.shape;
  encode_with_chain(*out.encoded, values, *chain, *st, pipeline, settings, &out.reconstruction,
                    &out.unit_reconstruction);
  for (const auto &s : out.encoded->streams)
    if (s.first == "row_scales")
      out.row_scales =
          decode_row_scales(s.second.second, as_matrix(info.shape).first, "tensor " + info.name);
  if (out.row_scales.empty()) out.unit_reconstruction = out.reconstruction;
  return out;
}

std::vector<float> set_row_scales(TensorCoding &coding, const std::vector<float> &scales) {
  EncodedTensor &enc = *coding.encoded;
  const auto [rows, cols] = as_matrix(enc.record.shape);
  if (static_cast<int64_t>(scales.size()) != rows)
    fail(NWC_E_INVALID_ARG, "tensor " + enc.record.name + ": " + std::to_string(scales.size()) +
                                " row scales for " + std::to_string(rows) + " rows");
  const std::string where = "tensor " + enc.record.name;
  // Replace the chunker's scales when it has them, else set the host's row gain; both multiply
  // whole rows of what the decoder reconstructs.
  const bool chunker = !coding.row_scales.empty();
  const std::string role = chunker ? "row_scales" : "row_gain";
  uint32_t code = NWC_DTYPE_F16;
  for (auto &s : enc.streams)
    if (s.first == role) code = s.second.second.at(0);
  std::vector<float> stored = scales;
  auto bytes = encode_row_scales(code, stored, where);
  bool replaced = false;
  for (auto &s : enc.streams)
    if (s.first == role) {
      s.second.second = bytes;
      replaced = true;
    }
  if (!replaced) enc.streams.insert(enc.streams.begin(), {role, {-1, std::move(bytes)}});
  if (chunker) coding.row_scales = stored;
  // The reconstruction as the decoder will compute it: chunker scales are applied by the chunker's
  // merge (value = chunk x scale in double, rounded once), the row gain by the host (same rule).
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const size_t k = static_cast<size_t>(i * cols + j);
      coding.reconstruction[k] = static_cast<float>(
          static_cast<double>(coding.unit_reconstruction[k]) * static_cast<double>(stored[i]));
    }
  return stored;
}

// ---- compression -------------------------------------------------------------------------------

CompressResult compress_model(const Model &model, const Pipeline &pipeline,
                              const Registry &registry, const std::filesystem::path &out,
                              const CompressSettings &settings) {
  // Resolve every tensor's chain first: configuration errors surface before any work.
  const size_t n = model.tensors.size();
  std::vector<std::optional<StageChain>> chains(n);
  for (size_t i = 0; i < n; ++i) chains[i] = pipeline.chain_for(model.tensors[i].info.name);
  bool any = std::any_of(chains.begin(), chains.end(), [](auto &c) { return c.has_value(); });
  if (!any && !pipeline.select.empty())
    fail(NWC_E_INVALID_ARG, pipeline.file.string() +
                                ": pipeline.select matches no tensor of the model (first tensor: " +
                                (n ? model.tensors[0].info.name : std::string("none")) + ")");
  // Instantiate each distinct chain once up front: a plugin that cannot be created with these
  // options, or needs what we lack, fails here, before the output file exists.
  Job *job = settings.job && settings.job->size() > 1 ? settings.job : nullptr;
  if (job && !settings.precoded.empty())
    fail(NWC_E_INVALID_ARG, "tensors coded ahead (block fine-tuning) cannot be distributed over "
                            "MPI ranks");
  std::map<std::string, std::array<OptionValues, 5>> resolved_by_chain; // for other ranks' tensors
  for (size_t i = 0; i < n; ++i) {
    if (!chains[i]) continue;
    const TensorInfo &info = model.tensors[i].info;
    auto st = make_stages(chains[i]->stages, registry, false);
    if (job) {
      auto &resolved = resolved_by_chain[chains[i]->to_json().dump()];
      for (size_t s = 0; s < st->inst.size(); ++s)
        if (st->inst[s]) resolved[s] = st->inst[s]->resolved_options();
    }
    auto h = settings.hessians.find(info.name);
    const int64_t cols = as_matrix(info.shape).second;
    if (h != settings.hessians.end() &&
        h->second.size() != static_cast<uint64_t>(cols) * static_cast<uint64_t>(cols))
      fail(NWC_E_INVALID_ARG, "calibration: Hessian of " + info.name + " has " +
                                  std::to_string(h->second.size()) + " entries, expected " +
                                  std::to_string(cols) + " x " + std::to_string(cols));
    if (pipeline.levels.enabled && h == settings.hessians.end() &&
        settings.column_levels.find(info.name) == settings.column_levels.end())
      fail(NWC_E_INVALID_ARG, pipeline.levels.where +
                                  ": [levels] needs the calibration Hessian of " + info.name +
                                  "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    if (st->compensator && h == settings.hessians.end()) {
      uint32_t req = st->compensator->requirements(st->at(Slot::Compensator).raw());
      if (req & NWC_COMPENSATOR_NEEDS_HESSIAN)
        fail(NWC_E_INVALID_ARG,
             "plugin " + st->at(Slot::Compensator).plugin().id +
                 " needs the calibration Hessian of " + info.name +
                 "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    }
  }

  // Which process codes which tensor: all here, or with a job the largest tensors first, each
  // to the rank with the fewest weights so far (deterministic, so every rank agrees).
  const int rank = job ? job->rank() : 0, ranks = job ? job->size() : 1;
  std::vector<int> owner(n, 0);
  if (job) {
    std::vector<size_t> by_size(n);
    std::iota(by_size.begin(), by_size.end(), size_t{0});
    std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) {
      return model.tensors[a].info.numel() > model.tensors[b].info.numel();
    });
    std::vector<uint64_t> load(static_cast<size_t>(ranks), 0);
    for (size_t i : by_size) {
      auto least = std::min_element(load.begin(), load.end());
      owner[i] = static_cast<int>(least - load.begin());
      *least += model.tensors[i].info.numel();
    }
  }
  std::vector<size_t> mine; // the tensors this process codes, in model order
  for (size_t i = 0; i < n; ++i)
    if (owner[i] == rank) mine.push_back(i);

  std::optional<ContainerWriter> writer;
  if (rank == 0) writer.emplace(out);
  const unsigned threads = std::min<unsigned>(
      resolve_threads(settings.threads), static_cast<unsigned>(std::max<size_t>(mine.size(), 1)));

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<EncodedTensor>> done(n);
  std::atomic<size_t> next{0}; // position in `mine`
  size_t handed = 0;           // of `mine`: written (rank 0) or sent to rank 0
  std::exception_ptr error;
  size_t error_index = 0; // the failing tensor earliest in model order is the one reported
  std::atomic<bool> stop{false};
  const size_t window = 2 * static_cast<size_t>(threads); // bounds tensors held in memory

  auto encode_one = [&](size_t i, std::map<std::string, std::unique_ptr<Stages>> &cache) {
    const ModelTensor &mt = model.tensors[i];
    auto enc = std::make_unique<EncodedTensor>();
    TensorRecord &rec = enc->record;
    rec.name = mt.info.name;
    rec.dtype = mt.info.dtype;
    rec.shape = mt.info.shape;
    if (auto pre = settings.precoded.find(rec.name); pre != settings.precoded.end()) {
      if (!chains[i])
        fail(NWC_E_INVALID_ARG, "tensor " + rec.name + " was coded ahead but is not selected");
      *enc = *pre->second->encoded;
      return enc;
    }
    std::vector<float> values;
    if (auto r = settings.replaced.find(rec.name); r != settings.replaced.end())
      values = *r->second;
    else
      values = mt.load();
    if (values.size() != mt.info.numel())
      fail(NWC_E_INTERNAL, "tensor " + rec.name + ": loader returned the wrong element count");
    if (!chains[i]) {
      DType sd = pipeline.unselected == "zstd-f16" ? DType::F16 : storage_dtype(mt.info.dtype);
      rec.dtype = sd;
      auto bytes = raw_bytes(sd, values);
      if (pipeline.unselected == "zstd" || pipeline.unselected == "zstd-f16") {
        std::vector<uint8_t> z(ZSTD_compressBound(bytes.size()));
        size_t zn = ZSTD_compress(z.data(), z.size(), bytes.data(), bytes.size(), 9);
        if (ZSTD_isError(zn)) fail(NWC_E_INTERNAL, "zstd: " + std::string(ZSTD_getErrorName(zn)));
        z.resize(zn);
        rec.storage = "zstd";
        enc->streams.push_back({"zstd", {-1, std::move(z)}});
      } else {
        rec.storage = "raw";
        enc->streams.push_back({"raw", {-1, std::move(bytes)}});
      }
      return enc;
    }
    std::string key = chains[i]->to_json().dump();
    auto &slot = cache[key];
    if (!slot) slot = make_stages(chains[i]->stages, registry, false);
    encode_with_chain(*enc, values, *chains[i], *slot, pipeline, settings, nullptr);
    return enc;
  };

  auto worker = [&] {
    std::map<std::string, std::unique_ptr<Stages>> cache;
    while (!stop) {
      const size_t k = next.fetch_add(1);
      if (k >= mine.size()) return;
      const size_t i = mine[k];
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || k < handed + window; });
        // After a failure only tensors before it still matter: one of them may fail too, and
        // the earliest failure is the one reported, whatever the thread count.
        if (stop && (!error || i > error_index)) return;
      }
      try {
        auto enc = encode_one(i, cache);
        std::lock_guard<std::mutex> lock(mu);
        done[i] = std::move(enc);
      } catch (...) {
        // Tensors before i are already claimed and finish; the earliest failure is reported, so
        // the error does not depend on the thread count.
        std::lock_guard<std::mutex> lock(mu);
        if (!error || i < error_index) {
          error = std::current_exception();
          error_index = i;
        }
        stop = true;
      }
      cv.notify_all();
    }
  };

  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);

  CompressResult result;
  std::map<std::string, int32_t> config_index;
  ContainerManifest manifest;
  nlohmann::json resources = nlohmann::json::array();
  // This process's next coded tensor, once a worker has finished it (nullptr after an error).
  auto take = [&](size_t i) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return error || done[i] != nullptr; });
    return error ? nullptr : std::move(done[i]);
  };
  auto handed_one = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      ++handed;
    }
    cv.notify_all();
  };
  try {
    if (rank != 0) { // send each coded tensor to rank 0, in model order
      for (size_t i : mine) {
        auto enc = take(i);
        if (!enc) break;
        std::vector<uint8_t> msg = pack_encoded(*enc);
        enc.reset();
        job->send(0, msg.data(), msg.size());
        handed_one();
      }
    }
    for (size_t i = 0; rank == 0 && i < n; ++i) {
      std::unique_ptr<EncodedTensor> enc;
      if (owner[i] == 0) {
        enc = take(i);
        if (!enc) break;
      } else {
        enc = unpack_encoded(job->receive(owner[i]), model.tensors[i].info.name);
        if (chains[i]) {
          enc->chain = chains[i]->to_json();
          const auto &resolved = resolved_by_chain.at(enc->chain.dump());
          std::copy(resolved.begin(), resolved.end(), enc->resolved);
        }
      }
      TensorRecord rec = std::move(enc->record);
      for (auto &s : enc->streams)
        rec.streams.push_back(writer->append_stream(s.first, s.second.first, s.second.second.data(),
                                                    s.second.second.size()));
      if (rec.storage == "pipeline") {
        std::string key = enc->chain.dump();
        auto it = config_index.find(key);
        if (it == config_index.end()) {
          StageConfig cfg;
          for (size_t s = 0; s < kSlotNames.size(); ++s) {
            const auto &spec =
                enc->chain.contains(kSlotNames[s]) ? enc->chain[kSlotNames[s]] : nlohmann::json();
            if (spec.is_null()) continue;
            const Plugin *p = registry.find(spec["plugin"].get<std::string>());
            cfg.stages.push_back(StageRecord{kSlotNames[s], p->id, p->version, p->stream_version,
                                             enc->resolved[s].to_json()});
            record_resources(*p, enc->resolved[s], manifest.stage_configs.size(), kSlotNames[s],
                             settings.embed_resources, *writer, resources);
          }
          manifest.stage_configs.push_back(std::move(cfg));
          it = config_index.emplace(key, static_cast<int32_t>(manifest.stage_configs.size() - 1))
                   .first;
        }
        rec.stage_config = it->second;
      }
      result.tensors.push_back({rec.name, rec.storage, rec.numel(), rec.stream_bytes()});
      writer->add_tensor(std::move(rec));
      if (owner[i] == 0) handed_one();
      if (settings.progress) settings.progress(i + 1, n, result.tensors.back().name);
    }
  } catch (...) { // writing failed: nothing after it matters
    std::lock_guard<std::mutex> lock(mu);
    error = std::current_exception();
    error_index = 0;
    stop = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    if (error) stop = true;
  }
  cv.notify_all();
  for (auto &t : pool) t.join();
  if (error) std::rethrow_exception(error);
  if (rank != 0) return result; // rank 0 writes the container

  manifest.architecture = model.arch.to_json();
  if (!resources.empty()) manifest.extra["resources"] = resources;
  manifest.pipeline_name = pipeline.name;
  manifest.pipeline_text = pipeline.text;
  manifest.source_model = model.path.filename().string();
  manifest.source_format = model.format;
  writer->finish(std::move(manifest));
  result.file_bytes = std::filesystem::file_size(out);
  return result;
}

// ---- decoding ----------------------------------------------------------------------------------

struct ContainerDecoder::Impl {
  const ContainerReader *reader = nullptr;
  const Registry *registry = nullptr;
  std::vector<std::array<StageSpec, 5>> configs;
  // Buffers of one decoding thread, reused from block to block: the block's symbols, latents,
  // chunks and columns.
  struct Scratch {
    std::vector<int32_t> symbols;
    std::vector<float> latents, chunks, block;
  };
  // Idle stage sets per configuration, and idle scratch buffers. Instances are [instance-serial],
  // so each decoding thread leases its own set (with a scratch) and returns it when it is done.
  mutable std::mutex mu;
  mutable std::map<int32_t, std::vector<std::unique_ptr<Stages>>> idle;
  mutable std::vector<std::unique_ptr<Scratch>> idle_scratch;
  std::vector<std::filesystem::path>
      extracted; // embedded resources written out; removed at the end
  ~Impl() {
    idle.clear();
    std::error_code ec;
    for (const auto &p : extracted) std::filesystem::remove(p, ec);
  }

  struct Lease {
    const Impl *impl;
    int32_t config;
    std::unique_ptr<Stages> stages;
    std::unique_ptr<Scratch> scratch;
    ~Lease() {
      std::lock_guard<std::mutex> lock(impl->mu);
      impl->idle[config].push_back(std::move(stages));
      impl->idle_scratch.push_back(std::move(scratch));
    }
  };

  Lease lease(int32_t config) const {
    std::unique_ptr<Scratch> scratch;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle_scratch.empty()) {
        scratch = std::move(idle_scratch.back());
        idle_scratch.pop_back();
      }
      auto &pool = idle[config];
      if (!pool.empty()) {
        auto st = std::move(pool.back());
        pool.pop_back();
        return Lease{this, config, std::move(st),
                     scratch ? std::move(scratch) : std::make_unique<Scratch>()};
      }
    }
    auto st = make_stages(configs[static_cast<size_t>(config)], *registry, true);
    return Lease{this, config, std::move(st),
                 scratch ? std::move(scratch) : std::make_unique<Scratch>()};
  }

  // What every block of a tensor shares: its matrix shape and its tensor-level streams (row
  // scales, row gain, levels), read, checksummed and decoded once per tensor rather than once per
  // block. The last few are kept, keyed by content (shape and the streams' records), so that
  // random access to single blocks reads them once too.
  struct TensorPlan {
    int64_t rows = 0, cols = 0;
    std::vector<StreamRef> key; // the tensor-level streams it was read from
    TensorSide side;
    std::vector<float> row_gain;
  };
  static constexpr size_t kPlanCache = 8;
  mutable std::mutex plan_mu;
  mutable std::vector<std::shared_ptr<const TensorPlan>> plans; // most recently made last

  std::shared_ptr<const TensorPlan> plan_for(const TensorRecord &t) const {
    // Plain variables, not a structured binding: the lambda below captures them (clang < 16).
    const int64_t rows = as_matrix(t.shape).first, cols = as_matrix(t.shape).second;
    std::vector<StreamRef> key;
    for (const auto &s : t.streams)
      if (s.block == -1) key.push_back(s);
    auto same = [&](const TensorPlan &p) {
      if (p.rows != rows || p.cols != cols || p.key.size() != key.size()) return false;
      for (size_t i = 0; i < key.size(); ++i)
        if (p.key[i].role != key[i].role || p.key[i].offset != key[i].offset ||
            p.key[i].length != key[i].length || p.key[i].xxh64 != key[i].xxh64)
          return false;
      return true;
    };
    {
      std::lock_guard<std::mutex> lock(plan_mu);
      for (const auto &p : plans)
        if (same(*p)) return p;
    }
    auto p = std::make_shared<TensorPlan>();
    p->rows = rows;
    p->cols = cols;
    const std::string where = reader->path().string() + ": tensor " + t.name;
    for (const auto &s : key) {
      if (s.role == "row_scales")
        p->side.row_scales = decode_row_scales(reader->read_stream(t, s), rows, where);
      else if (s.role == "row_gain")
        p->row_gain = decode_row_scales(reader->read_stream(t, s), rows, where);
      else if (s.role == "levels")
        p->side.levels = unpack_levels(reader->read_stream(t, s), cols, where);
      else
        fail(NWC_E_CORRUPT_STREAM, where + ": unknown tensor stream role '" + s.role + "'");
    }
    p->key = std::move(key);
    std::lock_guard<std::mutex> lock(plan_mu);
    plans.push_back(p);
    if (plans.size() > kPlanCache) plans.erase(plans.begin());
    return p;
  }

  // Decodes block `block` of t (whose streams are `streams`) into dst: rows x width floats with
  // row stride ld.
  void decode_into(const TensorRecord &t, const TensorPlan &plan, size_t block,
                   const std::vector<const StreamRef *> &streams, Lease &lease, float *dst,
                   int64_t ld) const {
    const std::string file = reader->path().string();
    const Stages &st = *lease.stages;
    Scratch &sc = *lease.scratch;
    const int64_t rows = plan.rows;
    const BlockRecord &b = t.blocks[block];
    std::span<const uint8_t> chunk_side, quant_side, coded; // in the mapped file, checksummed
    bool have_entropy = false;
    for (const StreamRef *s : streams) {
      if (s->role == "chunker")
        chunk_side = reader->stream_view(t, *s);
      else if (s->role == "quantizer")
        quant_side = reader->stream_view(t, *s);
      else if (s->role == "entropy") {
        coded = reader->stream_view(t, *s);
        have_entropy = true;
      } else
        fail(NWC_E_CORRUPT_STREAM,
             file + ": tensor " + t.name + ": unknown stream role '" + s->role + "'");
    }
    nwc_block_info info = block_info(t.name, rows, plan.cols, b.col_begin, b.col_end, plan.side);
    Geometry g = plan_block(st, info);
    if (g.symbols() != b.symbol_count)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + " block " + std::to_string(block) +
                                     ": manifest says " + std::to_string(b.symbol_count) +
                                     " symbols, the stages expect " + std::to_string(g.symbols()));
    const std::vector<uint8_t> levels = chunk_levels(st, info, g, plan.side.levels);
    if (!levels.empty()) info.chunk_levels = levels.data();
    if (!have_entropy)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + " block " + std::to_string(block) +
                                     " has no entropy stream");

    sc.symbols.resize(static_cast<size_t>(g.symbols()));
    View sym_v(sc.symbols.data(), NWC_DTYPE_I32, g.count, g.latent);
    const nwc_cdf_model *model =
        st.transform ? st.transform->probability_model(st.at(Slot::Transform).raw()) : nullptr;
    st.at(Slot::Entropy)
        .check(st.entropy->decode(st.at(Slot::Entropy).raw(), nwc_bytes{coded.data(), coded.size()},
                                  model, sym_v.get()),
               ("decode of tensor " + t.name).c_str());
    sc.latents.resize(sc.symbols.size());
    View lat_v(sc.latents.data(), NWC_DTYPE_F32, g.count, g.latent);
    st.at(Slot::Quantizer)
        .check(st.quantizer->dequantize(st.at(Slot::Quantizer).raw(), &info, sym_v.get(),
                                        nwc_bytes{quant_side.data(), quant_side.size()},
                                        lat_v.get()),
               ("dequantize of tensor " + t.name).c_str());
    nwc_tensor_view *chunks = lat_v.get();
    View chunks_v(nullptr, NWC_DTYPE_F32, g.count, g.length);
    if (st.transform) {
      sc.chunks.resize(static_cast<size_t>(g.count * g.length));
      chunks_v.view.data = sc.chunks.data();
      st.at(Slot::Transform)
          .check(st.transform->inverse(st.at(Slot::Transform).raw(), &info, lat_v.get(),
                                       chunks_v.get()),
                 ("inverse of tensor " + t.name).c_str());
      chunks = chunks_v.get();
    }
    // The chunker merges into dst when the block's rows are contiguous there, else into the
    // scratch block, copied into dst's columns afterwards.
    const int64_t w = b.col_end - b.col_begin;
    float *merged = dst;
    if (ld != w) {
      sc.block.resize(static_cast<size_t>(rows * w));
      merged = sc.block.data();
    }
    View out_v(merged, NWC_DTYPE_F32, rows, w);
    st.at(Slot::Chunker)
        .check(st.chunker->merge(st.at(Slot::Chunker).raw(), &info, chunks,
                                 nwc_bytes{chunk_side.data(), chunk_side.size()}, out_v.get()),
               ("merge of tensor " + t.name).c_str());
    for (int64_t i = 0; i < rows; ++i) {
      float *row = dst + i * ld;
      if (merged != dst) std::copy_n(merged + i * w, w, row);
      if (!plan.row_gain
               .empty()) { // a host row gain (fine-tuned scales where the chunker has none)
        const double gain = plan.row_gain[static_cast<size_t>(i)];
        for (int64_t j = 0; j < w; ++j)
          row[j] = static_cast<float>(static_cast<double>(row[j]) * gain);
      }
    }
  }
};

namespace {

std::string file_hash(const std::filesystem::path &p) {
  MappedFile f(p);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(container_checksum(f.data(), f.size())));
  return hex;
}

// Where a recorded resource is on this machine (see ContainerDecoder), verified by hash.
std::string resolve_resource(const ContainerReader &reader, const nlohmann::json &r,
                             std::vector<std::filesystem::path> &extracted) {
  namespace fs = std::filesystem;
  const std::string file = reader.path().string();
  auto str = [&](const char *key) {
    if (!r.contains(key) || !r[key].is_string())
      fail(NWC_E_CORRUPT_STREAM, file + ": manifest resource lacks string '" + key + "'");
    return r[key].get<std::string>();
  };
  const std::string want = str("xxh64"), name = str("file"), recorded = str("path");
  const std::string what = "plugin " + str("plugin") + " option " + str("option");
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    fail(NWC_E_CORRUPT_STREAM, file + ": " + what + ": bad resource file name '" + name + "'");
  if (r.contains("stream")) {
    const auto &js = r["stream"];
    StreamRef ref;
    ref.role = "resource";
    try {
      ref.offset = js.at("offset").get<uint64_t>();
      ref.length = js.at("length").get<uint64_t>();
      ref.xxh64 = std::stoull(js.at("xxh64").get<std::string>(), nullptr, 16);
    } catch (const std::exception &) {
      fail(NWC_E_CORRUPT_STREAM, file + ": " + what + ": malformed embedded resource record");
    }
    std::vector<uint8_t> bytes = reader.read_stream_at(ref, "embedded " + name);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(container_checksum(bytes.data(), bytes.size())));
    if (want != hex)
      fail(NWC_E_CORRUPT_STREAM,
           file + ": embedded " + name + " hashes to " + hex + ", the manifest expects " + want);
    std::string tmpl = (fs::temp_directory_path() / ("nwc-resource-XXXXXX-" + name)).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    int fd = mkstemps(buf.data(), static_cast<int>(name.size() + 1));
    if (fd < 0) fail(NWC_E_IO, file + ": cannot create a temporary file for embedded " + name);
    fs::path out(buf.data());
    extracted.push_back(out);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w <= 0) {
        ::close(fd);
        fail(NWC_E_IO, out.string() + ": write failed");
      }
      done += static_cast<size_t>(w);
    }
    ::close(fd);
    return out.string();
  }
  std::vector<fs::path> candidates{recorded, reader.path().parent_path() / name};
  if (const char *env = std::getenv("NWC_CODEC_PATH")) {
    std::string dirs = env;
    for (size_t a = 0; a <= dirs.size();) {
      size_t b = dirs.find(':', a);
      if (b == std::string::npos) b = dirs.size();
      if (b > a) candidates.push_back(fs::path(dirs.substr(a, b - a)) / name);
      a = b + 1;
    }
  }
  boost::system::error_code bec;
  auto exe = boost::dll::program_location(bec);
  if (!bec)
    candidates.push_back(fs::path(exe.parent_path().string()) / ".." / "share" / "nwc" / "codecs" /
                         name);
  std::string mismatch;
  std::error_code ec;
  for (const auto &c : candidates) {
    if (!fs::is_regular_file(c, ec)) continue;
    const std::string got = file_hash(c);
    if (got == want) return c.string();
    if (mismatch.empty()) mismatch = c.string() + " hashes to " + got;
  }
  if (!mismatch.empty())
    fail(NWC_E_VERSION, file + ": " + what + " needs " + name + " with xxh64 " + want + ", but " +
                            mismatch + " (a different codec); put the right one on NWC_CODEC_PATH");
  fail(NWC_E_IO, file + ": " + what + " needs " + name + " (xxh64 " + want + "), not found at " +
                     recorded +
                     ", next to the container or on NWC_CODEC_PATH (compress with "
                     "--embed-codec to carry it inside the container)");
}

} // namespace

ContainerDecoder::ContainerDecoder(const ContainerReader &reader, const Registry &registry)
    : impl_(std::make_unique<Impl>()) {
  impl_->reader = &reader;
  impl_->registry = &registry;
  const std::string file = reader.path().string();
  for (size_t cfg_index = 0; cfg_index < reader.manifest().stage_configs.size(); ++cfg_index) {
    const StageConfig &cfg = reader.manifest().stage_configs[cfg_index];
    std::array<StageSpec, 5> specs;
    for (const auto &s : cfg.stages) {
      bool known = false;
      size_t slot = 0;
      for (size_t i = 0; i < kSlotNames.size(); ++i)
        if (s.slot == kSlotNames[i]) {
          known = true;
          slot = i;
        }
      if (!known) fail(NWC_E_CORRUPT_STREAM, file + ": unknown stage slot '" + s.slot + "'");
      if (static_cast<Slot>(slot) == Slot::Compensator) continue; // not needed to decode
      const Plugin *p = registry.find(s.plugin_id);
      if (!p)
        fail(NWC_E_VERSION, file + ": needs plugin " + s.plugin_id + " (version " +
                                s.plugin_version + ", stream version " +
                                std::to_string(s.stream_version) +
                                "), which is not installed; see `nwc plugins list`");
      if (p->kind != slot_kind(static_cast<Slot>(slot)))
        fail(NWC_E_CORRUPT_STREAM, file + ": plugin " + s.plugin_id + " recorded as " + s.slot +
                                       " is a " + kind_name(p->kind));
      if (p->stream_version < s.stream_version)
        fail(NWC_E_VERSION, file + ": needs plugin " + s.plugin_id + " reading stream version " +
                                std::to_string(s.stream_version) + ", but the installed version " +
                                p->version + " reads up to " + std::to_string(p->stream_version));
      specs[slot].plugin = s.plugin_id;
      specs[slot].options = OptionValues::from_json(s.options, p->options.data(),
                                                    static_cast<uint32_t>(p->options.size()),
                                                    file + ": plugin " + s.plugin_id);
      // Path options recorded as resources point at files verified by hash on this machine.
      if (reader.manifest().extra.contains("resources") &&
          reader.manifest().extra["resources"].is_array())
        for (const auto &r : reader.manifest().extra["resources"]) {
          if (!r.is_object() || r.value("config", -1) != static_cast<int64_t>(cfg_index) ||
              r.value("slot", "") != s.slot)
            continue;
          const std::string key = r.value("option", "");
          const nwc_option_spec *spec = p->option(key);
          if (!spec || spec->type != NWC_OPT_PATH)
            fail(NWC_E_CORRUPT_STREAM, file + ": resource for unknown path option '" + key +
                                           "' of plugin " + s.plugin_id);
          specs[slot].options.set(
              OptionValue{key, NWC_OPT_PATH, resolve_resource(reader, r, impl_->extracted)});
        }
      std::string why = validate_options(*p, specs[slot].options);
      if (!why.empty()) fail(NWC_E_CORRUPT_STREAM, file + ": plugin " + s.plugin_id + ": " + why);
    }
    for (Slot req : {Slot::Chunker, Slot::Quantizer, Slot::Entropy})
      if (specs[static_cast<size_t>(req)].plugin.empty())
        fail(NWC_E_CORRUPT_STREAM,
             file + ": a stage configuration lacks its " + kSlotNames[static_cast<size_t>(req)]);
    impl_->configs.push_back(std::move(specs));
  }
}

ContainerDecoder::~ContainerDecoder() = default;

std::vector<float> ContainerDecoder::decode_block(const TensorRecord &t, size_t block) const {
  const ContainerReader &reader = *impl_->reader;
  const std::string file = reader.path().string();
  if (t.storage != "pipeline" || block >= t.blocks.size())
    fail(NWC_E_INVALID_ARG, file + ": tensor " + t.name + " has no block " + std::to_string(block));
  auto lease = impl_->lease(t.stage_config);
  const auto plan = impl_->plan_for(t);
  std::vector<const StreamRef *> streams;
  for (const auto &s : t.streams)
    if (s.block == static_cast<int32_t>(block)) streams.push_back(&s);
  const BlockRecord &b = t.blocks[block];
  const int64_t w = b.col_end - b.col_begin;
  std::vector<float> out(static_cast<size_t>(plan->rows * w));
  impl_->decode_into(t, *plan, block, streams, lease, out.data(), w);
  return out;
}

std::vector<float> ContainerDecoder::decode_tensor(const TensorRecord &t, unsigned threads) const {
  const ContainerReader &reader = *impl_->reader;
  const std::string file = reader.path().string();
  const uint64_t numel = t.numel();
  if (t.storage == "raw" || t.storage == "zstd") {
    if (t.streams.size() != 1)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + " should have one stream");
    std::vector<uint8_t> bytes = reader.read_stream(t, t.streams[0]);
    const uint64_t expect = numel * dtype_size(t.dtype);
    if (t.storage == "zstd") {
      unsigned long long size = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
      if (size != expect)
        fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": zstd frame holds " +
                                       std::to_string(size) + " bytes, expected " +
                                       std::to_string(expect));
      // A zstd block of at least 4 bytes (header + RLE byte) yields at most 128 KiB: refuse a
      // declared size no stream of this length can hold before allocating it.
      if (expect / 32768 > bytes.size())
        fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": zstd stream of " +
                                       std::to_string(bytes.size()) + " bytes cannot hold the " +
                                       std::to_string(expect) + " bytes of its shape");
      std::vector<uint8_t> raw(static_cast<size_t>(expect));
      size_t got = ZSTD_decompress(raw.data(), raw.size(), bytes.data(), bytes.size());
      if (ZSTD_isError(got) || got != expect)
        fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": zstd stream is corrupt");
      bytes.swap(raw);
    }
    if (bytes.size() != expect)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": raw stream has " +
                                     std::to_string(bytes.size()) + " bytes, expected " +
                                     std::to_string(expect));
    std::vector<float> out = tensor_buffer(static_cast<size_t>(numel));
    to_float(t.dtype, bytes.data(), out.size(), out.data());
    return out;
  }
  // Pipeline tensors: the tensor-level streams are read once, each block's streams found once,
  // and the blocks decoded straight into their columns of the output by up to `threads` threads
  // (the calling thread is one of them), each with one leased stage set and scratch for all the
  // blocks it takes. Blocks are taken in order; after a failure no new block starts, and the error
  // reported is the one of the first failing block, whatever the thread count.
  const auto plan = impl_->plan_for(t);
  const int64_t cols = plan->cols;
  std::vector<float> out = tensor_buffer(static_cast<size_t>(numel));
  const size_t nb = t.blocks.size();
  std::vector<std::vector<const StreamRef *>> streams(nb);
  for (const auto &s : t.streams)
    if (s.block >= 0 && static_cast<size_t>(s.block) < nb)
      streams[static_cast<size_t>(s.block)].push_back(&s);
  std::atomic<size_t> next{0};
  std::mutex mu;
  size_t failed = nb;
  std::exception_ptr error;
  auto fail_at = [&](size_t b) {
    std::lock_guard<std::mutex> lock(mu);
    if (b < failed) {
      failed = b;
      error = std::current_exception();
    }
    next = nb;
  };
  auto work = [&] {
    size_t b = next.fetch_add(1);
    if (b >= nb) return;
    try {
      auto lease = impl_->lease(t.stage_config);
      for (; b < nb; b = next.fetch_add(1)) {
        try {
          impl_->decode_into(t, *plan, b, streams[b], lease, out.data() + t.blocks[b].col_begin,
                             cols);
        } catch (...) {
          fail_at(b);
        }
      }
    } catch (...) { // no stage set for this thread: block b fails
      fail_at(b);
    }
  };
  const unsigned nthreads = std::min<unsigned>(resolve_threads(threads), static_cast<unsigned>(nb));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < nthreads; ++i) pool.emplace_back(work);
  work();
  for (auto &th : pool) th.join();
  if (error) std::rethrow_exception(error);
  return out;
}

Model open_container_model(const std::filesystem::path &path, const Registry &registry,
                           unsigned threads) {
  struct State {
    ContainerReader reader;
    std::unique_ptr<ContainerDecoder> decoder;
    explicit State(const std::filesystem::path &p) : reader(p) {}
  };
  auto state = std::make_shared<State>(path);
  state->decoder = std::make_unique<ContainerDecoder>(state->reader, registry);
  Model m;
  m.format = "nwc";
  m.path = path;
  m.arch = Architecture::from_json(state->reader.manifest().architecture);
  for (const auto &t : state->reader.manifest().tensors) {
    ModelTensor mt;
    mt.info.name = t.name;
    mt.info.dtype = t.dtype;
    mt.info.shape = t.shape;
    const TensorRecord *rec = &t;
    State *s = state.get();
    mt.load = [s, rec, threads] { return s->decoder->decode_tensor(*rec, threads); };
    m.tensors.push_back(std::move(mt));
  }
  m.keepalive = state;
  return m;
}

void decompress_to_safetensors(const std::filesystem::path &in, const std::filesystem::path &out,
                               const Registry &registry, DType dtype, unsigned threads,
                               const ProgressFn &progress) {
  ContainerReader reader(in);
  ContainerDecoder decoder(reader, registry);
  const Architecture arch = Architecture::from_json(reader.manifest().architecture);
  const std::vector<TensorRecord> &tensors = reader.manifest().tensors;
  std::vector<TensorInfo> infos;
  for (const auto &t : tensors) infos.push_back(TensorInfo{t.name, dtype, t.shape});
  std::map<std::string, std::string> meta{{"format", "pt"},
                                          {"nwc.architecture", arch.to_json().dump()},
                                          {"nwc.source", in.filename().string()}};
  SafetensorsWriter writer(out, infos, meta);

  // Work units in model order: the column blocks of a pipeline tensor with several blocks, else
  // the whole tensor. Worker threads take units in order, so blocks of one tensor and tensors with
  // a single unit (raw, zstd, one block) decode in parallel; the calling thread writes the tensors
  // in model order as they complete. At most `window` tensors are in memory (decoding, decoded or
  // being written). The error reported is the one of the first failing unit in model order.
  struct TensorJob {
    const TensorRecord *t = nullptr;
    size_t units = 1, done = 0; // done: guarded by mu
    std::vector<float> values;
    std::once_flag alloc;
  };
  std::vector<std::unique_ptr<TensorJob>> jobs;
  for (const auto &t : tensors) {
    auto j = std::make_unique<TensorJob>();
    j->t = &t;
    if (t.storage == "pipeline" && t.blocks.size() > 1) j->units = t.blocks.size();
    jobs.push_back(std::move(j));
  }
  const unsigned workers = resolve_threads(threads);
  const size_t window = workers + 1;
  std::mutex mu;
  std::vector<std::vector<float>> spare; // buffers of written tensors, reused (no fresh pages)
  std::condition_variable work_cv, done_cv;
  size_t next_job = 0, next_unit = 0, written = 0;
  bool stop = false;
  std::pair<size_t, size_t> failed{jobs.size(), 0};
  std::exception_ptr error;
  auto record = [&](size_t job, size_t unit, std::exception_ptr e) { // with mu held
    if (std::make_pair(job, unit) < failed) {
      failed = {job, unit};
      error = std::move(e);
    }
    stop = true;
    work_cv.notify_all();
    done_cv.notify_all();
  };
  auto work = [&] {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      work_cv.wait(lock,
                   [&] { return stop || next_job >= jobs.size() || next_job < written + window; });
      if (stop || next_job >= jobs.size()) return;
      const size_t ji = next_job, u = next_unit;
      TensorJob &j = *jobs[ji];
      if (++next_unit == j.units) {
        ++next_job;
        next_unit = 0;
      }
      lock.unlock();
      try {
        const TensorRecord &t = *j.t;
        if (j.units == 1) {
          j.values = decoder.decode_tensor(t, 1);
        } else {
          std::vector<float> block = decoder.decode_block(t, u);
          const BlockRecord &br = t.blocks[u];
          const int64_t w = br.col_end - br.col_begin;
          const int64_t cols = as_matrix(t.shape).second;
          std::call_once(j.alloc, [&] {
            const auto n = static_cast<size_t>(t.numel());
            {
              std::lock_guard<std::mutex> guard(mu);
              for (auto &b : spare)
                if (b.capacity() >= n) {
                  j.values = std::move(b);
                  std::swap(b, spare.back());
                  spare.pop_back();
                  break;
                }
            }
            if (j.values.capacity() < n) j.values = tensor_buffer(n);
            j.values.resize(n); // every block overwrites its columns
          });
          for (int64_t r = 0; r * w < static_cast<int64_t>(block.size()); ++r)
            std::copy_n(block.data() + r * w, w, j.values.data() + r * cols + br.col_begin);
        }
        lock.lock();
        if (++j.done == j.units) done_cv.notify_all();
      } catch (...) {
        lock.lock();
        record(ji, u, std::current_exception());
      }
    }
  };
  std::vector<std::thread> pool;
  auto join = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto &th : pool) th.join();
    pool.clear();
  };
  try {
    for (unsigned i = 0; i < workers; ++i) pool.emplace_back(work);
    for (size_t i = 0; i < jobs.size(); ++i) {
      std::vector<float> values;
      {
        std::unique_lock<std::mutex> lock(mu);
        done_cv.wait(lock, [&] { return stop || jobs[i]->done == jobs[i]->units; });
        if (stop) break;
        values = std::move(jobs[i]->values);
      }
      writer.write(tensors[i].name, values.data());
      {
        std::lock_guard<std::mutex> lock(mu);
        written = i + 1;
        // One spare at most: memory stays about (window + 1) x the largest tensor.
        if (spare.empty() && values.capacity() > 0) spare.push_back(std::move(values));
      }
      work_cv.notify_all();
      if (progress) progress(i + 1, tensors.size(), tensors[i].name);
    }
  } catch (...) {
    join();
    throw;
  }
  join();
  if (error) std::rethrow_exception(error);
  writer.commit();
}

} // namespace nwc::host
