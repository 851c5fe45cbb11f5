// The compression driver and container decoder on the real stories260K model.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/dtype.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/defaults.hpp"
#include "nwc/host/levels.hpp"
#include "nwc/host/target_rate.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <doctest/doctest.h>
#include <map>

using namespace nwc;
using namespace nwc::host;

namespace {
const Registry &registry() {
  static Registry r = [] {
    set_log_level(NWC_LOG_ERROR + 1);
    Registry x;
    x.scan({test::plugin_dir(), std::filesystem::path(NWC_TEST_PLUGIN_ROOT) / "broken"});
    return x;
  }();
  return r;
}

std::string pipeline_text(int bits, int group, const std::string &extra = "",
                          const std::string &quantizer = "nwc.quant.uniform",
                          const std::string &entropy = "nwc.entropy.raw") {
  return "[pipeline]\nname = \"t\"\nselect = [\"*_proj.weight\"]\nunselected = \"zstd\"\n"
         "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = " +
         std::to_string(group) + "\n" + extra + "[quantizer]\nplugin = \"" + quantizer + "\"\n" +
         (quantizer == "nwc.quant.uniform" ? "bits = " + std::to_string(bits) + "\n" : "") +
         "[entropy]\nplugin = \"" + entropy +
         "\"\n[compensator]\nplugin = \"nwc.comp.none\"\nblock = 64\n";
}
} // namespace

TEST_CASE("8-bit uniform pipeline reconstructs stories260K within half a step per group") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(pipeline_text(8, 32), dir / "p.toml", registry());
  CompressSettings s;
  s.threads = 2;
  CompressResult r = compress_model(model, pl, registry(), dir / "m.nwc", s);
  CHECK(r.tensors.size() == model.tensors.size());
  CHECK(dir.entries() == std::vector<std::string>{"m.nwc"});

  ContainerReader reader(dir / "m.nwc");
  ContainerDecoder dec(reader, registry());
  size_t coded = 0;
  for (const auto &mt : model.tensors) {
    const TensorRecord *t = reader.find(mt.info.name);
    REQUIRE(t != nullptr);
    std::vector<float> orig = mt.load();
    std::vector<float> back = dec.decode_tensor(*t, 2);
    REQUIRE(back.size() == orig.size());
    if (t->storage != "pipeline") {
      CHECK(t->storage == "zstd");
      CHECK(back == orig); // stored losslessly
      continue;
    }
    ++coded;
    // Groups of 32 columns inside blocks of 64 columns: group g of row r covers columns
    // [block + 32g, block + 32g + 32).
    const int64_t rows = t->shape[0], cols = t->shape[1];
    for (const auto &b : t->blocks)
      for (int64_t r0 = 0; r0 < rows; ++r0)
        for (int64_t g0 = b.col_begin; g0 < b.col_end; g0 += 32) {
          const int64_t g1 = std::min(g0 + 32, b.col_end);
          float lo = orig[r0 * cols + g0], hi = lo;
          for (int64_t c = g0; c < g1; ++c) {
            lo = std::min(lo, orig[r0 * cols + c]);
            hi = std::max(hi, orig[r0 * cols + c]);
          }
          // Step of 8-bit affine quantization; the fp16 scale is rounded up (at most 2^-10
          // relative) and the fp16 offset adds at most half an fp16 ulp of |lo|.
          const double step = (hi - lo) / 255.0;
          const double tol = step / 2 * (1 + 1.0 / 512) + std::abs(lo) * 1.0 / 2048 + 1e-7;
          for (int64_t c = g0; c < g1; ++c)
            REQUIRE(std::abs(back[r0 * cols + c] - orig[r0 * cols + c]) <= tol);
        }
  }
  CHECK(coded == 35); // 5 layers x 7 linear weights
}

TEST_CASE("output bytes do not depend on the thread count") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(pipeline_text(4, 32), dir / "p.toml", registry());
  CompressSettings one, four;
  one.threads = 1;
  four.threads = 4;
  compress_model(model, pl, registry(), dir / "a.nwc", one);
  compress_model(model, pl, registry(), dir / "b.nwc", four);
  CHECK(test::read_bytes(dir / "a.nwc") == test::read_bytes(dir / "b.nwc"));
}

