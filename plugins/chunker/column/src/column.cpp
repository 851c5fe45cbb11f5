// nwc.chunk.column — the chunking of Neural Weight Compression (NWC, arXiv 2510.11234): each chunk
// is `chunk` consecutive rows running down one input column, ordered column-major (all vectors of
// column col_begin from the top, then column col_begin + 1, ...). Rows are optionally normalized
// by per-row scales that the host stores once per tensor (ABI 1.2 row_scales hook). No side info.
//
// Normalization is evaluated in double and rounded once to float: split stores
// (float)((double)x / s), merge returns (float)((double)c * s). The product of two floats is exact
// in double, so merge(split(x)) is within one float ulp of x (bit-exact when s is a power of two).
// A bit-exact round trip is impossible in general: x -> x / s on floats is not injective.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace {

const char *const kNormalizeChoices[] = {"row", "none"};
const char *const kScaleDtypeChoices[] = {"f32", "f16", "bf16", "log8"};

class ColumnChunker final : public nwc::Chunker {
public:
  static constexpr const char *id = "nwc.chunk.column";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "column";
  static constexpr const char *description =
      "NWC chunking (arXiv 2510.11234): a column block [rows, width] is cut into vectors of "
      "`chunk` consecutive rows running down each input column, ordered column-major (all "
      "ceil(rows/chunk) vectors of the first column of the block from the top, then the next "
      "column, ...). count = width * ceil(rows/chunk), length = chunk; rows that do not fill the "
      "last vector are padded with zeros, which merge drops. With normalize = \"row\" every row "
      "is divided by its standard deviation over the whole tensor, a per-row scale the host "
      "stores once per tensor at `scale_dtype` precision (ABI 1.2). Writes no side information.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static constexpr bool has_row_scales = true;
  static constexpr bool has_chunk_columns = true;
  NWC_OPTIONS(nwc::int_option("chunk", 16, 1, 4096,
                              "Rows per chunk: each chunk is `chunk` consecutive rows of one input "
                              "column; the last chunk of a column is zero-padded when rows is not "
                              "a multiple.",
                              NWC_OPTF_AFFECTS_BITSTREAM, "rows"),
              nwc::enum_option("normalize", "row", kNormalizeChoices, 2,
                               "\"row\" divides every row by its standard deviation over the "
                               "whole tensor (unbiased, n-1; 1 for a constant row) before "
                               "chunking and multiplies it back on merge; \"none\" leaves the "
                               "values as they are and stores no scales.",
                               NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::enum_option("scale_dtype", "f16", kScaleDtypeChoices, 4,
                               "Storage precision of the row scales (one per row, stored once "
                               "per tensor and counted in the bits); the paper stored fp32. "
                               "\"log8\" (ABI 1.6 hosts) stores at most one byte per row on a "
                               "1/64-octave grid, Rice-coded when that is shorter (within 0.55 % "
                               "of the scale when a tensor's scales span 4 "
                               "octaves or less); the rows are divided by the stored scale, so "
                               "only fine-tuned scales lose precision.",
                               NWC_OPTF_AFFECTS_BITSTREAM));

  explicit ColumnChunker(const nwc::Options &opts)
      : chunk_(opts.get_int("chunk")), normalize_(opts.get_string("normalize") == "row"),
        scale_dtype_(dtype_code(opts.get_string("scale_dtype"))) {}

  nwc_chunk_geometry plan(const nwc::BlockInfo &b) override {
    const int64_t width = b.width();
    if (b.rows <= 0 || width <= 0)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + std::string(b.tensor_name) + "': block of " + std::to_string(b.rows) +
                    " rows x " + std::to_string(width) + " columns is empty; nothing to chunk");
    const int64_t per_col = per_column(b.rows);
    if (per_col > std::numeric_limits<int64_t>::max() / width ||
        per_col * width > std::numeric_limits<int64_t>::max() / chunk_)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + std::string(b.tensor_name) + "': chunk matrix is too large");
    return {width * per_col, chunk_};
  }

  void split(const nwc::BlockInfo &b, nwc::ConstTensor<float> values, nwc::Tensor<float> chunks,
             nwc::Sink &) override {
    const nwc_chunk_geometry geo = plan(b);
    require_views(b, geo, values.rows, values.cols, chunks.rows, chunks.cols);
    const float *scales = block_scales(b, NWC_E_INVALID_ARG);
    const int64_t width = b.width(), per_col = geo.count / width;
    for (int64_t j = 0; j < width; ++j)
      for (int64_t v = 0; v < per_col; ++v) {
        float *dst = chunks.row(j * per_col + v);
        for (int64_t i = 0; i < chunk_; ++i) {
          const int64_t r = v * chunk_ + i;
          if (r >= b.rows) { // zero padding below the last row
            dst[i] = 0.0f;
            continue;
          }
          const float x = values(r, j);
          if (!std::isfinite(x))
            nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                             "': non-finite value at row " + std::to_string(r) +
                                             ", column " + std::to_string(b.col_begin + j));
          const float y =
              scales ? static_cast<float>(static_cast<double>(x) / static_cast<double>(scales[r]))
                     : x;
          if (!std::isfinite(y))
            nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': value " +
                                             std::to_string(x) + " at row " + std::to_string(r) +
                                             ", column " + std::to_string(b.col_begin + j) +
                                             " divided by its row scale " +
                                             std::to_string(scales[r]) + " overflows float");
          dst[i] = y;
        }
      }
  }

  void merge(const nwc::BlockInfo &b, nwc::ConstTensor<float> chunks, nwc::Bytes side,
             nwc::Tensor<float> values) override {
    if (side.size != 0)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                          "': column chunker has no side info, got " +
                                          std::to_string(side.size) + " bytes");
    const nwc_chunk_geometry geo = plan(b);
    require_views(b, geo, values.rows, values.cols, chunks.rows, chunks.cols);
    const float *scales = block_scales(b, NWC_E_CORRUPT_STREAM);
    const int64_t width = b.width(), per_col = geo.count / width;
    // One band of `chunk` rows at a time: its chunks (one per column) fill a rows x width tile
    // that stays in cache.
    for (int64_t v = 0; v < per_col; ++v) {
      const int64_t r0 = v * chunk_, n = std::min(chunk_, b.rows - r0); // the padding is dropped
      for (int64_t j = 0; j < width; ++j) {
        const float *src = chunks.row(j * per_col + v);
        float *dst = values.row(r0) + j;
        if (scales)
          for (int64_t i = 0; i < n; ++i)
            dst[i * width] = static_cast<float>(static_cast<double>(src[i]) *
                                                static_cast<double>(scales[r0 + i]));
        else
          for (int64_t i = 0; i < n; ++i) dst[i * width] = src[i];
      }
    }
  }

  // Per-row standard deviation of the whole tensor (unbiased, n-1 denominator) in double. A row
  // whose deviation is 0 or not finite, or a tensor with a single column, gets scale 1. The others
  // are clamped into the positive finite range of the storage dtype, so that the host's rounding
  // never turns a scale into 0 or infinity. With normalize = "none" the scales are all 1 and the
  // storage dtype is 0: the host stores nothing. scales may be [rows], [1, rows] or [rows, 1].
  uint32_t row_scales(const nwc::BlockInfo &b, nwc::ConstTensor<float> weight,
                      nwc::Tensor<float> scales) override {
    if (b.rows <= 0 || b.cols <= 0)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + std::string(b.tensor_name) + "': [" + std::to_string(b.rows) + ", " +
                    std::to_string(b.cols) + "] is empty; no row scales to compute");
    if (weight.rows != b.rows || weight.cols != b.cols)
      nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': weight is [" +
                                       std::to_string(weight.rows) + ", " +
                                       std::to_string(weight.cols) +
                                       "], expected the whole tensor [" + std::to_string(b.rows) +
                                       ", " + std::to_string(b.cols) + "]");
    if (scales.size() != b.rows || (scales.rows != 1 && scales.cols != 1))
      nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': scales have " +
                                       std::to_string(scales.size()) + " elements, expected [" +
                                       std::to_string(b.rows) + "] (one per row)");
    if (!normalize_) { // nothing to store: report dtype 0 and leave neutral scales
      std::fill_n(scales.data, b.rows, 1.0f);
      return 0u;
    }
    const nwc_host *h = host.raw();
    if (scale_dtype_ == NWC_ROW_SCALES_LOG8 && h && NWC_ABI_MINOR(h->abi_version) < 6)
      nwc::fail(NWC_E_VERSION, "tensor '" + std::string(b.tensor_name) +
                                   "': scale_dtype = \"log8\" needs a host of ABI 1.6 or "
                                   "later; this host speaks ABI 1." +
                                   std::to_string(NWC_ABI_MINOR(h->abi_version)));
    const int64_t n = b.cols;
    for (int64_t r = 0; r < b.rows; ++r) {
      const float *x = weight.row(r);
      double sum = 0.0;
      for (int64_t c = 0; c < n; ++c) {
        if (!std::isfinite(x[c]))
          nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                           "': non-finite value at row " + std::to_string(r) +
                                           ", column " + std::to_string(c));
        sum += x[c];
      }
      double scale = 1.0;
      if (n > 1) {
        const double mean = sum / static_cast<double>(n);
        double ss = 0.0;
        for (int64_t c = 0; c < n; ++c) {
          const double d = static_cast<double>(x[c]) - mean;
          ss += d * d;
        }
        const double sd = std::sqrt(ss / static_cast<double>(n - 1));
        if (sd > 0.0 && std::isfinite(sd)) scale = std::clamp(sd, min_scale(), max_scale());
      }
      scales.data[r] = static_cast<float>(scale);
    }
    return scale_dtype_;
  }

  void chunk_columns(const nwc::BlockInfo &b, nwc::Tensor<int64_t> columns) override {
    const nwc_chunk_geometry geo = plan(b);
    if (columns.size() != geo.count || (columns.rows != 1 && columns.cols != 1))
      nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) + "': columns have " +
                                       std::to_string(columns.size()) + " elements, expected [" +
                                       std::to_string(geo.count) + "] (one per chunk)");
    const int64_t per_col = geo.count / b.width();
    for (int64_t k = 0; k < geo.count; ++k) columns.data[k] = b.col_begin + k / per_col;
  }

