#include "nwc/host/target_rate.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"

#include <algorithm>
#include <cmath>

namespace nwc::host {

namespace {

// Whether the transform takes a uniform quality level (an int option "level"), varied when the
// pipeline has no [levels].
bool has_level_option(const Pipeline &pipeline, const Registry &registry) {
  const Plugin *plugin = registry.find(pipeline.base[Slot::Transform].plugin);
  const nwc_option_spec *o = plugin ? plugin->option("level") : nullptr;
  return o && o->type == NWC_OPT_INT;
}

} // namespace

// The transform option that names the codec file the rate search varies: the one
// bitstream-affecting path option of the pipeline's transform that the pipeline sets. nullptr
// when there is none (or more than one).
const nwc_option_spec *codec_path_option(const Pipeline &pipeline, const Registry &registry) {
  const StageSpec &tf = pipeline.base[Slot::Transform];
  const Plugin *plugin = tf.plugin.empty() ? nullptr : registry.find(tf.plugin);
  if (!plugin) return nullptr;
  const nwc_option_spec *found = nullptr;
  for (const auto &o : plugin->options) {
    if (o.type != NWC_OPT_PATH || !(o.flags & NWC_OPTF_AFFECTS_BITSTREAM) ||
        !tf.options.find(o.key))
      continue;
    if (found) return nullptr; // two codec files: which ladder is meant is not clear
    found = &o;
  }
  return found;
}

RateChoice choose_for_target_bpw(const Model &model, const Pipeline &pipeline,
                                 const Registry &registry, const CompressSettings &settings,
                                 double target, const std::filesystem::path &scratch) {
  namespace fs = std::filesystem;
  if (!(target > 0)) fail(NWC_E_INVALID_ARG, "--target-bpw must be positive");
  const nwc_option_spec *codec = codec_path_option(pipeline, registry);
  if (!codec)
    fail(NWC_E_INVALID_ARG,
         pipeline.file.string() +
             ": --target-bpw needs a pipeline whose transform is nwc.transform.neural, or another "
             "transform that takes one codec file (a bitstream-affecting path option); it chooses "
             "among the codec files of the same type next to that one");
  const std::string codec_key = codec->key;
  const fs::path codec_file =
      std::get<std::string>(pipeline.base[Slot::Transform].options.find(codec_key)->value);
  const fs::path dir = codec_file.parent_path(), type = codec_file.extension();
  if (type.empty())
    fail(NWC_E_INVALID_ARG, codec_file.string() +
                                ": --target-bpw finds a codec's ladder by its file extension, and "
                                "this codec file has none");
  std::vector<std::string> ladder;
  for (const auto &e : fs::directory_iterator(dir))
    if (e.path().extension() == type) ladder.push_back(e.path().string());
  std::sort(ladder.begin(), ladder.end());
  if (ladder.empty())
    fail(NWC_E_INVALID_ARG, dir.string() + ": no " + type.string() + " codecs for --target-bpw");

  std::vector<std::pair<double, int>> settings_to_try; // (fraction scale, uniform level)
  if (pipeline.levels.enabled) {
    for (double m : {0.0, 0.5, 1.0, 2.0, 4.0}) settings_to_try.push_back({m, -1});
  } else if (has_level_option(pipeline, registry)) {
    for (int l = 0; l < 4; ++l) settings_to_try.push_back({1.0, l});
  } else {
    settings_to_try.push_back({1.0, -1});
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
      p.base[Slot::Transform].options.set(OptionValue{codec_key, NWC_OPT_PATH, c});
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
