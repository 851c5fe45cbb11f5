// encode_tensor.cpp — one tensor through its stage chain: tensor-level side information, then the
// compensator driving the block codec; and the row scales of a tensor coded ahead.
#include "block_codec.hpp"
#include "encoded_tensor.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/host/levels.hpp"
#include "tensor_side.hpp"

#include <algorithm>
#include <cstddef>

namespace nwc::host {

namespace detail {

namespace {

// The chunker's row scales for the whole tensor (ABI 1.2), when it has them: every block is coded
// with them, and they are stored as stream "row_scales".
void add_row_scales(EncodedTensor &enc, BlockCodec &bc, const Stages &st,
                    const nwc_tensor_view &weight) {
  if (!interface_has(st.chunker, offsetof(nwc_chunker_interface, row_scales)) ||
      !st.chunker->row_scales)
    return;
  const std::string &name = enc.record.name;
  std::vector<float> scales(static_cast<size_t>(bc.rows), 1.0f);
  int64_t sshape[1] = {bc.rows};
  nwc_tensor_view sv{scales.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 1, sshape, nullptr};
  uint32_t code = 0;
  nwc_block_info whole = block_info(name, bc.rows, bc.cols, 0, bc.cols, TensorSide{});
  st.at(Slot::Chunker)
      .check(st.chunker->row_scales(st.at(Slot::Chunker).raw(), &whole, &weight, &sv, &code),
             "row_scales");
  if (code == 0) return;
  auto bytes = encode_row_scales(
      code, scales, "tensor " + name + ": chunker " + st.at(Slot::Chunker).plugin().id);
  bc.tensor_side.row_scales = std::move(scales);
  enc.streams.push_back({"row_scales", {-1, std::move(bytes)}});
}

// The quality level of every input column: given by the settings, else from the calibration
// Hessian when the pipeline has [levels]. Handed to the transform per chunk and stored as stream
// "levels".
void add_levels(EncodedTensor &enc, BlockCodec &bc, const Stages &st, const Pipeline &pipeline,
                const CompressSettings &settings) {
  const std::string &name = enc.record.name;
  std::vector<uint8_t> hessian_levels;
  const std::vector<uint8_t> *column_levels = nullptr;
  if (auto lv = settings.column_levels.find(name); lv != settings.column_levels.end())
    column_levels = &lv->second;
  else if (pipeline.levels_for(name)) {
    auto h = settings.hessians.find(name);
    if (h == settings.hessians.end())
      fail(NWC_E_INVALID_ARG,
           pipeline.levels.where + ": [levels] needs the calibration Hessian of " + name +
               " (pass --calibration FILE from `nwc calibrate`, or --calibrate)");
    hessian_levels =
        levels_from_hessian(h->second.load()->data(), bc.cols, pipeline.levels.fractions);
    column_levels = &hessian_levels;
  }
  if (!column_levels) return;
  if (st.rotation)
    fail(NWC_E_INVALID_ARG, "tensor " + name +
                                ": per-column quality levels cannot be combined "
                                "with [rotation] (the rotation mixes the columns)");
  const auto &levels = *column_levels;
  if (static_cast<int64_t>(levels.size()) != bc.cols)
    fail(NWC_E_INVALID_ARG, "tensor " + name + ": " + std::to_string(levels.size()) +
                                " quality levels for " + std::to_string(bc.cols) + " columns");
  if (!st.transform)
    fail(NWC_E_INVALID_ARG,
         "tensor " + name + ": quality levels need a transform stage that uses them");
  bc.tensor_side.levels = levels;
  enc.streams.push_back({"levels", {-1, pack_levels(levels)}});
}

// [importance]: the diagonal of the (rotated) calibration Hessian, handed to the quantizer with
// each block's chunks. The latents must be the chunks, so a transform stage is refused.
void add_importance(BlockCodec &bc, const Stages &st, const Pipeline &pipeline,
                    const std::vector<float> *hessian) {
  if (!pipeline.importance.enabled) return;
  if (!hessian)
    fail(NWC_E_INVALID_ARG, pipeline.importance.where +
                                ": [importance] needs the calibration Hessian of " + bc.name +
                                " (pass --calibration FILE from `nwc calibrate`, or --calibrate)");
  if (st.transform)
    fail(NWC_E_INVALID_ARG, pipeline.importance.where +
                                ": [importance] weights the quantizer's "
                                "latents by column, which a transform "
                                "stage mixes (tensor " +
                                bc.name + ")");
  std::vector<float> &imp = bc.tensor_side.importance;
  imp.resize(static_cast<size_t>(bc.cols));
  for (int64_t j = 0; j < bc.cols; ++j)
    imp[static_cast<size_t>(j)] = (*hessian)[static_cast<size_t>(j * bc.cols + j)];
}

// The compensator chooses the column blocks and drives the block codec (with the tensor's
// Hessian when there is one); without a compensator the whole tensor is one block.
void code_blocks(BlockCodec &bc, const Stages &st, const nwc_tensor_view &weight,
                 const std::vector<float> *hessian_values) {
  if (!st.compensator) {
    std::vector<float> recon(static_cast<size_t>(bc.rows * bc.cols));
    int64_t shape[2] = {bc.rows, bc.cols};
    nwc_tensor_view rv{recon.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
    bc.encode_block(0, bc.cols, &weight, nullptr, 0, &rv);
    return;
  }
  nwc_tensor_view hv{};
  const nwc_tensor_view *hessian = nullptr;
  int64_t hshape[2] = {bc.cols, bc.cols};
  if (hessian_values) {
    hv = nwc_tensor_view{const_cast<float *>(hessian_values->data()),
                         0,
                         NWC_DTYPE_F32,
                         NWC_DEVICE_CPU,
                         0,
                         2,
                         hshape,
                         nullptr};
    hessian = &hv;
  }
  nwc_status cs = st.compensator->compensate(st.at(Slot::Compensator).raw(), bc.name.c_str(),
                                             &weight, hessian, &bc.c);
  if (!bc.error.empty()) fail(bc.error_code, bc.error); // the stage's own message
  st.at(Slot::Compensator).check(cs, ("compensate on tensor " + bc.name).c_str());
}

// The rotation (ABI 1.4), when the chain has one: plan with the tensor's Hessian, store the side
// information as stream "rotation", rotate the weight (a copy: the caller's values are left as they
// are) and the Hessian the compensator will see. Returns the side information ("" without one).
std::vector<uint8_t> rotate(EncodedTensor &enc, const Stages &st, std::vector<float> &values,
                            int64_t rows, int64_t cols, std::vector<float> &rotated,
                            std::shared_ptr<const std::vector<float>> &hessian) {
  if (!st.rotation) return {};
  const std::string &name = enc.record.name;
  const Instance &r = st.at(Slot::Rotation);
  detail::VectorSink side;
  int64_t hshape[2] = {cols, cols};
  nwc_tensor_view hv{};
  if (hessian)
    hv = nwc_tensor_view{const_cast<float *>(hessian->data()),
                         0,
                         NWC_DTYPE_F32,
                         NWC_DEVICE_CPU,
                         0,
                         2,
                         hshape,
                         nullptr};
  r.check(st.rotation->plan(r.raw(), name.c_str(), rows, cols, hessian ? &hv : nullptr, &side.sink),
          ("rotation plan of tensor " + name).c_str());
  rotated = values;
  rotation_forward(st, name, side.bytes, rotated.data(), rows, cols);
  if (hessian) {
    auto h = std::make_shared<std::vector<float>>(*hessian);
    View v(h->data(), NWC_DTYPE_F32, cols, cols);
    r.check(st.rotation->forward_hessian(r.raw(), nwc_bytes{side.bytes.data(), side.bytes.size()},
                                         v.get()),
            ("rotation forward_hessian of tensor " + name).c_str());
    hessian = std::move(h);
  }
  enc.streams.push_back({"rotation", {-1, side.bytes}});
  return std::move(side.bytes);
}

// Sorts the coded blocks by column; they must tile [0, cols) exactly once.
void check_tiling(BlockCodec &bc, const Stages &st) {
  std::sort(bc.blocks.begin(), bc.blocks.end(), [](const EncodedBlock &a, const EncodedBlock &b) {
    return a.record.col_begin < b.record.col_begin;
  });
  int64_t expect = 0;
  for (const auto &b : bc.blocks) {
    if (b.record.col_begin != expect)
      fail(NWC_E_INTERNAL,
           "tensor " + bc.name + ": plugin " + st.at(Slot::Compensator).plugin().id +
               " did not code every column exactly once (gap or overlap at column " +
               std::to_string(expect) + ")");
    expect = b.record.col_end;
  }
  if (expect != bc.cols)
    fail(NWC_E_INTERNAL, "tensor " + bc.name + ": plugin " + st.at(Slot::Compensator).plugin().id +
                             " left columns [" + std::to_string(expect) + ", " +
                             std::to_string(bc.cols) + ") uncoded");
}

} // namespace

void encode_with_chain(EncodedTensor &enc, std::vector<float> &values, const StageChain &chain,
                       const Stages &st, const Pipeline &pipeline, const CompressSettings &settings,
                       std::vector<float> *reconstruction,
                       std::vector<float> *unit_reconstruction) {
  TensorRecord &rec = enc.record;
  rec.storage = "pipeline";
  enc.chain = chain.to_json();
  for (size_t s = 0; s < kSlotCount; ++s)
    if (st.inst[s]) enc.resolved[s] = st.inst[s]->resolved_options();

  auto [rows, cols] = as_matrix(rec.shape);
  // The Hessian (held while the compensator runs), rotated with the weight when there is a
  // rotation: the stages below code U·W·Vᵀ against V·H·Vᵀ.
  std::shared_ptr<const std::vector<float>> hessian;
  if (auto h = settings.hessians.find(rec.name); h != settings.hessians.end())
    hessian = h->second.load();
  std::vector<float> rotated;
  const std::vector<uint8_t> rotation_side = rotate(enc, st, values, rows, cols, rotated, hessian);
  std::vector<float> &coded = st.rotation ? rotated : values;
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
  nwc_tensor_view wv{coded.data(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  // Tensor-level side information first: every block is coded with it.
  add_row_scales(enc, bc, st, wv);
  add_levels(enc, bc, st, pipeline, settings);
  add_importance(bc, st, pipeline, hessian.get());
  code_blocks(bc, st, wv, hessian.get());
  check_tiling(bc, st);
  if (bc.keep_inputs) coalesce_blocks(bc, pipeline.stream_columns);
  for (size_t b = 0; b < bc.blocks.size(); ++b) {
    rec.blocks.push_back(bc.blocks[b].record);
    for (auto &s : bc.blocks[b].streams)
      enc.streams.push_back({s.first, {static_cast<int32_t>(b), std::move(s.second)}});
  }
  // The reconstructions in the original basis, as the decoder returns them: the same inverse on
  // the same merged values.
  if (st.rotation)
    for (std::vector<float> *r : {reconstruction, unit_reconstruction})
      if (r)
        rotation_inverse(st, "tensor " + rec.name, rotation_side.data(), rotation_side.size(),
                         r->data(), rows, cols);
}

} // namespace detail

using namespace detail;

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
    if (s.first == role) code = row_scales_storage(s.second.second);
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

} // namespace nwc::host