private:
  static uint32_t dtype_code(const std::string &s) {
    if (s == "f32") return NWC_DTYPE_F32;
    if (s == "bf16") return NWC_DTYPE_BF16;
    if (s == "log8") return NWC_ROW_SCALES_LOG8;
    return NWC_DTYPE_F16;
  }

  int64_t per_column(int64_t rows) const { return rows / chunk_ + (rows % chunk_ != 0); }

  // The positive finite range of the storage dtype: [smallest subnormal f16 / normal f32, largest
  // finite value]; a scale inside it rounds to a positive finite value of that dtype (log8 clamps
  // to its own top, 2^(127 + 63/64), itself).
  double min_scale() const {
    return scale_dtype_ == NWC_DTYPE_F16 ? std::ldexp(1.0, -24)
                                         : static_cast<double>(std::numeric_limits<float>::min());
  }
  double max_scale() const {
    if (scale_dtype_ == NWC_DTYPE_F16) return 65504.0;
    if (scale_dtype_ == NWC_DTYPE_BF16) return std::ldexp(255.0, 120); // 0x7f7f
    return static_cast<double>(std::numeric_limits<float>::max());
  }

  // The row scales to divide by, or null for normalize = "none". Checks the host passed them and
  // that each is positive and finite (in merge they come from the stored tensor: untrusted).
  const float *block_scales(const nwc::BlockInfo &b, nwc_status bad_value) const {
    if (!normalize_) return nullptr;
    if (!b.row_scales)
      nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                       "': normalize = \"row\" needs the host to provide the "
                                       "tensor's row scales (nwc_block_info.row_scales, ABI 1.2), "
                                       "but none were passed");
    for (int64_t r = 0; r < b.rows; ++r) {
      const float s = b.row_scales[r];
      if (!(s > 0.0f) || !std::isfinite(s))
        nwc::fail(bad_value, "tensor '" + std::string(b.tensor_name) + "': row scale " +
                                 std::to_string(s) + " of row " + std::to_string(r) +
                                 " is not a positive finite number");
    }
    return b.row_scales;
  }

  int64_t chunk_;
  bool normalize_;
  uint32_t scale_dtype_;
};

} // namespace

NWC_MODULE(ColumnChunker)
