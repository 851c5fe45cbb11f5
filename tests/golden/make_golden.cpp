// Writes golden-paths-v1.nwc and golden-paths-v1.json into a directory (normally tests/golden):
//   ninja nwc_make_golden && build/.../tests/nwc_make_golden tests/golden
// and prints each tensor's streams (and the rANS mode of each rANS stream) so that the paths the
// file pins can be checked. Run it only to add a new golden file, never to make a test pass: the
// committed files pin how containers written by earlier versions decode.
#include "golden_paths.hpp"

#include "nwc/formats/container.hpp"
#include "nwc/host/pipeline.hpp"

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: nwc_make_golden OUT_DIR\n";
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path out_dir = argv[1];
  const fs::path src = fs::path(NWC_TEST_SOURCE_DIR) / "tests" / "golden";
  try {
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
    nwc::host::compress_model(model, pl, registry, out, s);
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
  } catch (const std::exception &e) {
    std::cerr << "nwc_make_golden: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
