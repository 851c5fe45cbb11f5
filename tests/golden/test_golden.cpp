// Back-compatibility: the committed golden container decodes to the recorded tensors, bit for bit.
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "test_support.hpp"

#include <cstdio>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <xxhash.h>

namespace {

// Decodes every tensor of tests/golden/NAME.nwc with 1 and 3 threads and compares the XXH64 of
// the float32 values with NAME.json.
void check_golden(const std::string &name) {
  const auto dir = nwc::test::source_dir() / "tests" / "golden";
  std::ifstream f(dir / (name + ".json"));
  REQUIRE(f.good());
  auto expected = nlohmann::json::parse(f)["tensors"];
  nwc::host::set_log_level(NWC_LOG_ERROR);
  nwc::host::Registry registry;
  registry.scan({nwc::test::plugin_dir()});
  nwc::ContainerReader reader(dir / (name + ".nwc"));
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

} // namespace

TEST_CASE("golden-v1.nwc decodes to the recorded tensors") {
  check_golden("golden-v1");
}

// The NWC neural codec (embedded in the container): rANS streams against the stored CDF tables and
// the synthesis MLP evaluated in a fixed order, so the values are the same bits on every machine.
TEST_CASE("golden-nwc-v1.nwc decodes to the recorded tensors") {
  check_golden("golden-nwc-v1");
}
