// stages.cpp — the live stage instances of one chain and the host's views and sinks.
#include "stages.hpp"

#include "nwc/cpp/error.hpp"

#include <string>

namespace nwc::host::detail {

nwc_status VectorSink::write(nwc_sink *s, const void *data, size_t len) {
  auto *self = static_cast<VectorSink *>(s->ctx);
  try {
    const auto *p = static_cast<const uint8_t *>(data);
    self->bytes.insert(self->bytes.end(), p, p + len);
    return NWC_OK;
  } catch (...) {
    return NWC_E_NOMEM;
  }
}

const nwc_cdf_model *stream_model(const Stages &st, const nwc_block_info &info, int64_t latent,
                                  nwc_cdf_model &copy) {
  if (!st.transform) return nullptr;
  const nwc_cdf_model *model = st.transform->probability_model(st.at(Slot::Transform).raw());
  if (!model || model->struct_size < sizeof(nwc_cdf_model) || model->level_count <= 1) return model;
  const Plugin &coder = st.at(Slot::Entropy).plugin();
  if (NWC_ABI_MINOR(coder.abi_version) < 7)
    fail(NWC_E_VERSION, "entropy coder " + coder.id + " was built for ABI " +
                            std::to_string(NWC_ABI_MAJOR(coder.abi_version)) + "." +
                            std::to_string(NWC_ABI_MINOR(coder.abi_version)) + "; transform " +
                            st.at(Slot::Transform).plugin().id +
                            " has tables per quality level, which need 1.7");
  copy = *model;
  copy.struct_size = sizeof(nwc_cdf_model); // the fields this host wrote, whatever a newer one has
  copy.row_length = latent;
  copy.row_levels = info.chunk_levels;
  return &copy;
}

std::unique_ptr<Stages> make_stages(const std::array<StageSpec, kSlotCount> &specs,
                                    const Registry &reg, bool decode) {
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
  if (st->has(Slot::Rotation)) {
    st->rotation =
        &st->at(Slot::Rotation).interface_as<nwc_rotation_interface>(NWC_ROTATION_INTERFACE);
    if (st->rotation->struct_size < sizeof(nwc_rotation_interface) || !st->rotation->plan ||
        !st->rotation->forward || !st->rotation->forward_hessian || !st->rotation->inverse)
      fail(NWC_E_VERSION, "plugin " + st->at(Slot::Rotation).plugin().id +
                              ": its nwc.rotation/1 interface is incomplete");
  }
  return st;
}

void rotation_forward(const Stages &st, const std::string &name, const std::vector<uint8_t> &side,
                      float *values, int64_t rows, int64_t cols) {
  View v(values, NWC_DTYPE_F32, rows, cols);
  st.at(Slot::Rotation)
      .check(st.rotation->forward(st.at(Slot::Rotation).raw(), nwc_bytes{side.data(), side.size()},
                                  v.get()),
             ("rotation forward on tensor " + name).c_str());
}

void rotation_inverse(const Stages &st, const std::string &where, const uint8_t *side,
                      size_t side_size, float *values, int64_t rows, int64_t cols) {
  View v(values, NWC_DTYPE_F32, rows, cols);
  const Instance &r = st.at(Slot::Rotation);
  const nwc_status s = st.rotation->inverse(r.raw(), nwc_bytes{side, side_size}, v.get());
  if (s == NWC_OK) return;
  const char *msg = r.plugin().vtable->last_error(r.raw());
  fail(s, where + ": rotation " + r.plugin().id + " refused its side information: " +
              (msg && *msg ? msg : "no message") + " (" + nwc_status_name(s) + ")");
}

// Treats any tensor as a matrix: 1-D as [1, n], N-D as [shape[0], prod(rest)].
std::pair<int64_t, int64_t> as_matrix(const std::vector<int64_t> &shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {1, shape[0]};
  int64_t cols = 1;
  for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  return {shape[0], cols};
}

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

} // namespace nwc::host::detail
