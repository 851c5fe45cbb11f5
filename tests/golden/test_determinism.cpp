// Decoding gives bit-identical tensors whatever the thread count and however often it runs, on
// every decoding path: the golden containers (golden-v1: group + uniform, raw and zstd;
// golden-nwc-v1: NWC with row scales; golden-paths-v1: NF4, GPTQ, rANS in all three modes, NWC
// with levels, a host row gain) decode to their recorded XXH64 with 1, 2 and 4 threads, twice
// over. The same test runs in the sanitizer builds (ASan+UBSan in CI, TSan on demand), so equal
// hashes there prove they decode identically. Compressing is deterministic too: 1 and 4 threads
// write the same bytes.
#include "golden_paths.hpp"

#include "nwc/formats/container.hpp"
#include "nwc/host/codec.hpp"
#include "nwc/host/pipeline.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace {

namespace fs = std::filesystem;

const nwc::host::Registry &registry() {
  static const nwc::host::Registry reg = [] {
    nwc::host::set_log_level(NWC_LOG_ERROR);
    nwc::host::Registry r;
    r.scan({nwc::test::plugin_dir()});
    return r;
  }();
  return reg;
}

fs::path golden_dir() {
  return nwc::test::source_dir() / "tests" / "golden";
}

void check_decodes_identically(const std::string &name) {
  std::ifstream f(golden_dir() / (name + ".json"));
  REQUIRE(f.good());
  const auto expected = nlohmann::json::parse(f)["tensors"];
  nwc::ContainerReader reader(golden_dir() / (name + ".nwc"));
  REQUIRE(reader.manifest().tensors.size() == expected.size());
  for (int run = 0; run < 2; ++run) {
    // A fresh decoder per run: no state carried over from the first.
    nwc::host::ContainerDecoder decoder(reader, registry());
    for (unsigned threads : {1u, 2u, 4u})
      for (const auto &t : reader.manifest().tensors) {
        INFO(name << ": tensor " << t.name << ", threads " << threads << ", run " << run);
        REQUIRE(expected.contains(t.name));
        CHECK(nwc::golden::xxh64_hex(decoder.decode_tensor(t, threads)) ==
              expected[t.name]["xxh64"].get<std::string>());
      }
  }
}

} // namespace

TEST_CASE("golden-v1.nwc decodes identically with 1, 2 and 4 threads, twice") {
  check_decodes_identically("golden-v1");
}

TEST_CASE("golden-nwc-v1.nwc decodes identically with 1, 2 and 4 threads, twice") {
  check_decodes_identically("golden-nwc-v1");
}

TEST_CASE("golden-paths-v1.nwc decodes identically with 1, 2 and 4 threads, twice") {
  check_decodes_identically("golden-paths-v1");
}

TEST_CASE("golden-paths-v1.nwc holds every decoding path it is meant to pin") {
  nwc::ContainerReader reader(golden_dir() / "golden-paths-v1.nwc");
  std::set<std::string> roles, plugins;
  for (const auto &c : reader.manifest().stage_configs)
    for (const auto &s : c.stages) plugins.insert(s.plugin_id);
  for (const auto &t : reader.manifest().tensors) {
    roles.insert(t.storage);
    for (const auto &s : t.streams) roles.insert(s.role);
  }
  for (const char *p : {"nwc.quant.uniform", "nwc.quant.nf4", "nwc.comp.gptq", "nwc.entropy.rans",
                        "nwc.entropy.zstd", "nwc.transform.neural", "nwc.chunk.column"})
    CHECK(plugins.count(p) == 1);
  for (const char *r : {"zstd", "row_scales", "row_gain", "levels"}) CHECK(roles.count(r) == 1);
  // rANS streams: byte 1 holds the mode (0 raw packing, 1 static, 2 against the transform's model)
  // in its low 4 bits and log2(interleave) in its high 4 bits.
  std::set<int> rans_headers;
  for (const auto &t : reader.manifest().tensors) {
    if (t.stage_config < 0) continue;
    bool rans = false;
    for (const auto &s :
         reader.manifest().stage_configs[static_cast<size_t>(t.stage_config)].stages)
      rans |= s.slot == "entropy" && s.plugin_id == "nwc.entropy.rans";
    for (const auto &s : t.streams)
      if (rans && s.role == "entropy") rans_headers.insert(reader.read_stream(t, s).at(1));
  }
  CHECK(rans_headers.count(0x00) == 1); // raw packing
  CHECK(rans_headers.count(0x21) == 1); // static, 4 states
  CHECK(rans_headers.count(0x01) == 1); // static, 1 state
  CHECK(rans_headers.count(0x22) == 1); // model, 4 states
}

TEST_CASE("compressing with 1 and 4 threads writes the same bytes") {
  nwc::test::TempDir dir;
  nwc::golden::write_paths_model(dir / "m.safetensors");
  nwc::Model model = nwc::load_model(dir / "m.safetensors");
  nwc::host::Pipeline pl =
      nwc::host::load_pipeline(golden_dir() / "golden-paths-v1.toml", registry());
  nwc::host::CompressSettings s = nwc::golden::paths_settings(model, pl, registry());
  s.threads = 1;
  nwc::host::compress_model(model, pl, registry(), dir / "one.nwc", s);
  s.threads = 4;
  nwc::host::compress_model(model, pl, registry(), dir / "four.nwc", s);
  CHECK(nwc::test::read_bytes(dir / "one.nwc") == nwc::test::read_bytes(dir / "four.nwc"));
}
