// tensor_message.cpp — a coded tensor as one message from a coding MPI rank to rank 0.
#include "encoded_tensor.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/dtype.hpp"

#include <cstring>

namespace nwc::host::detail {

std::vector<uint8_t> pack_encoded(const EncodedTensor &e) {
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

std::unique_ptr<EncodedTensor> unpack_encoded(const std::vector<uint8_t> &msg,
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

} // namespace nwc::host::detail
