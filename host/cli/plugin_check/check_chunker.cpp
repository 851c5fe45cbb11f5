// nwc plugins check: the chunker steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

bool check_chunker(const Instance &inst) {
  const auto &ci = inst.interface_as<nwc_chunker_interface>(NWC_CHUNKER_INTERFACE);
  const bool v12 = ci.struct_size >= sizeof(nwc_chunker_interface);
  std::vector<float> w = check_weight(), scales;
  TensorBlock whole(0, kCols);
  bool ok = true;
  if (v12 && ci.row_scales) {
    ok &= step("row_scales", [&] {
      scales.assign(kRows, 0.0f);
      View wv(w.data(), NWC_DTYPE_F32, kRows, kCols);
      View sv(scales.data(), NWC_DTYPE_F32, 1, kRows, 1);
      uint32_t storage = 0;
      inst.check(ci.row_scales(inst.raw(), &whole.info, wv.get(), sv.get(), &storage),
                 "row_scales");
      if (storage == 0) {
        scales.clear();
        return std::string("no row scales");
      }
      require(all_finite(scales) &&
                  std::all_of(scales.begin(), scales.end(), [](float s) { return s > 0; }),
              "row scales are not all finite and positive");
      return std::string();
    });
    if (!ok) return false;
  }
  // Two column blocks: the first 128 columns and the rest.
  for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, 128}, {128, kCols}}) {
    TensorBlock b(c0, c1);
    if (!scales.empty()) b.info.row_scales = scales.data();
    const int64_t width = c1 - c0;
    std::vector<float> values(static_cast<size_t>(kRows * width));
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < width; ++c)
        values[static_cast<size_t>(r * width + c)] = w[static_cast<size_t>(r * kCols + c0 + c)];
    const std::string where = " [" + std::to_string(c0) + "," + std::to_string(c1) + ")";
    nwc_chunk_geometry g{};
    std::vector<float> chunks, merged;
    Sink side;
    ok = step("plan" + where,
              [&] {
                inst.check(ci.plan(inst.raw(), &b.info, &g), "plan");
                require(g.count > 0 && g.length > 0 && g.count * g.length >= kRows * width &&
                            g.count * g.length <= 64 * kRows * width,
                        "implausible geometry " + std::to_string(g.count) + " x " +
                            std::to_string(g.length));
                return std::to_string(g.count) + " chunks of " + std::to_string(g.length);
              }) &&
         step("split" + where,
              [&] {
                chunks.assign(static_cast<size_t>(g.count * g.length), NAN);
                View in(values.data(), NWC_DTYPE_F32, kRows, width);
                View out(chunks.data(), NWC_DTYPE_F32, g.count, g.length);
                inst.check(ci.split(inst.raw(), &b.info, in.get(), out.get(), &side.sink), "split");
                require(all_finite(chunks), "split left non-finite chunk values");
                return std::to_string(side.bytes.size()) + " side bytes";
              }) &&
         (!v12 || !ci.chunk_columns ||
          step("chunk_columns" + where,
               [&] {
                 std::vector<int64_t> cols(static_cast<size_t>(g.count), -2);
                 View cv(cols.data(), NWC_DTYPE_I64, 1, g.count, 1);
                 inst.check(ci.chunk_columns(inst.raw(), &b.info, cv.get()), "chunk_columns");
                 for (int64_t c : cols)
                   require(c == -1 || (c >= c0 && c < c1),
                           "chunk column " + std::to_string(c) + " outside the block");
                 return std::string();
               })) &&
         step("merge" + where, [&] {
           merged.assign(values.size(), NAN);
           View in(chunks.data(), NWC_DTYPE_F32, g.count, g.length);
           View out(merged.data(), NWC_DTYPE_F32, kRows, width);
           inst.check(ci.merge(inst.raw(), &b.info, in.get(), side.view(), out.get()), "merge");
           const double err = max_abs_diff(values, merged);
           require(all_finite(merged) && err <= 1e-5 * 0.2,
                   "split/merge round trip differs by up to " + std::to_string(err));
           return std::string("round trip within 2e-6");
         });
    if (!ok) return false;
  }
  return true;
}

} // namespace nwc::cli::check
