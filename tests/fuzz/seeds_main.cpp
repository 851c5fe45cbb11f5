// nwc_fuzz_seeds OUTDIR CODEC.nwcc CONTAINER.nwc... — seed corpora for the entropy-decoder and NWC
// stream fuzz targets, cut out of real containers: every entropy stream of a pipeline-coded tensor
// (the first blocks of each, up to a cap per target) is written in the targets' input layout
// (u32 symbol count, then the stream; fuzz_entropy.hpp) to OUTDIR/<target>/, chosen by the
// container's entropy plugin; streams coded against the neural transform's tables go to
// fuzz_nwc_stream and, with CODEC's tables in front, to fuzz_entropy_rans_cdf.
#include "fuzz_common.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/codec_file.hpp"
#include "nwc/formats/container.hpp"

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

void put(std::vector<uint8_t> &out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

std::map<std::string, int> g_count;

void write_seed(const std::filesystem::path &dir, const std::string &target,
                const std::string &name, const std::vector<uint8_t> &bytes) {
  if (g_count[target] >= 64) return;
  ++g_count[target];
  std::filesystem::create_directories(dir / target);
  std::ofstream f(dir / target / name, std::ios::binary);
  f.write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string stage_plugin(const nwc::StageConfig &c, const std::string &slot) {
  for (const auto &s : c.stages)
    if (s.slot == slot) return s.plugin_id;
  return "";
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: nwc_fuzz_seeds OUTDIR CODEC.nwcc CONTAINER.nwc...\n");
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::vector<uint8_t> tables; // the rans_cdf table header of the codec
  try {
    const auto c = nwc::neural::load_codec(argv[2]);
    const auto &t = c.tables;
    if (t.channels <= 64 && t.max_length <= 4096 && t.levels <= 4) {
      put(tables, t.precision, 1);
      put(tables, static_cast<uint64_t>(t.channels), 2);
      put(tables, static_cast<uint64_t>(t.max_length), 2);
      put(tables, static_cast<uint64_t>(t.levels), 1);
      put(tables, 0, 1); // default level 0 (the container's chunk levels are not in the seed)
      put(tables, 0, 1); // no row levels
      for (uint32_t v : t.cdf) put(tables, v, 4);
      for (uint32_t v : t.lengths) put(tables, v, 2);
      for (int32_t v : t.offsets) put(tables, static_cast<uint32_t>(v), 4);
    }
  } catch (const nwc::Error &e) {
    std::fprintf(stderr, "nwc_fuzz_seeds: no CDF tables: %s\n", e.what());
  }
  int failures = 0;
  for (int i = 3; i < argc; ++i) {
    try {
      const nwc::ContainerReader reader(argv[i]);
      const auto &m = reader.manifest();
      const std::string stem = std::filesystem::path(argv[i]).stem().string();
      for (const auto &t : m.tensors) {
        if (t.storage != "pipeline" || t.stage_config < 0) continue;
        const auto &cfg = m.stage_configs.at(static_cast<size_t>(t.stage_config));
        const std::string entropy = stage_plugin(cfg, "entropy");
        const bool neural = stage_plugin(cfg, "transform") == "nwc.transform.neural";
        for (const auto &s : t.streams) {
          if (s.role != "entropy" || s.block < 0 || s.block > 1) continue;
          const int64_t n = t.blocks.at(static_cast<size_t>(s.block)).symbol_count;
          if (n > nwc::fuzz::kMaxSymbols) continue;
          const std::vector<uint8_t> stream = reader.read_stream(t, s);
          std::vector<uint8_t> seed;
          put(seed, static_cast<uint64_t>(n), 4);
          const std::string name = stem + "-" + t.name + "-" + std::to_string(s.block);
          if (neural) {
            std::vector<uint8_t> cdf = seed;
            cdf.insert(cdf.end(), tables.begin(), tables.end());
            cdf.insert(cdf.end(), stream.begin(), stream.end());
            if (!tables.empty()) write_seed(out, "fuzz_entropy_rans_cdf", name, cdf);
            seed.push_back(0); // fuzz_nwc_stream's level: data-free presets code level 0
            seed.insert(seed.end(), stream.begin(), stream.end());
            write_seed(out, "fuzz_nwc_stream", name, seed);
            continue;
          }
          seed.insert(seed.end(), stream.begin(), stream.end());
          if (entropy == "nwc.entropy.raw")
            write_seed(out, "fuzz_entropy_raw", name, seed);
          else if (entropy == "nwc.entropy.zstd")
            write_seed(out, "fuzz_entropy_zstd", name, seed);
          else if (entropy == "nwc.entropy.rans")
            write_seed(out, "fuzz_entropy_rans", name, seed);
        }
      }
    } catch (const nwc::Error &e) {
      std::fprintf(stderr, "nwc_fuzz_seeds: %s\n", e.what());
      ++failures;
    }
  }
  for (const auto &[target, n] : g_count) std::printf("%s: %d seeds\n", target.c_str(), n);
  return failures ? 1 : 0;
}
