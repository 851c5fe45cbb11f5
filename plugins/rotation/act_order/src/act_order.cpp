// nwc.rotation.act_order — GPTQ's act-order with dynamic groups (GPTQModel's desc_act = True,
// static_groups = False; the g_idx of the GPTQ checkpoint format) as a column permutation.
//
// plan sorts the columns by decreasing Hessian diagonal (dead columns, H[j][j] = 0, count as 1, as
// GPTQ sets them before sorting; ties keep the original order), forward and forward_hessian put
// the weight and the Hessian in that order, and the chunker's groups, the quantizer's grids and the
// compensator then all see consecutive positions of the permuted matrix: each group is a run of
// `group` columns in decreasing-diagonal order, fitted when the compensator reaches it, which is
// exactly what GPTQ's reference code does with act_order and a group size. The decoder puts every
// column back. Side information: the permutation, 2 bytes per column (4 above 65,536 columns).
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

namespace {

constexpr uint8_t kFormat = 1;

std::string shape(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

// Side information: u8 format, u8 index width (2 or 4), u32 cols, cols little-endian indices.
// Read back from untrusted bytes: every field checked, the indices must be a permutation.
std::vector<int64_t> read_permutation(nwc::Bytes side, int64_t cols) {
  nwc::Reader in(side);
  const auto format = in.get<uint8_t>();
  const auto width = in.get<uint8_t>();
  const auto n = in.get<uint32_t>();
  if (format != kFormat)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information has format " +
                                        std::to_string(format) + ", expected " +
                                        std::to_string(kFormat));
  if (width != 2 && width != 4)
    nwc::fail(NWC_E_CORRUPT_STREAM,
              "act_order side information has index width " + std::to_string(width));
  if (static_cast<int64_t>(n) != cols)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information is for " + std::to_string(n) +
                                        " columns, the tensor has " + std::to_string(cols));
  if (in.remaining() != static_cast<size_t>(n) * width)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information has " +
                                        std::to_string(in.remaining()) + " bytes of indices, " +
                                        "expected " + std::to_string(size_t{n} * width));
  std::vector<int64_t> perm(n);
  std::vector<char> seen(n, 0);
  for (uint32_t k = 0; k < n; ++k) {
    const int64_t j = width == 2 ? in.get<uint16_t>() : in.get<uint32_t>();
    if (j >= cols || seen[static_cast<size_t>(j)])
      nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information is not a permutation (index " +
                                          std::to_string(j) + " at position " + std::to_string(k) +
                                          ")");
    seen[static_cast<size_t>(j)] = 1;
    perm[k] = j;
  }
  return perm;
}

class ActOrder final : public nwc::Rotation {
public:
  static constexpr const char *id = "nwc.rotation.act_order";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "act_order";
  static constexpr const char *description =
      "GPTQ's act-order with dynamic groups (GPTQModel desc_act = true, static_groups = false; "
      "g_idx in GPTQ checkpoints): permutes the input columns of each tensor by decreasing "
      "Hessian diagonal before chunking, so groups are runs of consecutive columns in that order, "
      "and puts them back after decoding. Use it with nwc.comp.gptq (act_order = false, "
      "static_groups = false) and nwc.chunk.group of the same group size. Needs calibration "
      "Hessians. Side information: the permutation, 2 bytes per column.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_NO_OPTIONS;

  explicit ActOrder(const nwc::Options &) {}

  void plan(std::string_view tensor, int64_t rows, int64_t cols, const nwc_tensor_view *view,
            nwc::Sink &side) override {
    const std::string t(tensor);
    if (!view)
      nwc::fail(NWC_E_INVALID_ARG,
                "tensor '" + t +
                    "': nwc.rotation.act_order orders columns by the calibration Hessian; "
                    "the pipeline has none (give --calibration or [calibration] mode = "
                    "\"sequential\")");
    const nwc::ConstTensor<float> hessian(view);
    if (hessian.rows != cols || hessian.cols != cols)
      nwc::fail(NWC_E_INVALID_ARG, "tensor '" + t + "' " + shape(rows, cols) + ": Hessian is " +
                                       shape(hessian.rows, hessian.cols));
    if (cols > UINT32_MAX)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE, "tensor '" + t + "' has more than 2^32 columns");
    std::vector<double> diag(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) {
      const double v = hessian(j, j);
      diag[static_cast<size_t>(j)] = v == 0.0 ? 1.0 : v;
    }
    std::vector<int64_t> perm(static_cast<size_t>(cols));
    std::iota(perm.begin(), perm.end(), 0);
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return diag[static_cast<size_t>(a)] > diag[static_cast<size_t>(b)];
    });
    const uint8_t width = cols <= 65536 ? 2 : 4;
    side.put(kFormat);
    side.put(width);
    side.put(static_cast<uint32_t>(cols));
    for (int64_t j : perm) {
      if (width == 2)
        side.put(static_cast<uint16_t>(j));
      else
        side.put(static_cast<uint32_t>(j));
    }
  }

  void forward(nwc::Bytes side, nwc::Tensor<float> weight) override {
    const auto perm = read_permutation(side, weight.cols);
    std::vector<float> row(static_cast<size_t>(weight.cols));
    for (int64_t r = 0; r < weight.rows; ++r) {
      float *w = weight.row(r);
      for (int64_t k = 0; k < weight.cols; ++k) row[static_cast<size_t>(k)] = w[perm[k]];
      std::memcpy(w, row.data(), row.size() * sizeof(float));
    }
  }

  void forward_hessian(nwc::Bytes side, nwc::Tensor<float> hessian) override {
    if (hessian.rows != hessian.cols)
      nwc::fail(NWC_E_INVALID_ARG, "Hessian is " + shape(hessian.rows, hessian.cols));
    const auto perm = read_permutation(side, hessian.cols);
    const int64_t n = hessian.cols;
    std::vector<float> h(hessian.data, hessian.data + n * n);
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) hessian(a, b) = h[static_cast<size_t>(perm[a] * n + perm[b])];
  }

  void inverse(nwc::Bytes side, nwc::Tensor<float> weight) override {
    const auto perm = read_permutation(side, weight.cols);
    std::vector<float> row(static_cast<size_t>(weight.cols));
    for (int64_t r = 0; r < weight.rows; ++r) {
      float *w = weight.row(r);
      for (int64_t k = 0; k < weight.cols; ++k) row[static_cast<size_t>(perm[k])] = w[k];
      std::memcpy(w, row.data(), row.size() * sizeof(float));
    }
  }
};

} // namespace

NWC_MODULE(ActOrder)
