// nwc/formats/model.hpp — a model as read from a file: architecture plus named tensors that are
// loaded on demand (one at a time, so that large checkpoints need not fit in memory).
#pragma once

#include "nwc/formats/dtype.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nwc {

// Llama-family architecture. Fields are 0 / empty when the file does not say.
struct Architecture {
  std::string family;     // "llama" (empty when unknown)
  int64_t dim = 0;        // hidden size
  int64_t hidden_dim = 0; // MLP intermediate size
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::string rope_style; // "interleaved" (llama2.c, GGUF) or "rotate_half" (HF)
  bool tied_embeddings = false;

  nlohmann::json to_json() const;
  static Architecture from_json(const nlohmann::json &j); // throws nwc::Error on bad types
};

struct TensorInfo {
  std::string name;           // HF Llama names: "model.layers.0.self_attn.q_proj.weight"
  DType dtype = DType::F32;   // as stored in the source file
  std::vector<int64_t> shape; // row-major; Linear weights are [out, in]
  uint64_t numel() const;
};

struct ModelTensor {
  TensorInfo info;
  // Reads the tensor converted to float32 (numel() values). Safe to call from several threads.
  std::function<std::vector<float>()> load;
};

struct Model {
  std::string format; // "llama2c", "safetensors", "gguf", "nwc"
  std::filesystem::path path;
  Architecture arch;
  std::vector<ModelTensor> tensors;
  std::shared_ptr<void> keepalive; // owns the mapped files the loaders read from
  nlohmann::json metadata;         // format-specific extra metadata (GGUF key-values, ...)

  const ModelTensor *find(const std::string &name) const; // nullptr if absent
};

// Opens a model, choosing the reader by content (magic bytes), not only the extension:
// a directory (safetensors, sharded or single, with optional config.json), *.safetensors,
// *.gguf, a llama2.c *.bin. Throws nwc::Error with a one-line message naming the path and what
// was expected, e.g. "model.gguf: not a GGUF file (bad magic)".
Model load_model(const std::filesystem::path &path);

// Whether an HF Llama tensor name is a decoder-block linear weight
// (model.layers.N.self_attn.{q,k,v,o}_proj.weight, model.layers.N.mlp.{gate,up,down}_proj.weight).
bool is_decoder_linear(const std::string &name);

// Reorders the rows of a q/k projection ([heads * head_dim, cols]) between the two RoPE pairings:
// interleaved pairs (2i, 2i+1) of each head (llama2.c, Meta, ggml) and halves (i, i + head_dim/2)
// (HF's rotate-half). to_rotate_half selects the direction.
std::vector<float> permute_rope_rows(const std::vector<float> &w, int64_t heads, int64_t head_dim,
                                     int64_t cols, bool to_rotate_half);

} // namespace nwc
