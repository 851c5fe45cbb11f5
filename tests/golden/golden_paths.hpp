// The synthetic model and settings of golden-paths-v1.nwc (see golden-paths-v1.toml), shared by
// its generator (make_golden.cpp) and the determinism test (test_determinism.cpp), and the XXH64
// of decoded tensors that golden JSON files record.
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/formats/safetensors.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>
#include <xxhash.h>

namespace nwc::golden {

// Deterministic, platform-independent pseudo-Gaussian values (LCG, sum of four uniforms).
inline std::vector<float> values(size_t n, uint64_t seed, double scale) {
  std::vector<float> v(n);
  uint64_t s = seed;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 11) / 9007199254740992.0;
  };
  for (auto &x : v) x = static_cast<float>(scale * (next() + next() + next() + next() - 2.0));
  return v;
}

struct SyntheticTensor {
  std::string name;
  std::vector<int64_t> shape;
};

inline std::vector<SyntheticTensor> paths_tensors() {
  return {{"model.embed_tokens.weight", {16, 64}},
          {"model.layers.0.self_attn.q_proj.weight", {48, 64}},
          {"model.layers.0.self_attn.k_proj.weight", {48, 64}},
          {"model.layers.0.self_attn.v_proj.weight", {48, 64}},
          {"model.layers.0.self_attn.o_proj.weight", {48, 64}},
          {"model.layers.0.mlp.gate_proj.weight", {40, 72}},
          {"model.layers.0.mlp.up_proj.weight", {4, 24}},
          {"model.norm.weight", {64}}};
}

// Writes the synthetic model as a safetensors file: rows with a spread of scales, one outlier
// input column per matrix, heavy-tailed values in q_proj (mostly zero) and o_proj.
inline void write_paths_model(const std::filesystem::path &file) {
  std::vector<TensorInfo> infos;
  for (const auto &t : paths_tensors()) infos.push_back({t.name, DType::F32, t.shape});
  SafetensorsWriter w(file, infos);
  uint64_t seed = 1;
  for (const auto &t : paths_tensors()) {
    const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1, cols = t.shape.back();
    std::vector<float> v = values(static_cast<size_t>(rows * cols), seed++, 0.02);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        float &x = v[static_cast<size_t>(r * cols + c)];
        x *= 1.0f + 0.1f * static_cast<float>(r % 7);
        if (c == 5) x *= 6.0f;
      }
    if (t.shape.size() == 1)
      for (auto &x : v) x += 1.0f; // a norm
    // Heavy tails (cubed values) for q_proj and o_proj: peaked symbols at 8 bits.
    if (t.name.find("q_proj") != std::string::npos || t.name.find("o_proj") != std::string::npos)
      for (auto &x : v) x = x * x * x * 2500.0f;
    if (t.name.find("q_proj") != std::string::npos) // and mostly zero in q_proj
      for (size_t i = 0; i < v.size(); ++i)
        if (i % 10 < 7) v[i] = 0.0f;
    w.write(t.name, v.data());
  }
  w.commit();
}

// Hessian of v_proj (X^T X / n of synthetic inputs), levels of gate_proj's columns, and o_proj
// coded ahead with a row gain: the parts of the container the pipeline file cannot express.
inline host::CompressSettings paths_settings(const Model &model, const host::Pipeline &pipeline,
                                             const host::Registry &registry) {
  host::CompressSettings s;
  s.embed_resources = true;
  const int64_t cols = 64, n = 256;
  std::vector<float> x = values(static_cast<size_t>(n * cols), 99, 1.0);
  auto h = std::make_shared<std::vector<float>>(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < n; ++k)
        acc += static_cast<double>(x[static_cast<size_t>(k * cols + i)]) *
               static_cast<double>(x[static_cast<size_t>(k * cols + j)]) *
               (i == 5 || j == 5 ? 3.0 : 1.0);
      (*h)[static_cast<size_t>(i * cols + j)] = static_cast<float>(acc / n);
    }
  s.hessians["model.layers.0.self_attn.v_proj.weight"] = h;
  std::vector<uint8_t> levels(72);
  for (size_t c = 0; c < levels.size(); ++c) levels[c] = static_cast<uint8_t>((c * 7 / 3) % 4);
  s.column_levels["model.layers.0.mlp.gate_proj.weight"] = levels;
  for (const auto &t : model.tensors) {
    if (t.info.name != "model.layers.0.self_attn.o_proj.weight") continue;
    auto coding = std::make_shared<host::TensorCoding>(
        host::encode_tensor(pipeline, registry, t.info, t.load(), s));
    std::vector<float> gain(static_cast<size_t>(t.info.shape[0]));
    for (size_t r = 0; r < gain.size(); ++r) gain[r] = 0.9f + 0.01f * static_cast<float>(r);
    host::set_row_scales(*coding, gain);
    s.precoded[t.info.name] = coding;
  }
  return s;
}

inline std::string xxh64_hex(const std::vector<float> &v) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(XXH64(v.data(), v.size() * sizeof(float), 0)));
  return hex;
}

} // namespace nwc::golden
