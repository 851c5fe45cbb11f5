// stages.hpp (private) — the live stage instances of one chain, and the small adapters the host
// uses to hand its buffers to them: 2-D tensor views and byte sinks.
#pragma once

#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"
#include "nwc/nwc.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace nwc::host::detail {

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

// An nwc_sink that appends to a byte vector.
struct VectorSink {
  std::vector<uint8_t> bytes;
  nwc_sink sink{this, &VectorSink::write};
  static nwc_status write(nwc_sink *s, const void *data, size_t len);
};

// The live stages of one chain (one per worker thread: instances are [instance-serial]).
struct Stages {
  std::array<std::unique_ptr<Instance>, kSlotCount> inst;
  const nwc_chunker_interface *chunker = nullptr;
  const nwc_transform_interface *transform = nullptr;
  const nwc_quantizer_interface *quantizer = nullptr;
  const nwc_entropy_interface *entropy = nullptr;
  const nwc_compensator_interface *compensator = nullptr;
  const nwc_rotation_interface *rotation = nullptr; // ABI 1.4, optional

  Instance &at(Slot s) const { return *inst[static_cast<size_t>(s)]; }
  bool has(Slot s) const { return inst[static_cast<size_t>(s)] != nullptr; }
};

// The transform's probability model for one entropy stream of a block, or null without one. A
// model with tables per quality level (ABI 1.7) is copied into `copy` with the block's chunk levels
// as its row levels (one row of `latent` symbols per chunk). An entropy coder built before 1.7
// would code such a model with its level-0 tables alone, so it is refused with NWC_E_VERSION.
const nwc_cdf_model *stream_model(const Stages &st, const nwc_block_info &info, int64_t latent,
                                  nwc_cdf_model &copy);

// Creates the chain's instances (decode: without the encoder-only compensator).
std::unique_ptr<Stages> make_stages(const std::array<StageSpec, kSlotCount> &specs,
                                    const Registry &reg, bool decode);

// The rotation of a tensor (ABI 1.4): forward on its weight, inverse on a decoded matrix, both in
// place on [rows, cols]; side is the plugin's side information (untrusted when decoding).
void rotation_forward(const Stages &st, const std::string &name, const std::vector<uint8_t> &side,
                      float *values, int64_t rows, int64_t cols);
void rotation_inverse(const Stages &st, const std::string &where, const uint8_t *side,
                      size_t side_size, float *values, int64_t rows, int64_t cols);

// Treats any tensor as a matrix: 1-D as [1, n], N-D as [shape[0], prod(rest)].
std::pair<int64_t, int64_t> as_matrix(const std::vector<int64_t> &shape);

// Whether a chunker's interface (ABI 1.x, possibly older and shorter) has the member at offset.
// Whether an interface table covers the function pointer at offset (appended by a minor ABI
// version; an older plugin's table is shorter).
template <class Interface> bool interface_has(const Interface *i, size_t offset) {
  return i->struct_size >= offset + sizeof(void *);
}

// A block's chunks: count chunks of length values, each transformed to latent values.
struct Geometry {
  int64_t count = 0, length = 0, latent = 0;
  int64_t symbols() const { return count * latent; }
};

// Chunk geometry of a block, checked so that a plugin cannot make the host allocate wildly.
Geometry plan_block(const Stages &st, const nwc_block_info &info);

} // namespace nwc::host::detail
