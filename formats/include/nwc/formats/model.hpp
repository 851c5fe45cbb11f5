// nwc/formats/model.hpp — a model as read from a file: architecture plus named tensors that are
// loaded on demand (one at a time, so that large checkpoints need not fit in memory).
#pragma once

#include "nwc/formats/dtype.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace nwc {

// Llama 3's RoPE frequency scaling (HF rope_scaling with rope_type "llama3"): frequencies whose
// wavelength exceeds original_max_position_embeddings / low_freq_factor are divided by factor,
// those shorter than original_max_position_embeddings / high_freq_factor are kept, and those in
// between are interpolated (transformers' _compute_llama3_parameters).
struct RopeScaling {
  std::string type; // "" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

// Llama-family architecture. Fields are 0 / empty when the file does not say. Besides Llama
// itself it describes the variants of HF's Mistral, Qwen 2 and Qwen 3 models (family names the
// HF model_type): a head size other than dim / n_heads, biases, q/k RMSNorm, a sliding attention
// window and Llama 3's RoPE scaling. The defaults are plain Llama.
struct Architecture {
  std::string family;     // HF model_type: "llama", "mistral", "qwen2", "qwen3" (empty: unknown)
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
  int64_t head_dim = 0;            // size of one attention head; 0 = dim / n_heads
  bool attention_bias = false;     // q_proj, k_proj and v_proj have biases
  bool attention_out_bias = false; // o_proj has a bias
  bool mlp_bias = false;           // gate_proj, up_proj and down_proj have biases
  bool qk_norm = false;            // per-head RMSNorm of q and k (q_norm, k_norm) before RoPE
  int64_t sliding_window = 0;      // a query sees at most this many keys, itself included; 0 = all
  RopeScaling rope_scaling;
  // Divisors of the RoPE frequencies, one per rotated pair (head_size() / 2): GGUF's rope_freqs
  // tensor, as llama.cpp applies it (θ_i = pos · base^(-2i/d) / f_i); convert_hf_to_gguf.py
  // writes Llama 3's rope_scaling so. Empty = none.
  std::vector<double> rope_freq_factors;

  // The size of one head (head_dim, or dim / n_heads when unset; 0 without heads).
  int64_t head_size() const;
  // Width of the attention output that o_proj reads: n_heads * head_size().
  int64_t attention_dim() const;

  // The keys of the variant fields (head_dim ... rope_scaling) appear only when they differ from
  // plain Llama, so that a plain Llama architecture gives the same JSON as before they existed.
  nlohmann::json to_json() const;
  static Architecture from_json(const nlohmann::json &j); // throws nwc::Error on bad types
};

// The names of the fields in which the architecture differs from plain Llama (head_dim when
// it is not dim / n_heads, attention_bias, attention_out_bias, mlp_bias, qk_norm, sliding_window,
// rope_scaling, rope_freq_factors), in that order; empty for a plain Llama. Writers of formats that
// describe only plain Llama (GGUF's "llama", llama2.c) refuse the model naming the first.
std::vector<std::string> llama_variant_fields(const Architecture &arch);

struct TensorInfo {
  std::string name;           // HF Llama names: "model.layers.0.self_attn.q_proj.weight"
  DType dtype = DType::F32;   // as stored in the source file
  std::vector<int64_t> shape; // row-major; Linear weights are [out, in]
  uint64_t numel() const;
};

// A tensor as the quantized blocks of another runtime's format, exactly as its source stores them
// (ggml's "q4_K" blocks in a GGUF file or in a container coded by nwc.quant.ggml): rows of whole
// blocks, row after row.
struct NativeBlocks {
  std::string format; // "ggml"
  std::string type;   // the format's type name ("q4_K")
  uint64_t values_per_block = 0, bytes_per_block = 0;
  std::vector<uint8_t> bytes;
};

struct ModelTensor {
  TensorInfo info;
  // Reads the tensor converted to float32 (numel() values). Safe to call from several threads.
  std::function<std::vector<float>()> load;
  // Reads the tensor's native blocks; empty (no function) or nullopt when the source holds none.
  // Writers that store the same format keep them instead of re-quantizing load()'s values.
  std::function<std::optional<NativeBlocks>()> load_native;
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
// Biases (..._proj.bias) and norms (q_norm, k_norm, layernorms) are not.
bool is_decoder_linear(const std::string &name);

// Reorders the rows of a q/k projection ([heads * head_dim, cols]) between the two RoPE pairings:
// interleaved pairs (2i, 2i+1) of each head (llama2.c, Meta, ggml) and halves (i, i + head_dim/2)
// (HF's rotate-half). to_rotate_half selects the direction.
std::vector<float> permute_rope_rows(const std::vector<float> &w, int64_t heads, int64_t head_dim,
                                     int64_t cols, bool to_rotate_half);

} // namespace nwc
