// tensor_side.cpp — tensor-level side information (ABI 1.2): row scales, row gain and per-column
// quality levels, stored once per tensor and handed to every block.
#include "tensor_side.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/dtype.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace nwc::host::detail {

namespace {

DType scale_dtype(uint32_t code, const std::string &where) {
  switch (code) {
  case NWC_DTYPE_F32:
    return DType::F32;
  case NWC_DTYPE_F16:
    return DType::F16;
  case NWC_DTYPE_BF16:
    return DType::BF16;
  default:
    fail(NWC_E_CORRUPT_STREAM, where + ": row scales have dtype code " + std::to_string(code) +
                                   " (expected F32, F16 or BF16)");
  }
}

} // namespace

std::vector<uint8_t> encode_row_scales(uint32_t code, std::vector<float> &scales,
                                       const std::string &where) {
  DType dt = scale_dtype(code, where);
  std::vector<uint8_t> out(1 + scales.size() * dtype_size(dt));
  out[0] = static_cast<uint8_t>(code);
  from_float(dt, scales.data(), scales.size(), out.data() + 1);
  to_float(dt, out.data() + 1, scales.size(), scales.data()); // what the decoder will see
  for (float v : scales)
    if (!std::isfinite(v) || v == 0.0f)
      fail(NWC_E_INVALID_ARG, where + ": row scale " + std::to_string(v) +
                                  " is zero or not finite at the stored precision");
  return out;
}

std::vector<float> decode_row_scales(const std::vector<uint8_t> &bytes, int64_t rows,
                                     const std::string &where) {
  if (bytes.empty()) fail(NWC_E_CORRUPT_STREAM, where + ": empty row_scales stream");
  DType dt = scale_dtype(bytes[0], where);
  if (bytes.size() != 1 + static_cast<size_t>(rows) * dtype_size(dt))
    fail(NWC_E_CORRUPT_STREAM, where + ": row_scales stream has " + std::to_string(bytes.size()) +
                                   " bytes, expected " +
                                   std::to_string(1 + static_cast<size_t>(rows) * dtype_size(dt)));
  std::vector<float> out(static_cast<size_t>(rows));
  to_float(dt, bytes.data() + 1, out.size(), out.data());
  for (float v : out)
    if (!std::isfinite(v) || v == 0.0f)
      fail(NWC_E_CORRUPT_STREAM, where + ": row_scales stream holds a zero or non-finite scale");
  return out;
}

std::vector<uint8_t> pack_levels(const std::vector<uint8_t> &levels) {
  uint8_t top = 0;
  for (uint8_t l : levels) top = std::max(top, l);
  const unsigned bits = top < 4 ? 2 : top < 16 ? 4 : 8;
  std::vector<uint8_t> out(1 + (levels.size() * bits + 7) / 8, 0);
  out[0] = static_cast<uint8_t>(bits);
  for (size_t i = 0; i < levels.size(); ++i) {
    const size_t bit = i * bits;
    out[1 + bit / 8] |= static_cast<uint8_t>(levels[i] << (bit % 8));
  }
  return out;
}

std::vector<uint8_t> unpack_levels(const std::vector<uint8_t> &bytes, int64_t cols,
                                   const std::string &where) {
  if (bytes.empty() || (bytes[0] != 2 && bytes[0] != 4 && bytes[0] != 8))
    fail(NWC_E_CORRUPT_STREAM, where + ": levels stream must start with 2, 4 or 8 bits per level");
  const unsigned bits = bytes[0];
  const size_t need = 1 + (static_cast<size_t>(cols) * bits + 7) / 8;
  if (bytes.size() != need)
    fail(NWC_E_CORRUPT_STREAM, where + ": levels stream has " + std::to_string(bytes.size()) +
                                   " bytes, expected " + std::to_string(need));
  std::vector<uint8_t> out(static_cast<size_t>(cols));
  const unsigned mask = (1u << bits) - 1u;
  for (size_t i = 0; i < out.size(); ++i) {
    const size_t bit = i * bits;
    out[i] = static_cast<uint8_t>((bytes[1 + bit / 8] >> (bit % 8)) & mask);
  }
  return out;
}

nwc_block_info block_info(const std::string &name, int64_t rows, int64_t cols, int64_t c0,
                          int64_t c1, const TensorSide &side) {
  return nwc_block_info{sizeof(nwc_block_info),
                        0,
                        name.c_str(),
                        rows,
                        cols,
                        c0,
                        c1,
                        side.row_scales.empty() ? nullptr : side.row_scales.data(),
                        nullptr};
}

// The quality level of each chunk of a block, from the tensor's per-column levels.
std::vector<uint8_t> chunk_levels(const Stages &st, const nwc_block_info &info, const Geometry &g,
                                  const std::vector<uint8_t> &levels) {
  if (levels.empty()) return {};
  const Instance &ch = st.at(Slot::Chunker);
  if (!interface_has(st.chunker, offsetof(nwc_chunker_interface, chunk_columns)) ||
      !st.chunker->chunk_columns)
    fail(NWC_E_INVALID_ARG, std::string("tensor ") + info.tensor_name +
                                ": per-column quality levels need a chunker that maps chunks to "
                                "columns (such as nwc.chunk.column); " +
                                ch.plugin().id + " does not");
  std::vector<int64_t> cols(static_cast<size_t>(g.count));
  int64_t shape[1] = {g.count};
  nwc_tensor_view v{cols.data(), 0, NWC_DTYPE_I64, NWC_DEVICE_CPU, 0, 1, shape, nullptr};
  ch.check(st.chunker->chunk_columns(ch.raw(), &info, &v), "chunk_columns");
  std::vector<uint8_t> out(cols.size());
  for (size_t k = 0; k < cols.size(); ++k) {
    if (cols[k] < info.col_begin || cols[k] >= info.col_end)
      fail(NWC_E_INVALID_ARG, std::string("tensor ") + info.tensor_name + ": chunker " +
                                  ch.plugin().id + " put chunk " + std::to_string(k) +
                                  " in column " + std::to_string(cols[k]) +
                                  ", outside the block (per-column levels need chunks within "
                                  "one column)");
    out[k] = levels[static_cast<size_t>(cols[k])];
  }
  return out;
}

} // namespace nwc::host::detail
