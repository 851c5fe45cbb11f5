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

// HF LlamaConfig (config.json) -> Architecture: the keys read_safetensors() takes from a model
// directory. Keys that are absent stay 0 / default; rope_style is "rotate_half" (HF's layout)
// unless the file says "nwc_rope_style".
Architecture read_hf_config(const std::filesystem::path &path);

// The config.json transformers needs to load a LlamaForCausalLM with this architecture whose
// weights are stored in dtype (F32, F16 or BF16) in the HF layout (rotate-half RoPE; an
// interleaved architecture is refused: permute its q/k rows and describe the result): the
// architecture and model type, hidden_act, the sizes (hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
// max_position_embeddings), rms_norm_eps, rope_theta, tie_word_embeddings, attention_bias and
// mlp_bias (false), torch_dtype. head_dim is not written: an Architecture's head size is always
// hidden_size / num_attention_heads, transformers' default. Throws nwc::Error naming what is
// missing when the architecture cannot be described.
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
