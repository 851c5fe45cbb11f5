// nwc.rotation.act_order — GPTQ's act-order with dynamic groups (GPTQModel's desc_act = True,
// static_groups = False; the g_idx of the GPTQ checkpoint format) as a column permutation.
//
// plan sorts the columns by decreasing Hessian diagonal (dead columns, H[j][j] = 0, count as 1, as
// GPTQ sets them before sorting; ties keep the original order), forward and forward_hessian put
// the weight and the Hessian in that order, and the chunker's groups, the quantizer's grids and the
// compensator then all see consecutive positions of the permuted matrix: each group is a run of
// `group` columns in decreasing-diagonal order, fitted when the compensator reaches it, which is
// exactly what GPTQ's reference code does with act_order and a group size. The decoder puts every
// column back. Side information: the permutation, ceil(log2(columns)) bits per column.
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

// Bits per index: the fewest that hold cols - 1 (0 for one column).
uint8_t index_bits(int64_t cols) {
  uint8_t b = 0;
  while ((int64_t{1} << b) < cols) ++b;
  return b;
}

// Side information: u8 format, u8 bits per index (index_bits(cols)), u32 cols, then the cols
// indices packed least significant bit first (ceil(cols · bits / 8) bytes). Read back from
// untrusted bytes: every field checked, the padding bits zero, the indices a permutation.
std::vector<int64_t> read_permutation(nwc::Bytes side, int64_t cols) {
  nwc::Reader in(side);
  const auto format = in.get<uint8_t>();
  const auto bits = in.get<uint8_t>();
  const auto n = in.get<uint32_t>();
  if (format != kFormat)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information has format " +
                                        std::to_string(format) + ", expected " +
                                        std::to_string(kFormat));
  if (static_cast<int64_t>(n) != cols)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information is for " + std::to_string(n) +
                                        " columns, the tensor has " + std::to_string(cols));
  if (bits != index_bits(cols))
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information has " + std::to_string(bits) +
                                        " bits per index, expected " +
                                        std::to_string(index_bits(cols)));
  const size_t bytes = (size_t{n} * bits + 7) / 8;
  if (in.remaining() != bytes)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information has " +
                                        std::to_string(in.remaining()) + " bytes of indices, " +
                                        "expected " + std::to_string(bytes));
  const uint8_t *p = in.position();
  std::vector<int64_t> perm(n);
  std::vector<char> seen(n, 0);
  uint64_t acc = 0;
  int have = 0;
  size_t next = 0;
  for (uint32_t k = 0; k < n; ++k) {
    while (have < bits) {
      acc |= uint64_t{p[next++]} << have;
      have += 8;
    }
    const auto j = static_cast<int64_t>(acc & ((uint64_t{1} << bits) - 1));
    acc >>= bits;
    have -= bits;
    if (j >= cols || seen[static_cast<size_t>(j)])
      nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information is not a permutation (index " +
                                          std::to_string(j) + " at position " + std::to_string(k) +
                                          ")");
    seen[static_cast<size_t>(j)] = 1;
    perm[k] = j;
  }
  if (acc != 0)
    nwc::fail(NWC_E_CORRUPT_STREAM, "act_order side information has non-zero padding bits");
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
      "Hessians. Side information: the permutation, ceil(log2(columns)) bits per column.";
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
    const uint8_t bits = index_bits(cols);
    side.put(kFormat);
    side.put(bits);
    side.put(static_cast<uint32_t>(cols));
    std::vector<uint8_t> packed((static_cast<size_t>(cols) * bits + 7) / 8, 0);
    size_t bit = 0;
    for (int64_t j : perm)
      for (uint8_t b = 0; b < bits; ++b, ++bit)
        packed[bit / 8] |= static_cast<uint8_t>(((j >> b) & 1) << (bit % 8));
    side.write(packed.data(), packed.size());
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
