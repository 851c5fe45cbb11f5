// Writes golden files into a directory (normally tests/golden):
//
//   ninja nwc_make_golden && build/.../tests/nwc_make_golden tests/golden
//     golden-paths-v1.nwc and .json: the synthetic model of golden_paths.hpp compressed with
//     golden-paths-v1.toml, written as container version 1; prints each tensor's streams (and the
//     rANS mode of each rANS stream) so that the paths the file pins can be checked.
//   build/.../tests/nwc_make_golden --v2 tests/golden
//     golden-v2.nwc, golden-nwc-v2.nwc and golden-paths-v2.nwc (and .json): the committed version 1
//     golden files rewritten as container version 2 (container_rewrite: the same stream bytes at
//     the same offsets, the manifest re-encoded), so they decode to the same tensors.
//
// Run it only to add a new golden file, never to make a test pass: the committed files pin how
// containers written by earlier versions decode, and how the version 2 writer lays them out.
#include "golden_paths.hpp"

#include "nwc/formats/container.hpp"
#include "nwc/host/pipeline.hpp"

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <zstd.h>

namespace fs = std::filesystem;

namespace {

int write_paths_v1(const fs::path &out_dir, const fs::path &src) {
  nwc::host::Registry registry;
  registry.scan({NWC_TEST_PLUGIN_DIR});
  // A fixed file name (the container records it), in a directory of its own.
  const fs::path tmp = fs::temp_directory_path() / ("nwc-golden-" + std::to_string(getpid()));
  fs::create_directories(tmp);
  const fs::path model_file = tmp / "golden-paths-v1.safetensors";
  nwc::golden::write_paths_model(model_file);
  nwc::Model model = nwc::load_model(model_file);
  nwc::host::Pipeline pl = nwc::host::load_pipeline(src / "golden-paths-v1.toml", registry);
  nwc::host::CompressSettings s = nwc::golden::paths_settings(model, pl, registry);
  s.threads = 1;
  const fs::path out = out_dir / "golden-paths-v1.nwc";
  // compress_model writes the current version; the file is version 1.
  nwc::host::compress_model(model, pl, registry, tmp / "written.nwc", s);
  {
    nwc::ContainerWriteOptions v1;
    v1.format_version = 1;
    nwc::ContainerReader written(tmp / "written.nwc");
    nwc::container_rewrite(written, out, v1);
  }
  fs::remove_all(tmp);

  nwc::ContainerReader reader(out);
  nwc::host::ContainerDecoder decoder(reader, registry);
  nlohmann::json j = {{"file", "golden-paths-v1.nwc"},
                      {"written_by", "nwc 0.1.0 (container v1, ABI 1.2)"},
                      {"hash", "XXH64 (seed 0) of the decoded float32 little-endian values"},
                      {"tensors", nlohmann::json::object()}};
  for (const auto &t : reader.manifest().tensors) {
    std::vector<float> v = decoder.decode_tensor(t, 1);
    j["tensors"][t.name] = {{"shape", t.shape}, {"xxh64", nwc::golden::xxh64_hex(v)}};
    std::cout << t.name << " (" << t.storage << "):";
    for (const auto &st : t.streams) {
      std::cout << " " << st.role << "[" << st.block << "]";
      std::vector<uint8_t> b = reader.read_stream(t, st);
      if (st.role == "entropy" && b.size() > 1)
        std::cout << "{b0=" << int(b[0]) << ",b1=" << int(b[1]) << "}";
    }
    std::cout << "\n";
  }
  std::ofstream(out_dir / "golden-paths-v1.json") << j.dump(2) << "\n";
  std::cout << "wrote " << out << " (" << fs::file_size(out) << " bytes)\n";
  return 0;
}

int write_v2(const fs::path &out_dir, const fs::path &src) {
  for (const std::string name : {"golden", "golden-nwc", "golden-paths"}) {
    const fs::path in = src / (name + "-v1.nwc"), out = out_dir / (name + "-v2.nwc");
    nwc::ContainerReader v1(in);
    nwc::container_rewrite(v1, out);
    nwc::ContainerReader v2(out);
    std::ifstream f(src / (name + "-v1.json"));
    nlohmann::json j = nlohmann::json::parse(f);
    j["file"] = name + "-v2.nwc";
    j["written_by"] =
        "nwc 0.1.0 (container v2): " + name +
        "-v1.nwc rewritten by container_rewrite, the same streams at the same offsets";
    // The compressed manifest is zstd's output: test_golden compares the whole file byte for byte
    // when the zstd library is this version, and the decompressed manifest otherwise.
    j["zstd_version"] = ZSTD_versionNumber();
    std::ofstream(out_dir / (name + "-v2.json")) << j.dump(2) << "\n";
    const nwc::ContainerLayout a = v1.layout(), b = v2.layout();
    std::cout << "wrote " << out << ": " << b.file_size << " bytes (v1 " << a.file_size
              << "), header + manifest + footer " << b.container_bytes() << " bytes (v1 "
              << a.container_bytes() << "), manifest body " << b.manifest_body_bytes << ", "
              << b.checksums << " checksums (v1 " << a.checksums << ")\n";
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  const bool v2 = argc == 3 && std::string(argv[1]) == "--v2";
  if (argc != 2 && !v2) {
    std::cerr << "usage: nwc_make_golden [--v2] OUT_DIR\n";
    return 2;
  }
  const fs::path out_dir = argv[argc - 1];
  const fs::path src = fs::path(NWC_TEST_SOURCE_DIR) / "tests" / "golden";
  try {
    return v2 ? write_v2(out_dir, src) : write_paths_v1(out_dir, src);
  } catch (const std::exception &e) {
    std::cerr << "nwc_make_golden: " << e.what() << "\n";
    return 1;
  }
}
