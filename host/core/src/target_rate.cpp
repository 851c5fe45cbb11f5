#include "nwc/host/target_rate.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"

#include <algorithm>
#include <cmath>

namespace nwc::host {

RateChoice choose_for_target_bpw(const Model &model, const Pipeline &pipeline,
                                 const Registry &registry, const CompressSettings &settings,
                                 double target, const std::filesystem::path &scratch) {
  namespace fs = std::filesystem;
  if (!(target > 0)) fail(NWC_E_INVALID_ARG, "--target-bpw must be positive");
  const StageSpec &tf = pipeline.base[Slot::Transform];
  const OptionValue *codec = tf.options.find("codec");
  if (tf.plugin != "nwc.transform.neural" || !codec)
    fail(NWC_E_INVALID_ARG, pipeline.file.string() +
                                ": --target-bpw needs a pipeline whose transform is "
                                "nwc.transform.neural (it chooses among that codec's ladder)");
  const fs::path dir = fs::path(std::get<std::string>(codec->value)).parent_path();
  std::vector<std::string> ladder;
  for (const auto &e : fs::directory_iterator(dir))
    if (e.path().extension() == ".nwcc") ladder.push_back(e.path().string());
  std::sort(ladder.begin(), ladder.end());
  if (ladder.empty()) fail(NWC_E_INVALID_ARG, dir.string() + ": no .nwcc codecs for --target-bpw");

  std::vector<std::pair<double, int>> settings_to_try; // (fraction scale, uniform level)
  if (pipeline.levels.enabled) {
    for (double m : {0.0, 0.5, 1.0, 2.0, 4.0}) settings_to_try.push_back({m, -1});
  } else {
    for (int l = 0; l < 4; ++l) settings_to_try.push_back({1.0, l});
  }
  RateChoice out;
  const fs::path tmp = scratch.string() + ".rate-search.tmp";
  CompressSettings s = settings;
  s.progress = {};
  double best = INFINITY;
  for (const auto &c : ladder)
    for (auto [scale, level] : settings_to_try) {
      Pipeline p = pipeline;
      p.blockft.enabled = false;
      p.base[Slot::Transform].options.set(OptionValue{"codec", NWC_OPT_PATH, c});
      if (level >= 0)
        p.base[Slot::Transform].options.set(OptionValue{"level", NWC_OPT_INT, int64_t{level}});
      if (p.levels.enabled && scale == 0.0)
        p.levels.enabled = false; // every column at level 0: no levels stream to store
      if (p.levels.enabled) {
        double sum = 0;
        for (auto &f : p.levels.fractions) sum += (f = std::min(1.0, f * scale));
        if (sum > 1.0) continue;
      }
      CompressResult r;
      try {
        r = compress_model(model, p, registry, tmp, s);
      } catch (const Error &) {
        continue; // e.g. a level this codec does not have
      }
      double bytes = 0, weights = 0;
      for (const auto &t : r.tensors)
        if (t.storage == "pipeline") {
          bytes += static_cast<double>(t.stream_bytes);
          weights += static_cast<double>(t.numel);
        }
      RateCandidate cand{c, scale, level, weights > 0 ? 8.0 * bytes / weights : 0.0};
      out.tried.push_back(cand);
      if (std::fabs(cand.bits_per_weight - target) < best) {
        best = std::fabs(cand.bits_per_weight - target);
        out.chosen = cand;
        out.pipeline = p;
        out.pipeline.blockft = pipeline.blockft;
      }
    }
  std::error_code ec;
  fs::remove(tmp, ec);
  if (out.tried.empty()) fail(NWC_E_INVALID_ARG, "--target-bpw: no candidate could be compressed");
  return out;
}

} // namespace nwc::host