TEST_CASE("one column block decodes on its own and matches the whole-tensor decode") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(pipeline_text(4, 32), dir / "p.toml", registry());
  compress_model(model, pl, registry(), dir / "m.nwc", {});
  ContainerReader reader(dir / "m.nwc");
  ContainerDecoder dec(reader, registry());
  const TensorRecord *t = reader.find("model.layers.2.mlp.down_proj.weight");
  REQUIRE(t != nullptr);
  REQUIRE(t->blocks.size() == 3); // 172 columns in blocks of 64
  std::vector<float> whole = dec.decode_tensor(*t, 1);
  std::vector<float> last = dec.decode_block(*t, 2);
  const int64_t rows = t->shape[0], cols = t->shape[1], c0 = t->blocks[2].col_begin;
  const int64_t w = cols - c0;
  REQUIRE(last.size() == static_cast<size_t>(rows * w));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < w; ++c) REQUIRE(last[r * w + c] == whole[r * cols + c0 + c]);
}

TEST_CASE("a failing plugin mid-run leaves no output and no temporary file") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl =
      parse_pipeline(pipeline_text(4, 32, "", "org.nwc-test.throws"), dir / "p.toml", registry());
  CHECK_THROWS_WITH_AS(compress_model(model, pl, registry(), dir / "m.nwc", {}),
                       doctest::Contains("deliberate failure inside quantize"), nwc::Error);
  CHECK(dir.entries().empty());
}

TEST_CASE("a tensor shape the chunker cannot handle is an error naming the tensor") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl =
      parse_pipeline(pipeline_text(4, 32, "tail = \"error\"\n"), dir / "p.toml", registry());
  // Every down_proj fails; the one reported is the first in model order, whatever the threads.
  CompressSettings s;
  s.threads = 4;
  for (int run = 0; run < 5; ++run)
    CHECK_THROWS_WITH_AS(compress_model(model, pl, registry(), dir / "m.nwc", s),
                         doctest::Contains("model.layers.0.mlp.down_proj.weight"), nwc::Error);
  CHECK(dir.entries().empty());
}

TEST_CASE("bits per weight include the container overhead") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(pipeline_text(4, 32), dir / "p.toml", registry());
  compress_model(model, pl, registry(), dir / "m.nwc", {});
  ContainerReader reader(dir / "m.nwc");
  double sum = 0;
  for (const auto &t : reader.manifest().tensors)
    sum += container_tensor_bytes(reader.manifest(), reader.file_size(), t);
  CHECK(sum == doctest::Approx(static_cast<double>(reader.file_size())).epsilon(1e-9));
  // 4-bit symbols + 2 fp16 per group of 32 = 5 bits/weight before the raw coder's headers.
  const TensorRecord *q = reader.find("model.layers.0.self_attn.q_proj.weight");
  double bpw = static_cast<double>(q->stream_bytes()) * 8 / static_cast<double>(q->numel());
  CHECK(bpw > 5.0);
  CHECK(bpw < 5.1);
}

