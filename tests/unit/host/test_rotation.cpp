// The rotation kind (ABI 1.4) through the host with nwc.rotation.hadamard: the [rotation] table,
// its refusals, coding in the rotated basis on stories260K with decoding back to the original
// basis bit for bit, the side information counted and validated, and incoherence on real weights.
#include "encoded_tensor.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <cmath>
#include <cstring>
#include <doctest/doctest.h>

using namespace nwc;
using namespace nwc::host;

namespace {
const nwc::host::Registry &registry() {
  return nwc::test::bundled_registry();
}

// RTN as benchmarks/suites/baselines/rtn-g32-4b.toml, with a rotation table.
std::string rtn_text(const std::string &rotation = "[rotation]\nplugin = "
                                                   "\"nwc.rotation.hadamard\"\n",
                     const std::string &extra = "") {
  return "[pipeline]\nname = \"rtn-had\"\nselect = [\"model.layers.*_proj.weight\"]\n"
         "unselected = \"zstd\"\n\n" +
         rotation +
         "\n[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 32\n\n"
         "[quantizer]\nplugin = \"nwc.quant.uniform\"\nbits = 4\ngrid = \"gptq\"\n\n"
         "[entropy]\nplugin = \"nwc.entropy.raw\"\n\n"
         "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n" +
         extra;
}

std::string error_of(const std::string &text) {
  try {
    parse_pipeline(text, "p.toml", registry());
  } catch (const nwc::Error &e) {
    return e.what();
  }
  return "(no error)";
}

std::string decode_error(const ContainerDecoder &dec, const TensorRecord &t) {
  try {
    dec.decode_tensor(t, 1);
  } catch (const nwc::Error &e) {
    return std::string(nwc_status_name(e.code())) + ": " + e.what();
  }
  return "(no error)";
}

bool is_linear(const std::string &name) {
  return name.find("_proj.weight") != std::string::npos;
}
} // namespace

TEST_CASE("the rotation table is parsed with its options and per-tensor overrides") {
  Pipeline p = parse_pipeline(
      rtn_text("[rotation]\nplugin = \"nwc.rotation.hadamard\"\nseed = 7\n",
               "\n[[override]]\nmatch = \"*.mlp.*\"\nrotation = { sides = \"input\" }\n"),
      "p.toml", registry());
  auto q = p.chain_for("model.layers.0.self_attn.q_proj.weight");
  REQUIRE(q);
  CHECK((*q)[Slot::Rotation].plugin == "nwc.rotation.hadamard");
  CHECK(std::get<int64_t>((*q)[Slot::Rotation].options.find("seed")->value) == 7);
  CHECK_FALSE((*q)[Slot::Rotation].options.find("sides"));
  auto up = p.chain_for("model.layers.0.mlp.up_proj.weight");
  REQUIRE(up);
  CHECK(std::get<int64_t>((*up)[Slot::Rotation].options.find("seed")->value) == 7);
  CHECK(std::get<std::string>((*up)[Slot::Rotation].options.find("sides")->value) == "input");
  CHECK(q->to_json().contains("rotation"));
  // Without the table no tensor is rotated.
  Pipeline plain = parse_pipeline(rtn_text(""), "p.toml", registry());
  CHECK(plain.chain_for("model.layers.0.self_attn.q_proj.weight")->stages[5].plugin.empty());
}

TEST_CASE("rotation table errors name file line and column") {
  std::string e = error_of(rtn_text("[rotation]\nplugin = \"nwc.rotation.hadamard\"\nsead = 1\n"));
  CHECK(e.find("p.toml:8:1: rotation.sead: unknown option of nwc.rotation.hadamard (did you mean "
               "'seed'?)") != std::string::npos);
  e = error_of(rtn_text("[rotation]\nplugin = \"nwc.rotation.hadamard\"\nsides = \"left\"\n"));
  CHECK(e.find("p.toml:8:1: rotation.sides") != std::string::npos);
  e = error_of(rtn_text("[rotation]\nplugin = \"nwc.quant.uniform\"\n"));
  CHECK(e.find("p.toml:7:") != std::string::npos);
  CHECK(e.find("rotation.plugin: nwc.quant.uniform is a quantizer, not a rotation") !=
        std::string::npos);
}

