// nwc plugins check: the transform steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

bool check_transform(const Instance &inst) {
  const auto &ti = inst.interface_as<nwc_transform_interface>(NWC_TRANSFORM_INTERFACE);
  int64_t chunk = 0, latent = 0;
  bool ok = step("latent_length", [&] {
    std::string tried;
    for (int64_t len : {16, 32, 64, 8, 128, 4, 256, 1}) {
      int64_t out = 0;
      if (ti.latent_length(inst.raw(), len, &out) == NWC_OK) {
        require(out > 0 && out <= 1 << 20,
                "latent length " + std::to_string(out) + " for chunks of " + std::to_string(len));
        chunk = len;
        latent = out;
        return "chunks of " + std::to_string(len) + " -> latents of " + std::to_string(out);
      }
      tried += (tried.empty() ? "" : ", ") + std::to_string(len);
    }
    throw StepFailed("accepts none of the chunk lengths " + tried);
  });
  if (!ok) return false;
  const int64_t n = 64;
  // Chunks as a row-normalizing chunker hands them over: unit scale.
  std::vector<float> chunks = synthetic(static_cast<size_t>(n * chunk), 1.0, 2), latents, back;
  TensorBlock b(0, kCols);
  return step("forward",
              [&] {
                latents.assign(static_cast<size_t>(n * latent), NAN);
                View in(chunks.data(), NWC_DTYPE_F32, n, chunk);
                View out(latents.data(), NWC_DTYPE_F32, n, latent);
                inst.check(ti.forward(inst.raw(), &b.info, in.get(), out.get()), "forward");
                require(all_finite(latents), "forward produced non-finite latents");
                return std::string();
              }) &&
         step("inverse",
              [&] {
                // The decoder sees rounded latents.
                for (auto &x : latents) x = std::nearbyint(x);
                back.assign(chunks.size(), NAN);
                View in(latents.data(), NWC_DTYPE_F32, n, latent);
                View out(back.data(), NWC_DTYPE_F32, n, chunk);
                inst.check(ti.inverse(inst.raw(), &b.info, in.get(), out.get()), "inverse");
                require(all_finite(back), "inverse produced non-finite values");
                return rel_error(chunks, back) + " after rounding the latents";
              }) &&
         step("probability_model", [&] {
           const nwc_cdf_model *m =
               ti.probability_model ? ti.probability_model(inst.raw()) : nullptr;
           if (!m) return std::string("none");
           require(m->precision >= 1 && m->precision <= 16 && m->channel_count > 0 && m->cdfs &&
                       m->lengths && m->offsets,
                   "malformed model header");
           // Tables per quality level (ABI 1.7): level_count x channel_count of them.
           const uint32_t levels =
               m->struct_size >= sizeof(nwc_cdf_model) && m->level_count > 1 ? m->level_count : 1;
           require(levels == 1 || m->default_level < levels,
                   "default_level " + std::to_string(m->default_level) + " with " +
                       std::to_string(levels) + " levels of tables");
           for (uint32_t c = 0; c < levels * m->channel_count; ++c) {
             const uint32_t len = m->lengths[c];
             require(len >= 3 && len <= m->max_length,
                     "channel " + std::to_string(c) + ": length " + std::to_string(len));
             const uint32_t *cdf = m->cdfs + static_cast<size_t>(c) * m->max_length;
             require(cdf[0] == 0 && cdf[len - 1] == (1u << m->precision),
                     "channel " + std::to_string(c) + ": CDF does not span [0, 2^precision]");
             for (uint32_t i = 1; i < len; ++i)
               require(cdf[i] > cdf[i - 1],
                       "channel " + std::to_string(c) + ": CDF not strictly increasing");
           }
           return std::to_string(m->channel_count) + " channels" +
                  (levels > 1 ? " x " + std::to_string(levels) + " levels" : std::string());
         });
}

} // namespace nwc::cli::check
