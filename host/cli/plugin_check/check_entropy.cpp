// nwc plugins check: the entropy coder steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

bool check_entropy(const Instance &inst) {
  const auto &ei = inst.interface_as<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  // Symbols of a rounded Laplacian-like source with a few outliers.
  std::vector<float> u = synthetic(4096, 2.5, 4);
  std::vector<int32_t> sym(u.size());
  for (size_t i = 0; i < u.size(); ++i) sym[i] = static_cast<int32_t>(std::lround(u[i]));
  sym[17] = 1000;
  sym[2049] = -777;
  // A 2-channel model over [-8, 8] plus the escape interval (uniform-ish, precision 16).
  const uint32_t len = 17 + 2;
  std::vector<uint32_t> cdfs(2 * len), lengths(2, len);
  std::vector<int32_t> offsets(2, -8);
  for (uint32_t c = 0; c < 2; ++c)
    for (uint32_t i = 0; i < len; ++i)
      cdfs[c * len + i] = i == len - 1 ? 65536u : i * (65536u / (len - 1));
  nwc_cdf_model model{sizeof(nwc_cdf_model), 16, 2, len, cdfs.data(), lengths.data(),
                      offsets.data()};
  bool ok = true;
  for (const nwc_cdf_model *mp :
       {static_cast<const nwc_cdf_model *>(nullptr), static_cast<const nwc_cdf_model *>(&model)}) {
    const std::string mode = mp ? " (with a model)" : " (no model)";
    Sink out;
    bool needs_model = false;
    ok &= step("encode" + mode, [&] {
      View in(sym.data(), NWC_DTYPE_I32, 1, static_cast<int64_t>(sym.size()));
      nwc_status st = ei.encode(inst.raw(), in.get(), mp, &out.sink);
      if (!mp && st == NWC_E_INVALID_ARG) {
        needs_model = true;
        return std::string("needs a probability model");
      }
      inst.check(st, "encode");
      return std::to_string(out.bytes.size()) + " bytes for " + std::to_string(sym.size()) +
             " symbols";
    });
    if (!ok) return false;
    if (needs_model) continue;
    ok &= step("decode" + mode, [&] {
      std::vector<int32_t> back(sym.size(), 0x7fffffff);
      View v(back.data(), NWC_DTYPE_I32, 1, static_cast<int64_t>(back.size()));
      inst.check(ei.decode(inst.raw(), out.view(), mp, v.get()), "decode");
      require(back == sym, "decode does not return the encoded symbols");
      return std::string("exact round trip");
    });
    ok &= step("decode of a truncated stream" + mode, [&] {
      // Untrusted input: any status will do, reading out of bounds or crashing will not.
      std::vector<uint8_t> cut(out.bytes.begin(), out.bytes.begin() + out.bytes.size() / 2);
      std::vector<int32_t> back(sym.size(), 0);
      View v(back.data(), NWC_DTYPE_I32, 1, static_cast<int64_t>(back.size()));
      nwc_status st = ei.decode(inst.raw(), nwc_bytes{cut.data(), cut.size()}, mp, v.get());
      return std::string(st == NWC_OK ? "accepted" : "rejected (") +
             (st == NWC_OK ? "" : std::string(nwc_status_name(st)) + ")");
    });
    if (!ok) return false;
  }
  return ok;
}

} // namespace nwc::cli::check
