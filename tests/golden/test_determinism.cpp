// Decoding gives bit-identical tensors whatever the thread count and however often it runs, on
// every decoding path: the golden containers (golden-v1: group + uniform, raw and zstd;
// golden-nwc-v1: NWC with row scales; golden-paths-v1: NF4, GPTQ, rANS in all three modes, NWC
// with levels, a host row gain) decode to their recorded XXH64 with 1, 2 and 4 threads, twice
// over; so do their container version 2 conversions (golden-*-v2, the same streams, checksummed per
// unit). The same test runs in the sanitizer builds (ASan+UBSan in CI, TSan on demand), so equal
// hashes there prove they decode identically. Compressing is deterministic too: 1 and 4 threads
// write the same bytes.
#include "golden_paths.hpp"

#include "nwc/formats/container.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace {

namespace fs = std::filesystem;

const nwc::host::Registry &registry() {
  return nwc::test::bundled_registry();
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

TEST_CASE("the version 2 goldens decode identically with 1, 2 and 4 threads, twice") {
  for (const char *name : {"golden-v2", "golden-nwc-v2", "golden-paths-v2"}) {
    INFO(name);
    check_decodes_identically(name);
  }
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

// decompress_to_safetensors decodes blocks and tensors in parallel and writes them in model order:
// the file holds the recorded tensors, in the container's order, for any thread count.
TEST_CASE(
    "decompressing the golden containers writes the recorded tensors with 1, 2 and 4 threads") {
  for (const std::string name : {"golden-v1", "golden-nwc-v1", "golden-paths-v1", "golden-v2",
                                 "golden-nwc-v2", "golden-paths-v2"}) {
    std::ifstream f(golden_dir() / (name + ".json"));
    REQUIRE(f.good());
    const auto expected = nlohmann::json::parse(f)["tensors"];
    nwc::ContainerReader reader(golden_dir() / (name + ".nwc"));
    const auto &records = reader.manifest().tensors;
    for (unsigned threads : {1u, 2u, 4u}) {
      INFO(name << ", threads " << threads);
      nwc::test::TempDir dir;
      std::vector<std::string> progress;
      nwc::host::decompress_to_safetensors(golden_dir() / (name + ".nwc"), dir / "out.safetensors",
                                           registry(), nwc::DType::F32, threads,
                                           [&](size_t done, size_t total, const std::string &t) {
                                             CHECK(done == progress.size() + 1);
                                             CHECK(total == records.size());
                                             progress.push_back(t);
                                           });
      nwc::Model m = nwc::load_model(dir / "out.safetensors");
      REQUIRE(m.tensors.size() == records.size());
      REQUIRE(progress.size() == records.size());
      for (size_t i = 0; i < records.size(); ++i) {
        CHECK(progress[i] == records[i].name);
        CHECK(m.tensors[i].info.name == records[i].name);
        CHECK(nwc::golden::xxh64_hex(m.tensors[i].load()) ==
              expected[records[i].name]["xxh64"].get<std::string>());
      }
    }
  }
}

// With several corrupt tensors, the error names the first of them in model order whatever the
// thread count (and which thread happens to fail first), and no output file is left behind.
static void check_two_corrupt_tensors(const std::string &name) {
  nwc::test::TempDir dir;
  const fs::path bad = dir / "bad.nwc";
  std::vector<uint8_t> bytes = nwc::test::read_bytes(golden_dir() / (name + ".nwc"));
  std::vector<std::string> corrupted;
  {
    nwc::ContainerReader reader(golden_dir() / (name + ".nwc"));
    const auto &ts = reader.manifest().tensors;
    // The entropy stream of the last block of the last two pipeline tensors.
    for (auto t = ts.rbegin(); t != ts.rend() && corrupted.size() < 2; ++t) {
      if (t->storage != "pipeline") continue;
      const nwc::StreamRef *last = nullptr;
      for (const auto &s : t->streams)
        if (s.role == "entropy") last = &s;
      REQUIRE(last != nullptr);
      bytes.at(last->offset + last->length / 2) ^= 0x5a;
      corrupted.insert(corrupted.begin(), t->name);
    }
  }
  REQUIRE(corrupted.size() == 2);
  nwc::test::write_bytes(bad, bytes);
  for (unsigned threads : {1u, 2u, 4u}) {
    INFO("threads " << threads);
    const fs::path out = dir / ("out" + std::to_string(threads) + ".safetensors");
    std::string what;
    try {
      nwc::host::decompress_to_safetensors(bad, out, registry(), nwc::DType::F16, threads);
    } catch (const std::exception &e) {
      what = e.what();
    }
    CHECK(what.find("tensor " + corrupted[0] + ":") != std::string::npos);
    CHECK(what.find("checksum mismatch") != std::string::npos);
    CHECK_FALSE(fs::exists(out));
  }
}

TEST_CASE("decompressing a container with two corrupt tensors reports the first, for any thread "
          "count") {
  for (const char *name : {"golden-paths-v1", "golden-paths-v2"}) {
    INFO(name);
    check_two_corrupt_tensors(name);
  }
}