TEST_CASE("blockft and levels are refused with a rotation naming the table") {
  std::string e = error_of(
      rtn_text("[rotation]\nplugin = \"nwc.rotation.hadamard\"\n", "\n[blockft]\nepochs = 1\n"));
  CHECK(e.find("[blockft] cannot be combined with [rotation] (p.toml:6:1)") != std::string::npos);
  CHECK(e.rfind("p.toml:", 0) == 0);
  CHECK(e.find('\n') == std::string::npos);
  e = error_of(rtn_text("", "\n[levels]\nfractions = [0.1]\n[[override]]\nmatch = \"*q_proj*\"\n"
                            "rotation = { plugin = \"nwc.rotation.hadamard\" }\n"));
  CHECK(e.find("[levels] cannot be combined with [rotation]") != std::string::npos);
}

TEST_CASE(
    "a rotated container on stories260K decodes to the encoder's reconstruction bit for bit") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(rtn_text(), dir / "p.toml", registry());
  // The reconstructions the encoder reports (what sequential calibration builds its partially
  // quantized model from), written as they were coded.
  CompressSettings s;
  s.threads = 2;
  std::map<std::string, std::vector<float>> reported;
  double err_rot = 0, err_plain = 0;
  Pipeline plain = parse_pipeline(rtn_text(""), dir / "q.toml", registry());
  for (const auto &mt : model.tensors) {
    if (!pl.chain_for(mt.info.name)) continue;
    const std::vector<float> w = mt.load();
    auto tc = std::make_shared<TensorCoding>(encode_tensor(pl, registry(), mt.info, w, s));
    TensorCoding tp = encode_tensor(plain, registry(), mt.info, w, s);
    for (size_t i = 0; i < w.size(); ++i) {
      err_rot += std::pow(double(tc->reconstruction[i]) - w[i], 2);
      err_plain += std::pow(double(tp.reconstruction[i]) - w[i], 2);
    }
    reported[mt.info.name] = tc->reconstruction;
    s.precoded[mt.info.name] = tc;
  }
  REQUIRE(reported.size() == 7 * 5);
  // In the original basis the rotated coding is a 4-bit approximation of W, no worse than 1.5x
  // the plain one's error (a reconstruction left in the rotated basis would be off by O(|W|)).
  CHECK(err_rot < 1.5 * err_plain);
  compress_model(model, pl, registry(), dir / "m.nwc", s);

  ContainerReader reader(dir / "m.nwc");
  ContainerDecoder dec(reader, registry());
  for (const auto &[name, recon] : reported) {
    const TensorRecord *t = reader.find(name);
    REQUIRE(t != nullptr);
    const std::vector<float> back = dec.decode_tensor(*t, 2);
    INFO(name);
    REQUIRE(back.size() == recon.size());
    CHECK(std::memcmp(back.data(), recon.data(), back.size() * sizeof(float)) == 0);
    // One rotation stream of 18 bytes, counted in the tensor's stream bytes.
    uint64_t total = 0, side = 0;
    int rotation_streams = 0;
    for (const auto &st : t->streams) {
      total += st.length;
      if (st.role == "rotation") {
        ++rotation_streams;
        side = st.length;
        CHECK(st.block == -1);
      }
    }
    CHECK(rotation_streams == 1);
    CHECK(side == 18);
    CHECK(t->stream_bytes() == total);
    // Blocks hold rotated columns: single-block decoding is refused with a reason.
    bool refused = false;
    try {
      dec.decode_block(*t, 0);
    } catch (const nwc::Error &e) {
      refused = std::string(e.what()).find("decode the whole tensor") != std::string::npos;
    }
    CHECK(refused);
  }
  // The container names the rotation plugin and its version in the tensors' stage configuration.
  bool recorded = false;
  for (const auto &cfg : reader.manifest().stage_configs)
    for (const auto &st : cfg.stages)
      recorded = recorded || (st.slot == "rotation" && st.plugin_id == "nwc.rotation.hadamard" &&
                              !st.plugin_version.empty());
  CHECK(recorded);
  // Decompression to safetensors decodes rotated tensors whole, to the same values.
  decompress_to_safetensors(dir / "m.nwc", dir / "m.safetensors", registry(), DType::F32, 2);
  Model out = load_model(dir / "m.safetensors");
  for (const auto &mt : out.tensors)
    if (reported.count(mt.info.name)) {
      INFO(mt.info.name);
      CHECK(mt.load() == reported[mt.info.name]);
    }
}

