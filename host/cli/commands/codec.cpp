// nwc codec info CODEC.nwcc / nwc codec measure CODEC.nwcc --model M [--level Q] [--block B]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/formats/codec_file.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/tools/codec_measure.hpp"

#include <cstdio>
#include <iostream>

namespace nwc::cli {

namespace {

std::string hex64(uint64_t v) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(v));
  return hex;
}

void print_measure(const tools::CodecMeasure &m, const tools::CodecMeasureSettings &ms,
                   bool as_json) {
  const double gap = m.estimate_bpw > 0 ? (m.rans_bpw / m.estimate_bpw - 1.0) * 100.0 : 0.0;
  if (as_json) {
    json tensors = json::array();
    for (const auto &t : m.tensors)
      tensors.push_back({{"name", t.name},
                         {"shape", {t.rows, t.cols}},
                         {"estimate_bits", t.estimate_bits},
                         {"rans_bits", t.rans_bits},
                         {"side_bits", t.side_bits},
                         {"squared_error", t.squared_error}});
    print_json({{"codec", ms.codec.string()},
                {"model", ms.model.string()},
                {"level", ms.level},
                {"weights", m.weights},
                {"estimate_bpw", m.estimate_bpw},
                {"rans_bpw", m.rans_bpw},
                {"side_bpw", m.side_bpw},
                {"bits_per_weight", m.rans_bpw + m.side_bpw},
                {"rans_over_estimate_percent", gap},
                {"mse", m.mse},
                {"variance", m.variance},
                {"shannon_mse", m.shannon_mse},
                {"tensors", tensors}});
    return;
  }
  // The model path is streamed as a path (quoted), as it always was.
  std::cout << "codec " << ms.codec.string() << " on " << ms.model << " (level " << ms.level << ", "
            << static_cast<int64_t>(m.weights) << " linear weights)\n"
            << "  latents: rANS " << fmt(m.rans_bpw, 4) << " bits/weight, estimate "
            << fmt(m.estimate_bpw, 4) << " (rANS " << (gap >= 0 ? "+" : "") << fmt(gap, 2) << "%)\n"
            << "  row scales: " << fmt(m.side_bpw, 4) << " bits/weight; total "
            << fmt(m.rans_bpw + m.side_bpw, 4) << "\n"
            << "  MSE " << sci(m.mse) << " (weight variance " << sci(m.variance)
            << ", Shannon bound at this rate " << sci(m.shannon_mse) << ")\n";
}

} // namespace

int cmd_codec_info(const Command &self, const Args &args) {
  Common c;
  std::string file;
  po::options_description d(self.title());
  d.add_options()("codec", po::value(&file)->required(), "codec file (.nwcc)");
  add_common(d, c);
  parse(args, d, {"codec"}, self.usage);
  neural::CodecFile f = neural::load_codec(file);
  MappedFile mf(file);
  const std::string hex = hex64(container_checksum(mf.data(), mf.size()));
  json j = f.metadata;
  j["file"] = file;
  j["bytes"] = mf.size();
  j["xxh64"] = hex;
  j["tables"] = {{"channels", f.tables.channels},     {"levels", f.tables.levels},
                 {"max_length", f.tables.max_length}, {"lengths", f.tables.lengths},
                 {"offsets", f.tables.offsets},       {"medians", f.tables.medians}};
  if (c.json) {
    print_json(j);
    return 0;
  }
  const auto &cfg = f.config;
  std::cout << file << ": NWC codec, " << mf.size() << " bytes, xxh64 " << hex << "\n"
            << "  chunk " << cfg.chunk << ", width " << cfg.width << ", " << cfg.blocks
            << " residual blocks, latent " << cfg.latent << ", " << cfg.levels
            << " quality levels, LayerNorm " << (cfg.layer_norm ? "on" : "off")
            << (cfg.level_priors ? ", a prior per level" : ", one prior") << "\n";
  if (j.contains("lambda")) std::cout << "  lambda " << j["lambda"].dump() << "\n";
  if (j.contains("training")) std::cout << "  training " << j["training"].dump() << "\n";
  if (j.contains("validation")) std::cout << "  validation " << j["validation"].dump() << "\n";
  return 0;
}

int cmd_codec_measure(const Command &self, const Args &args) {
  Common c;
  tools::CodecMeasureSettings ms;
  std::string file, model;
  po::options_description d(self.title());
  d.add_options()("codec", po::value(&file)->required(),
                  "codec file (.nwcc)")("model,m", po::value(&model)->required(), "model to code")(
      "level", po::value(&ms.level)->default_value(0), "quality level of every column")(
      "block", po::value(&ms.block)->default_value(128), "columns per rANS stream");
  add_common(d, c);
  parse(args, d, {"codec"}, self.usage);
  ms.codec = file;
  ms.model = model;
  host::Registry reg = load_registry(c);
  print_measure(tools::measure_codec(ms, reg), ms, c.json);
  return 0;
}

} // namespace nwc::cli
