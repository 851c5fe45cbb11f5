// What the GPTQ and LDLQ integration tests share: stories260K with the Hessians of 16,384
// calibration tokens (computed once per test process), one-line pipelines over the group
// chunker and the uniform quantizer, compressing through the real pipeline, decoding a whole
// container, its ppl-v1 NLL, and the relative Hessian-weighted error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ).
#pragma once

#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nwc::test {

using Hessians = std::map<std::string, std::shared_ptr<const std::vector<float>>>;

// A pipeline: groups of `group` columns, `quantizer` (with `bits` when it is nwc.quant.uniform),
// raw packing, and the [compensator] table's body as given ("plugin = ...\n...").
inline std::string group_pipeline(const std::string &compensator, int bits, int group,
                                  const std::string &quantizer = "nwc.quant.uniform") {
  return "[pipeline]\nname = \"t\"\n[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = " +
         std::to_string(group) + "\n[quantizer]\nplugin = \"" + quantizer + "\"\n" +
         (quantizer == "nwc.quant.uniform" ? "bits = " + std::to_string(bits) + "\n" : "") +
         "[entropy]\nplugin = \"nwc.entropy.raw\"\n[compensator]\n" + compensator + "\n";
}

// stories260K and the Hessians of its linears on 16,384 tokens of the calibration text.
struct CalibratedStories {
  Model model = load_model(stories260k());
  Hessians hessians;
  CalibratedStories() {
    auto tok = runtime::load_tokenizer(data_dir() / "models" / "stories260K" / "tok512.bin", 512);
    auto stream = runtime::ppl_token_stream(
        runtime::read_text_file(data_dir() / "text" / "tinystories-calib.txt"), *tok);
    runtime::CalibrationSettings s;
    s.tokens = 16384;
    runtime::Calibration c = runtime::calibrate(model, stream, s);
    for (const auto &h : c.hessians) {
      auto v = std::make_shared<std::vector<float>>(h.h.begin(), h.h.end());
      for (const auto &l : h.linears) hessians[l] = v;
    }
  }
};

inline CalibratedStories &calibrated_stories() {
  static CalibratedStories f;
  return f;
}

// Compresses `model` with the pipeline `text` (two threads) to dir/<name>.nwc.
inline std::filesystem::path compress_with(const Model &model, const TempDir &dir,
                                           const std::string &name, const std::string &text,
                                           const Hessians &hessians) {
  host::Pipeline pl = host::parse_pipeline(text, dir / (name + ".toml"), bundled_registry());
  host::CompressSettings s;
  s.threads = 2;
  s.hessians.insert(hessians.begin(), hessians.end());
  host::compress_model(model, pl, bundled_registry(), dir / (name + ".nwc"), s);
  return dir / (name + ".nwc");
}

// Every tensor of a container, decoded, by name.
inline std::map<std::string, std::vector<float>> decode_all(const std::filesystem::path &p) {
  ContainerReader reader(p);
  host::ContainerDecoder dec(reader, bundled_registry());
  std::map<std::string, std::vector<float>> out;
  for (const auto &t : reader.manifest().tensors) out[t.name] = dec.decode_tensor(t, 1);
  return out;
}

// ppl-v1 NLL of a stories260K container on the first 20,480 tokens of the evaluation text (the
// token stream is made once per process).
inline double stories_nll(const std::filesystem::path &container) {
  static const std::vector<int32_t> stream = [] {
    auto tok = runtime::load_tokenizer(data_dir() / "models" / "stories260K" / "tok512.bin", 512);
    return runtime::ppl_token_stream(
        runtime::read_text_file(data_dir() / "text" / "tinystories-eval.txt"), *tok);
  }();
  runtime::EvalSettings es;
  es.max_tokens = 20480;
  Model m = host::open_container_model(container, bundled_registry(), 1);
  runtime::LlamaModel llama(m, 1);
  return runtime::evaluate_ppl(llama, stream, es).nll;
}

// tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) for W, its reconstruction Q [rows, cols] and H [cols, cols].
inline double relative_hessian_error(const std::vector<float> &w, const std::vector<float> &q,
                                     const std::vector<float> &h, int64_t rows, int64_t cols) {
  double num = 0, den = 0;
  std::vector<double> d(static_cast<size_t>(cols)), x(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) {
      x[static_cast<size_t>(i)] = w[static_cast<size_t>(r * cols + i)];
      d[static_cast<size_t>(i)] = x[static_cast<size_t>(i)] - q[static_cast<size_t>(r * cols + i)];
    }
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const double hij = h[static_cast<size_t>(i * cols + j)];
        num += d[static_cast<size_t>(i)] * hij * d[static_cast<size_t>(j)];
        den += x[static_cast<size_t>(i)] * hij * x[static_cast<size_t>(j)];
      }
  }
  return num / den;
}

} // namespace nwc::test
