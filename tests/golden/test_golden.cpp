// Back-compatibility: the committed golden containers decode to the recorded tensors, bit for bit;
// the version 2 goldens are pinned byte for byte as what the version 2 writer makes of the
// version 1 ones, and converting them back gives the version 1 files byte for byte.
#include "../unit/container/v2_spec.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "test_support.hpp"

#include <cstdio>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <xxhash.h>
#include <zstd.h>

namespace {

std::filesystem::path golden_dir() {
  return nwc::test::source_dir() / "tests" / "golden";
}

nlohmann::json golden_json(const std::string &name) {
  std::ifstream f(golden_dir() / (name + ".json"));
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// Decodes every tensor of tests/golden/NAME.nwc with 1 and 3 threads and compares the XXH64 of
// the float32 values with NAME.json.
void check_golden(const std::string &name, uint32_t format_version) {
  auto expected = golden_json(name)["tensors"];
  nwc::host::set_log_level(NWC_LOG_ERROR);
  nwc::host::Registry registry;
  registry.scan({nwc::test::plugin_dir()});
  nwc::ContainerReader reader(golden_dir() / (name + ".nwc"));
  CHECK(reader.format_version() == format_version);
  nwc::host::ContainerDecoder decoder(reader, registry);
  REQUIRE(reader.manifest().tensors.size() == expected.size());
  for (unsigned threads : {1u, 3u})
    for (const auto &t : reader.manifest().tensors) {
      INFO("tensor " << t.name << ", threads " << threads);
      REQUIRE(expected.contains(t.name));
      CHECK(nlohmann::json(t.shape) == expected[t.name]["shape"]);
      std::vector<float> v = decoder.decode_tensor(t, threads);
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx",
                    static_cast<unsigned long long>(XXH64(v.data(), v.size() * sizeof(float), 0)));
      CHECK(std::string(hex) == expected[t.name]["xxh64"].get<std::string>());
    }
}

// NAME-v2.nwc is what container_rewrite (the version 2 writer) makes of NAME-v1.nwc, and converting
// it back to version 1 gives NAME-v1.nwc: both byte for byte. The manifest is zstd's output, which
// may differ between zstd releases: with another zstd than the one that wrote the file (recorded in
// NAME-v2.json), everything else must still match and the manifests must decompress to the same
// body.
void check_pinned(const std::string &name) {
  nwc::test::TempDir dir;
  const auto v1 = nwc::test::read_bytes(golden_dir() / (name + "-v1.nwc"));
  const auto v2 = nwc::test::read_bytes(golden_dir() / (name + "-v2.nwc"));
  {
    nwc::ContainerReader r1(golden_dir() / (name + "-v1.nwc"));
    nwc::container_rewrite(r1, dir / "v2.nwc");
    nwc::ContainerReader r2(golden_dir() / (name + "-v2.nwc"));
    nwc::ContainerWriteOptions o;
    o.format_version = 1;
    nwc::container_rewrite(r2, dir / "v1.nwc", o);
  }
  CHECK(nwc::test::read_bytes(dir / "v1.nwc") == v1);
  const auto made = nwc::test::read_bytes(dir / "v2.nwc");
  const auto recorded = golden_json(name + "-v2")["zstd_version"].get<unsigned>();
  if (ZSTD_versionNumber() == recorded) {
    CHECK(made == v2);
    return;
  }
  MESSAGE("zstd " << ZSTD_versionNumber() << " (the golden file was written with " << recorded
                  << "): comparing the decompressed manifest");
  CHECK(v2spec::body_of(made) == v2spec::body_of(v2));
  REQUIRE(made.size() >= 56);
  REQUIRE(v2.size() >= 56);
  const uint64_t moff =
      nwc::ContainerReader(golden_dir() / (name + "-v2.nwc")).layout().manifest_offset;
  CHECK(std::equal(made.begin(), made.begin() + static_cast<std::ptrdiff_t>(moff), v2.begin()));
}

} // namespace

TEST_CASE("golden-v1.nwc decodes to the recorded tensors") {
  check_golden("golden-v1", 1);
}

// The NWC neural codec (embedded in the container): rANS streams against the stored CDF tables and
// the synthesis MLP evaluated in a fixed order, so the values are the same bits on every machine.
TEST_CASE("golden-nwc-v1.nwc decodes to the recorded tensors") {
  check_golden("golden-nwc-v1", 1);
}

TEST_CASE("golden-paths-v1.nwc decodes to the recorded tensors") {
  check_golden("golden-paths-v1", 1);
}

TEST_CASE("golden-v2.nwc, golden-nwc-v2.nwc and golden-paths-v2.nwc decode to the recorded "
          "tensors") {
  for (const char *name : {"golden-v2", "golden-nwc-v2", "golden-paths-v2"}) {
    INFO(name);
    check_golden(name, 2);
    // The same tensors as the version 1 file they were converted from.
    std::string v1 = name;
    v1.replace(v1.size() - 2, 2, "v1");
    CHECK(golden_json(name)["tensors"] == golden_json(v1)["tensors"]);
  }
}

TEST_CASE("the version 2 goldens are pinned byte for byte") {
  for (const char *name : {"golden", "golden-nwc", "golden-paths"}) {
    INFO(name);
    check_pinned(name);
  }
}
