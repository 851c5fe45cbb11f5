// encoded_tensor.hpp (private) — one coded tensor as the compression driver holds it before
// writing: its record, its streams and the stage configuration it was coded with; how a stage chain
// codes a tensor into it; and its form as one message between MPI ranks.
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/options.hpp"
#include "nwc/host/pipeline.hpp"
#include "stages.hpp"

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace nwc::host {

struct EncodedTensor {
  TensorRecord record; // offsets filled when written
  std::vector<std::pair<std::string, std::pair<int32_t, std::vector<uint8_t>>>> streams;
  nlohmann::json chain; // stage chain used (pipeline storage)
  OptionValues resolved[kSlotCount];
};

namespace detail {

// Codes one tensor (values: [rows, cols] as the record's shape says) with a stage chain:
// tensor-level side information, then the compensator (or one block), into enc's record and
// streams; the decoder's reconstruction goes to *reconstruction when given.
void encode_with_chain(EncodedTensor &enc, std::vector<float> &values, const StageChain &chain,
                       const Stages &st, const Pipeline &pipeline, const CompressSettings &settings,
                       std::vector<float> *reconstruction,
                       std::vector<float> *unit_reconstruction = nullptr);

// A coded tensor as one message to rank 0: u64 header length, JSON header (record fields and
// stream roles, blocks and lengths), then the stream bytes in order. The chain and resolved
// options are not sent: rank 0 derives them from the pipeline, as the coding rank did.
std::vector<uint8_t> pack_encoded(const EncodedTensor &e);
std::unique_ptr<EncodedTensor> unpack_encoded(const std::vector<uint8_t> &msg,
                                              const std::string &expected_name);

} // namespace detail

} // namespace nwc::host