TEST_CASE("rotated containers are the same bytes and decode to the same bits on 1 and 8 threads") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(rtn_text(), dir / "p.toml", registry());
  for (unsigned threads : {1u, 8u}) {
    CompressSettings s;
    s.threads = threads;
    compress_model(model, pl, registry(), dir / ("t" + std::to_string(threads) + ".nwc"), s);
  }
  CHECK(test::read_bytes(dir / "t1.nwc") == test::read_bytes(dir / "t8.nwc"));
  ContainerReader reader(dir / "t1.nwc");
  ContainerDecoder dec(reader, registry());
  for (const auto &t : reader.manifest().tensors) {
    if (t.storage != "pipeline") continue;
    const std::vector<float> a = dec.decode_tensor(t, 1), b = dec.decode_tensor(t, 8);
    INFO(t.name);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("a corrupted rotation side stream is refused with one line naming the tensor") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(rtn_text(), dir / "p.toml", registry());
  CompressSettings s;
  s.threads = 1;
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  const ModelTensor *mt = nullptr;
  for (const auto &t : model.tensors)
    if (t.info.name == name) mt = &t;
  REQUIRE(mt != nullptr);
  auto tc = std::make_shared<TensorCoding>(encode_tensor(pl, registry(), mt->info, mt->load(), s));
  // Written with valid checksums, so that only the plugin's own validation can catch it.
  bool edited = false;
  for (auto &st : tc->encoded->streams)
    if (st.first == "rotation") {
      REQUIRE(st.second.second.size() == 18);
      st.second.second[1] = 9; // no such sides
      edited = true;
    }
  REQUIRE(edited);
  s.precoded[name] = tc;
  compress_model(model, pl, registry(), dir / "m.nwc", s);
  ContainerReader reader(dir / "m.nwc");
  ContainerDecoder dec(reader, registry());
  const std::string e = decode_error(dec, *reader.find(name));
  CHECK(e.find("NWC_E_CORRUPT_STREAM") == 0);
  CHECK(e.find("tensor " + name + ": rotation nwc.rotation.hadamard refused its side") !=
        std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
}

// What incoherence processing is for (QuIP#): a weight far from the rest is spread over its row
// and column, so max|W| / rms(W) falls. On stories260K, whose weights have no strong outliers,
// the unmodified matrices fall on most linears but not all (seed 0: q_proj of layer 0, k_proj of
// layers 2 and 3 and up_proj of layer 4 rise: their low-rank structure turns into products of
// near-Gaussian vectors, heavier-tailed than a Gaussian); the model's worst and average max/rms
// fall. With one outlier of 50 rms planted in each matrix, every linear's max/rms falls.
TEST_CASE(
    "the Hadamard rotation lowers max over rms of every linear of stories260K with an outlier") {
  Model model = load_model(test::stories260k());
  auto inst = registry().create("nwc.rotation.hadamard", OptionValues());
  const auto &ri = inst->interface_as<nwc_rotation_interface>(NWC_ROTATION_INTERFACE);
  auto ratio = [](const std::vector<float> &v) {
    double mx = 0, ss = 0;
    for (float x : v) {
      mx = std::fmax(mx, std::fabs(double(x)));
      ss += double(x) * x;
    }
    return mx / std::sqrt(ss / double(v.size()));
  };
  auto rotate = [&](const std::string &name, std::vector<float> w, int64_t rows, int64_t cols) {
    detail::VectorSink side;
    inst->check(ri.plan(inst->raw(), name.c_str(), rows, cols, nullptr, &side.sink), "plan");
    detail::View v(w.data(), NWC_DTYPE_F32, rows, cols);
    inst->check(ri.forward(inst->raw(), nwc_bytes{side.bytes.data(), side.bytes.size()}, v.get()),
                "forward");
    return w;
  };
  int linears = 0;
  double worst_before = 0, worst_after = 0, sum_before = 0, sum_after = 0;
  for (const auto &mt : model.tensors) {
    if (!is_linear(mt.info.name)) continue;
    ++linears;
    const int64_t rows = mt.info.shape[0], cols = mt.info.shape[1];
    std::vector<float> w = mt.load();
    const double before = ratio(w), after = ratio(rotate(mt.info.name, w, rows, cols));
    worst_before = std::fmax(worst_before, before);
    worst_after = std::fmax(worst_after, after);
    sum_before += before;
    sum_after += after;
    // One weight, in the middle of the matrix, set to 50 times the matrix's rms.
    double ss = 0;
    for (float x : w) ss += double(x) * x;
    w[static_cast<size_t>((rows / 2) * cols + cols / 3)] =
        static_cast<float>(50.0 * std::sqrt(ss / double(w.size())));
    const double spiked = ratio(w), spread = ratio(rotate(mt.info.name, w, rows, cols));
    INFO(mt.info.name << ": with the outlier " << spiked << " -> " << spread);
    CHECK(spread < spiked);
  }
  CHECK(linears == 7 * 5);
  INFO("worst " << worst_before << " -> " << worst_after << ", mean " << sum_before / linears
                << " -> " << sum_after / linears);
  CHECK(worst_after < worst_before);
  CHECK(sum_after < sum_before);
}
