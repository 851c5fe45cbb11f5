// nwc/formats/safetensors.hpp — safetensors reader (single file, directory, sharded with
// model.safetensors.index.json) and a streaming writer.
#pragma once

#include "nwc/formats/model.hpp"

#include <map>

namespace nwc {

// Limits applied before any allocation.
inline constexpr uint64_t kSafetensorsMaxHeader = 100ull << 20; // 100 MiB JSON header

// Reads a .safetensors file or a directory holding one or several (sharded, with
// model.safetensors.index.json) and an optional config.json (HF LlamaConfig -> Architecture).
// The header is fully validated first: JSON syntax, dtype names, shapes, byte counts
// (numel * dtype size == end - begin), offsets inside the data area, no overlaps.
Model read_safetensors(const std::filesystem::path &path);

// HF config.json -> Architecture: the keys read_safetensors() takes from a model directory.
// model_type llama, mistral, qwen2 or qwen3 (absent: llama, family left empty); the variant
// fields follow each model's transformers code: head_dim (Qwen 3's default 128), Llama's
// attention_bias (q, k, v, o) and mlp_bias, Qwen 2's q/k/v biases, Qwen 3's attention_bias and
// q/k norms, Mistral's sliding_window (4096 when absent, none when null), rope_scaling (or
// transformers 5's rope_parameters) of rope_type llama3. Keys that are absent stay 0 / default;
// rope_style is "rotate_half" (HF's layout) unless the file says "nwc_rope_style". What nwc cannot
// run is refused with a one-line nwc::Error naming the key: another model_type, a hidden_act other
// than silu, a rope_scaling.rope_type other than llama3 or default, partial_rotary_factor != 1,
// Qwen's use_sliding_window.
Architecture read_hf_config(const std::filesystem::path &path);

// The config.json transformers needs to load the architecture (LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM after its family; empty = llama) whose
// weights are stored in dtype (F32, F16 or BF16) in the HF layout (rotate-half RoPE; an
// interleaved architecture is refused: permute its q/k rows and describe the result): the
// architecture and model type, hidden_act, the sizes (hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
// max_position_embeddings), rms_norm_eps, rope_theta, tie_word_embeddings, torch_dtype, and the
// model type's variant keys: head_dim when set (always for qwen3), attention_bias and mlp_bias
// (llama), attention_bias (qwen3), sliding_window (mistral; null for none), use_sliding_window
// false (qwen2, qwen3), rope_scaling when Llama 3's. Throws nwc::Error naming what is missing,
// or the field a model type cannot hold (e.g. mlp_bias in qwen2), when the architecture cannot be
// described.
nlohmann::json hf_llama_config(const Architecture &arch, DType dtype);

// Writes hf_llama_config(arch, dtype) plus the keys of `extra` (which may not replace its keys) to
// path, 2-space indented, through a temporary file renamed into place.
void write_hf_config(const std::filesystem::path &path, const Architecture &arch, DType dtype,
                     const nlohmann::json &extra = nlohmann::json::object());

// Writes one .safetensors file tensor by tensor, in the order declared. The header is written up
// front (all shapes known), the data follows as write() is called, commit() renames the temporary
// file into place. Destroyed without commit(): no output file.
class SafetensorsWriter {
public:
  SafetensorsWriter(const std::filesystem::path &out, const std::vector<TensorInfo> &tensors,
                    const std::map<std::string, std::string> &metadata = {});
  ~SafetensorsWriter();
  // Writes the next tensor (must follow the declared order); data holds numel() floats that are
  // converted to the tensor's declared dtype (F32, F16 or BF16).
  void write(const std::string &name, const float *data);
  // Writes the next tensor's raw bytes (numel * dtype size).
  void write_raw(const std::string &name, const void *bytes, size_t len);
  // Writes the next tensor's raw bytes in consecutive parts, for tensors too large to hold in
  // memory at once; the tensor is complete (and the next may start) once all its numel * dtype
  // size bytes have been given. Every part names the same tensor.
  void write_raw_part(const std::string &name, const void *bytes, size_t len);
  void commit();

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace nwc