TEST_CASE("unselected float32 tensors are stored at their real precision, bit for bit") {
  // bf16: values with 8 significant bits; f16 but not bf16: k/1024 for 1024 < k < 2048 (11
  // significant bits, in f16's normal range); ones: both (stored as bf16); general: neither;
  // a -0.0 and a bf16 NaN pattern must survive too.
  std::vector<float> bf16_values, f16_values, ones(64, 1.0f), general;
  for (int k = 0; k < 300; ++k) {
    bf16_values.push_back(bf16_to_f32(f32_to_bf16(std::sin(0.37f * static_cast<float>(k)) * 3.0f)));
    f16_values.push_back(static_cast<float>(1025 + (k * 7) % 1023) / 1024.0f);
    general.push_back(std::sin(0.37f * static_cast<float>(k)) * 3.0f);
  }
  bf16_values[5] = -0.0f;
  uint32_t nan_bits = 0x7fc10000u; // a quiet NaN whose low 16 bits are zero
  std::memcpy(&bf16_values[6], &nan_bits, sizeof nan_bits);
  Model model;
  model.format = "safetensors";
  auto add = [&](const std::string &name, DType dtype, const std::vector<float> &v) {
    ModelTensor t;
    t.info.name = name;
    t.info.dtype = dtype;
    t.info.shape = {static_cast<int64_t>(v.size())};
    t.load = [v] { return v; };
    model.tensors.push_back(std::move(t));
  };
  add("bf16_in_f32", DType::F32, bf16_values);
  add("f16_in_f32", DType::F32, f16_values);
  add("ones", DType::F32, ones);
  add("general", DType::F32, general);
  add("declared_f16", DType::F16, f16_values);
  for (const char *storage : {"raw", "zstd"}) {
    INFO(storage);
    test::TempDir dir;
    Pipeline pl = parse_pipeline(
        std::string("[pipeline]\nname = \"t\"\nselect = []\nunselected = \"") + storage + "\"\n",
        dir / "p.toml", registry());
    compress_model(model, pl, registry(), dir / "m.nwc", {});
    ContainerReader reader(dir / "m.nwc");
    ContainerDecoder dec(reader, registry());
    const std::map<std::string, DType> expected = {{"bf16_in_f32", DType::BF16},
                                                   {"f16_in_f32", DType::F16},
                                                   {"ones", DType::BF16},
                                                   {"general", DType::F32},
                                                   {"declared_f16", DType::F16}};
    for (const auto &mt : model.tensors) {
      INFO(mt.info.name);
      const TensorRecord *t = reader.find(mt.info.name);
      REQUIRE(t != nullptr);
      CHECK(t->storage == storage);
      CHECK(t->dtype == expected.at(mt.info.name));
      const auto orig = mt.load(), back = dec.decode_tensor(*t, 1);
      REQUIRE(back.size() == orig.size());
      CHECK(std::memcmp(back.data(), orig.data(), orig.size() * sizeof(float)) == 0);
      if (std::string(storage) == "raw")
        CHECK(t->stream_bytes() == orig.size() * dtype_size(t->dtype));
    }
  }
}

TEST_CASE("replacement values of unselected tensors (fine-tuned norms, embeddings) are stored at "
          "the precision the original would be stored at") {
  // A bf16 model's norm fine-tuned off the bf16 grid stays bf16 (rounded to nearest even), so the
  // file does not grow; a float32 tensor's replacement stays float32, bit for bit.
  std::vector<float> bf16_values, general, tuned_bf16, tuned_general;
  for (int k = 0; k < 128; ++k) {
    const float v = std::sin(0.37f * static_cast<float>(k)) * 3.0f;
    bf16_values.push_back(bf16_to_f32(f32_to_bf16(v)));
    general.push_back(v);
    tuned_bf16.push_back(bf16_values.back() * 1.0013f + 1e-4f);
    tuned_general.push_back(v * 1.0013f + 1e-4f);
  }
  Model model;
  model.format = "safetensors";
  for (const auto &[name, v] :
       {std::pair<const char *, std::vector<float> *>{"norm", &bf16_values}, {"head", &general}}) {
    ModelTensor t;
    t.info.name = name;
    t.info.dtype = DType::F32;
    t.info.shape = {static_cast<int64_t>(v->size())};
    t.load = [values = *v] { return values; };
    model.tensors.push_back(std::move(t));
  }
  test::TempDir dir;
  Pipeline pl =
      parse_pipeline("[pipeline]\nname = \"t\"\nselect = []\n", dir / "p.toml", registry());
  CompressSettings s;
  s.replaced["norm"] = std::make_shared<std::vector<float>>(tuned_bf16);
  s.replaced["head"] = std::make_shared<std::vector<float>>(tuned_general);
  compress_model(model, pl, registry(), dir / "m.nwc", s);
  ContainerReader reader(dir / "m.nwc");
  ContainerDecoder dec(reader, registry());
  const TensorRecord *norm = reader.find("norm"), *head = reader.find("head");
  REQUIRE(norm != nullptr);
  REQUIRE(head != nullptr);
  CHECK(norm->dtype == DType::BF16);
  CHECK(head->dtype == DType::F32);
  const auto norm_back = dec.decode_tensor(*norm, 1), head_back = dec.decode_tensor(*head, 1);
  REQUIRE(norm_back.size() == tuned_bf16.size());
  for (size_t i = 0; i < tuned_bf16.size(); ++i)
    CHECK(norm_back[i] == bf16_to_f32(f32_to_bf16(tuned_bf16[i])));
  CHECK(norm_back != bf16_values); // the fine-tuned values, not the original's
  CHECK(head_back == tuned_general);
  // A replacement of the wrong length is the caller's bug, named.
  s.replaced["head"] = std::make_shared<std::vector<float>>(3, 1.0f);
  CHECK_THROWS_WITH(compress_model(model, pl, registry(), dir / "n.nwc", s),
                    doctest::Contains("replaced tensor head has the wrong element count"));
}

