// block_codec.cpp — the host side of nwc_block_codec (a block of columns through the decode-side
// stages and back) and the coalescing of adjacent blocks.
#include "block_codec.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>

namespace nwc::host::detail {

nwc_status BlockCodec::encode(nwc_block_codec *self, int64_t c0, int64_t c1,
                              const nwc_tensor_view *values, nwc_tensor_view *recon) {
  return encode_ex(self, c0, c1, values, nullptr, 0, recon);
}

nwc_status BlockCodec::encode_ex(nwc_block_codec *self, int64_t c0, int64_t c1,
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

namespace {

// One block on its way through the decode-side stages as the encoder runs them: chunker.split,
// transform.forward, quantizer.quantize (or quantize_fitted), entropy.encode, and back through
// transform.inverse and chunker.merge to exactly what the decoder will reconstruct.
class BlockPass {
public:
  BlockPass(const Stages &st, const nwc_block_info &info, const TensorSide &side)
      : st_(st), info_(info), g_(plan_block(st, info)),
        levels_(chunk_levels(st, info, g_, side.levels)), importance_(&side.importance) {
    if (!levels_.empty()) info_.chunk_levels = levels_.data();
  }
  BlockPass(const BlockPass &) = delete;
  BlockPass &operator=(const BlockPass &) = delete;

  const Geometry &geometry() const { return g_; }

  // values -> chunks (+ the chunker's side information) -> latents.
  void analyze(const nwc_tensor_view *values) {
    chunks_.resize(static_cast<size_t>(g_.count * g_.length));
    split(values, chunks_, chunk_side_);
    latents_ = forward(chunks_, latents_buf_);
    if (!importance_->empty()) split_importance();
  }

  // latents -> symbols and their dequantized values (+ the quantizer's side information).
  void quantize() {
    allocate_symbols();
    View lat_in(latents_->data(), NWC_DTYPE_F32, g_.count, g_.latent);
    View sym_v(symbols_.data(), NWC_DTYPE_I32, g_.count, g_.latent);
    View deq_v(dequant_.data(), NWC_DTYPE_F32, g_.count, g_.latent);
    const Instance &q = st_.at(Slot::Quantizer);
    q.check(st_.quantizer->quantize(q.raw(), &info_, lat_in.get(), sym_v.get(), deq_v.get(),
                                    &quant_side_.sink),
            "quantize");
  }

  // The same with the quantizer's parameters fitted on reference values (GPTQ groups), which go
  // through the same chunker and transform; a chunker whose side information depends on the
  // values cannot serve both, so that is refused.
  void quantize_fitted(const nwc_tensor_view *fit, const std::string &tensor) {
    allocate_symbols();
    std::vector<float> ref_chunks(chunks_.size()), ref_lat_buf;
    VectorSink ref_side;
    split(fit, ref_chunks, ref_side);
    if (ref_side.bytes != chunk_side_.bytes)
      fail(NWC_E_INVALID_ARG, "tensor " + tensor + ": chunker " +
                                  st_.at(Slot::Chunker).plugin().id +
                                  " writes value-dependent side information, which fitted "
                                  "quantization (GPTQ groups) cannot use");
    std::vector<float> *ref_lat = forward(ref_chunks, ref_lat_buf);
    if (!interface_has(st_.quantizer, offsetof(nwc_quantizer_interface, quantize_fitted)) ||
        !st_.quantizer->quantize_fitted)
      fail(NWC_E_INVALID_ARG, "tensor " + tensor + ": quantizer " +
                                  st_.at(Slot::Quantizer).plugin().id +
                                  " cannot fit its parameters on reference values (needed by "
                                  "the compensator)");
    View lat_in(latents_->data(), NWC_DTYPE_F32, g_.count, g_.latent);
    View ref_v(ref_lat->data(), NWC_DTYPE_F32, g_.count, g_.latent);
    View sym_v(symbols_.data(), NWC_DTYPE_I32, g_.count, g_.latent);
    View deq_v(dequant_.data(), NWC_DTYPE_F32, g_.count, g_.latent);
    const Instance &q = st_.at(Slot::Quantizer);
    q.check(st_.quantizer->quantize_fitted(q.raw(), &info_, lat_in.get(), ref_v.get(), sym_v.get(),
                                           deq_v.get(), &quant_side_.sink),
            "quantize_fitted");
  }

  // symbols -> bytes, with the transform's probability model if it has one.
  void entropy_code() {
    nwc_cdf_model copy{};
    const nwc_cdf_model *model = stream_model(st_, info_, g_.latent, copy);
    View sym_v(symbols_.data(), NWC_DTYPE_I32, g_.count, g_.latent);
    const Instance &e = st_.at(Slot::Entropy);
    e.check(st_.entropy->encode(e.raw(), sym_v.get(), model, &coded_.sink), "encode");
  }

  // The reconstruction exactly as the decoder computes it: dequantized latents -> inverse ->
  // merge into recon.
  void synthesize(nwc_tensor_view *recon) {
    if (st_.transform) {
      rec_chunks_.resize(static_cast<size_t>(g_.count * g_.length));
      View deq_v(dequant_.data(), NWC_DTYPE_F32, g_.count, g_.latent);
      View rec_v(rec_chunks_.data(), NWC_DTYPE_F32, g_.count, g_.length);
      const Instance &t = st_.at(Slot::Transform);
      t.check(st_.transform->inverse(t.raw(), &info_, deq_v.get(), rec_v.get()), "inverse");
    }
    merge(info_, recon);
  }

  // The reconstruction merged with unit row scales (rows x width into unit).
  void synthesize_unit(int64_t rows, std::vector<float> &unit) {
    std::vector<float> ones(static_cast<size_t>(rows), 1.0f);
    nwc_block_info unit_info = info_;
    unit_info.row_scales = ones.data();
    View unit_v(unit.data(), NWC_DTYPE_F32, rows, info_.col_end - info_.col_begin);
    merge(unit_info, unit_v.get());
  }

  // The block's streams: "chunker" and "quantizer" side information when not empty, "entropy".
  void take_streams(EncodedBlock &out) {
    if (!chunk_side_.bytes.empty())
      out.streams.emplace_back("chunker", std::move(chunk_side_.bytes));
    if (!quant_side_.bytes.empty())
      out.streams.emplace_back("quantizer", std::move(quant_side_.bytes));
    out.streams.emplace_back("entropy", std::move(coded_.bytes));
  }

private:
  void split(const nwc_tensor_view *values, std::vector<float> &chunks, VectorSink &side) const {
    View chunks_v(chunks.data(), NWC_DTYPE_F32, g_.count, g_.length);
    const Instance &c = st_.at(Slot::Chunker);
    c.check(st_.chunker->split(c.raw(), &info_, values, chunks_v.get(), &side.sink), "split");
  }

  // The latents of chunks: in buf with a transform, else the chunks themselves.
  std::vector<float> *forward(std::vector<float> &chunks, std::vector<float> &buf) const {
    if (!st_.transform) return &chunks;
    buf.resize(static_cast<size_t>(g_.count * g_.latent));
    View chunks_v(chunks.data(), NWC_DTYPE_F32, g_.count, g_.length);
    View lat_v(buf.data(), NWC_DTYPE_F32, g_.count, g_.latent);
    const Instance &t = st_.at(Slot::Transform);
    t.check(st_.transform->forward(t.raw(), &info_, chunks_v.get(), lat_v.get()), "forward");
    return &buf;
  }

  // The per-column importance as a [rows, width] matrix through the chunker, with unit row scales
  // (an importance weight belongs to its column, whatever the row's scale): the quantizer then
  // finds each latent's weight at the latent's index. A chunker whose chunks depend on the values
  // (its side information differs) cannot place it, which is an error.
  void split_importance() {
    const int64_t rows = info_.rows, width = info_.col_end - info_.col_begin;
    std::vector<float> matrix(static_cast<size_t>(rows * width));
    for (int64_t r = 0; r < rows; ++r)
      std::copy(importance_->begin() + info_.col_begin, importance_->begin() + info_.col_end,
                matrix.begin() + r * width);
    std::vector<float> ones(static_cast<size_t>(rows), 1.0f);
    nwc_block_info unit = info_;
    unit.row_scales = ones.data();
    View mv(matrix.data(), NWC_DTYPE_F32, rows, width);
    importance_chunks_.resize(chunks_.size());
    View cv(importance_chunks_.data(), NWC_DTYPE_F32, g_.count, g_.length);
    VectorSink side;
    const Instance &c = st_.at(Slot::Chunker);
    c.check(st_.chunker->split(c.raw(), &unit, mv.get(), cv.get(), &side.sink), "split");
    if (side.bytes != chunk_side_.bytes)
      fail(NWC_E_INVALID_ARG, std::string("tensor ") + info_.tensor_name + ": chunker " +
                                  c.plugin().id +
                                  " writes value-dependent side information, so [importance] "
                                  "cannot be split like the weights");
    info_.importance = importance_chunks_.data();
  }

  void allocate_symbols() {
    symbols_.resize(static_cast<size_t>(g_.symbols()));
    dequant_.resize(symbols_.size());
  }

  // Without a transform the dequantized latents are the chunks ([count, latent] = [count, length]).
  void merge(const nwc_block_info &info, nwc_tensor_view *out) {
    View rec_v(st_.transform ? rec_chunks_.data() : dequant_.data(), NWC_DTYPE_F32, g_.count,
               st_.transform ? g_.length : g_.latent);
    nwc_bytes side{chunk_side_.bytes.data(), chunk_side_.bytes.size()};
    const Instance &c = st_.at(Slot::Chunker);
    c.check(st_.chunker->merge(c.raw(), &info, rec_v.get(), side, out), "merge");
  }

  const Stages &st_;
  nwc_block_info info_;
  Geometry g_;
  std::vector<uint8_t> levels_;          // per chunk (info_.chunk_levels); empty: none
  const std::vector<float> *importance_; // the tensor's per-column importance (may be empty)
  std::vector<float> importance_chunks_; // [count, length] like chunks_ (info_.importance)
  std::vector<float> chunks_, latents_buf_;
  std::vector<float> *latents_ = nullptr; // latents_buf_, or chunks_ without a transform
  std::vector<int32_t> symbols_;
  std::vector<float> dequant_, rec_chunks_;
  VectorSink chunk_side_, quant_side_, coded_;
};

} // namespace

void BlockCodec::check_request(int64_t c0, int64_t c1, const nwc_tensor_view *values,
                               const nwc_tensor_view *fit, uint32_t flags,
                               const nwc_tensor_view *recon) const {
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
}

void BlockCodec::encode_block(int64_t c0, int64_t c1, const nwc_tensor_view *values,
                              const nwc_tensor_view *fit, uint32_t flags, nwc_tensor_view *recon) {
  check_request(c0, c1, values, fit, flags, recon);
  const bool dry = (flags & NWC_BLOCK_DRY_RUN) != 0;
  BlockPass pass(*stages, block_info(name, rows, cols, c0, c1, tensor_side), tensor_side);
  EncodedBlock out;
  out.record = {c0, c1, pass.geometry().symbols()};
  pass.analyze(values);
  if (fit)
    pass.quantize_fitted(fit, name);
  else
    pass.quantize();
  if (!dry) pass.entropy_code(); // a trial needs only the reconstruction
  pass.synthesize(recon);
  if (dry) return;

  const int64_t w = c1 - c0;
  if (full_reconstruction)
    copy_columns(static_cast<const float *>(recon->data), c0, w, *full_reconstruction);
  if (unit_reconstruction && !tensor_side.row_scales.empty()) {
    // The block merged with unit row scales: what fine-tuned scales will multiply.
    std::vector<float> unit(static_cast<size_t>(rows * w));
    pass.synthesize_unit(rows, unit);
    copy_columns(unit.data(), c0, w, *unit_reconstruction);
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
  pass.take_streams(out);
  blocks.push_back(std::move(out));
}

void BlockCodec::copy_columns(const float *block, int64_t c0, int64_t w,
                              std::vector<float> &tensor) const {
  for (int64_t i = 0; i < rows; ++i)
    std::copy(block + i * w, block + (i + 1) * w, tensor.data() + i * cols + c0);
}

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

} // namespace nwc::host::detail
