// nwc/tools/convert.hpp — writing a model out in a runtime's layout.
#pragma once

#include "nwc/formats/model.hpp"

#include <filesystem>

namespace nwc::tools {

// Writes an HF Llama directory: config.json (LlamaConfig) and model.safetensors in dtype (F32,
// F16 or BF16). Models whose RoPE pairs interleaved channels (llama2.c) get their q_proj/k_proj
// rows permuted per head so that HF's rotate-half RoPE computes the same function. The directory
// is built under a temporary name and renamed into place when complete; it must not exist yet.
void write_hf_directory(const Model &model, const std::filesystem::path &dir, DType dtype);

// Removes the directory write_hf_directory() is building, if any (its files, then the directory).
// Async-signal-safe: for the CLI's SIGINT/SIGTERM handler, after remove_pending_temporaries().
void remove_pending_hf_directory() noexcept;

} // namespace nwc::tools