TEST_CASE("quality levels from the Hessian diagonal match a hand-computed case") {
  // 20 columns; diag(H) = 20 - j except column 7, the most important, and a tie at 12/13.
  const int64_t n = 20;
  std::vector<float> h(static_cast<size_t>(n * n), 0.0f);
  for (int64_t j = 0; j < n; ++j) h[static_cast<size_t>(j * n + j)] = static_cast<float>(20 - j);
  h[7 * n + 7] = 100.0f;
  h[13 * n + 13] = h[12 * n + 12];
  // Fractions 5%, 10%, 20% of 20 columns: 1, 2 and 4 columns (ceil), by descending diag(H):
  // 7 -> level 3; 0, 1 -> level 2; 2, 3, 4, 5 -> level 1; the rest 0.
  auto levels = nwc::host::levels_from_hessian(h.data(), n, {0.05, 0.1, 0.2});
  std::vector<uint8_t> want(static_cast<size_t>(n), 0);
  want[7] = 3;
  want[0] = want[1] = 2;
  want[2] = want[3] = want[4] = want[5] = 1;
  CHECK(levels == want);
  // On a narrow layer the top bands still get a column each (ceil, not the reference's floor):
  // 64 columns at 0.1% / 1% / 10% -> 1, 1 and 7 columns.
  std::vector<float> h64(64 * 64, 0.0f);
  for (int j = 0; j < 64; ++j) h64[static_cast<size_t>(j * 64 + j)] = static_cast<float>(j);
  auto l64 = nwc::host::levels_from_hessian(h64.data(), 64, {0.001, 0.01, 0.1});
  CHECK(l64[63] == 3);
  CHECK(l64[62] == 2);
  CHECK(std::count(l64.begin(), l64.end(), 1) == 7);
  CHECK(std::count(l64.begin(), l64.end(), 0) == 55);
  CHECK(l64[54] == 0);
  CHECK(l64[55] == 1);
  // Ties keep column order: with 6 columns at level 1 (6, 8, 9, 10, 11, 12), column 12 gets it and
  // column 13, of equal importance, does not.
  auto tie = nwc::host::levels_from_hessian(h.data(), n, {0.05, 0.1, 0.2, 0.3});
  CHECK(tie[7] == 4);
  CHECK(tie[12] == 1);
  CHECK(tie[13] == 0);
}

TEST_CASE("--target-bpw refuses a pipeline whose transform names no codec file") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  Pipeline pl = parse_pipeline(pipeline_text(4, 32), dir / "p.toml", registry());
  CHECK_THROWS_WITH_AS(
      choose_for_target_bpw(model, pl, registry(), CompressSettings{}, 4.0, dir / "x.nwc"),
      doctest::Contains("another transform that takes one codec file"), nwc::Error);
  CHECK(dir.entries().empty());
}

TEST_CASE("pipelines without [compensator] get the documented default") {
  test::TempDir dir;
  const std::string text = "[chunker]\nplugin = \"nwc.chunk.group\"\n[quantizer]\nplugin = "
                           "\"nwc.quant.uniform\"\n[entropy]\nplugin = \"nwc.entropy.raw\"\n";
  Pipeline pl = parse_pipeline(text, dir / "p.toml", registry());
  CHECK(pl.base[Slot::Compensator].plugin == kDefaultCompensator);
}
