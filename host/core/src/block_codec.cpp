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

void BlockCodec::encode_block(int64_t c0, int64_t c1, const nwc_tensor_view *values,
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
        .check(
            st.transform->forward(st.at(Slot::Transform).raw(), &info, chunks_v.get(), lat_v.get()),
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
  if (!quant_side.bytes.empty()) out.streams.emplace_back("quantizer", std::move(quant_side.bytes));
  out.streams.emplace_back("entropy", std::move(coded.bytes));
  blocks.push_back(std::move(out));
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
