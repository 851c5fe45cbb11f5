// Synthetic inputs and ABI adapters for the plugin checks: deterministic data, byte sinks, tensor
// views over borrowed memory, block descriptions, and comparisons.
#pragma once

#include "nwc/nwc.h"

#include <cstdint>
#include <string>
#include <vector>

namespace nwc::cli::check {

// Deterministic synthetic data: a fixed LCG, roughly Gaussian (sum of uniforms), scaled.
std::vector<float> synthetic(size_t n, double scale, uint64_t seed);

// The synthetic tensor: kRows x kCols weights of std about 0.02 with one larger row.
inline constexpr int64_t kRows = 32, kCols = 256;
std::vector<float> check_weight();
// The layer-input Hessian for it: H = XᵀX / 512 + 0.01·I of synthetic inputs, [kCols, kCols],
// symmetric positive definite.
std::vector<float> check_hessian();

// A byte sink that keeps what the plugin writes.
struct Sink {
  nwc_sink sink{};
  std::vector<uint8_t> bytes;
  Sink();
  Sink(const Sink &) = delete;
  Sink &operator=(const Sink &) = delete;
  nwc_bytes view() const { return nwc_bytes{bytes.data(), bytes.size()}; }
};

// A contiguous CPU view over borrowed memory; keeps its shape.
struct View {
  int64_t shape[2] = {0, 0};
  nwc_tensor_view v{};
  View(const void *data, uint32_t dtype, int64_t rows, int64_t cols, int ndim = 2);
  View(const View &) = delete;
  View &operator=(const View &) = delete;
  nwc_tensor_view *get() { return &v; }
};

// Columns [c0, c1) of the synthetic tensor "check.weight".
struct TensorBlock {
  std::string name = "check.weight";
  nwc_block_info info{};
  TensorBlock(int64_t c0, int64_t c1);
};

bool all_finite(const std::vector<float> &v);
double max_abs_diff(const std::vector<float> &a, const std::vector<float> &b);
std::string rel_error(const std::vector<float> &x,
                      const std::vector<float> &y); // "relative error 0.01"

} // namespace nwc::cli::check
