// tensor_side.cpp — tensor-level side information (ABI 1.2): row scales, row gain and per-column
// quality levels, stored once per tensor and handed to every block.
#include "tensor_side.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/dtype.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace nwc::host::detail {

namespace {

// log8 row scales (NWC_ROW_SCALES_LOG8, ABI 1.6): every scale is 2^(L/64) for an integer L, held as
// [u8 code][i32 base][u8 shift][one byte q per row] with L = base + (q << shift). 2^(j/64) comes
// from this table (rounded to 24 significant bits) instead of libm, so every decoder computes the
// same floats. Only normal floats are representable: L in [kLog8MinL, kLog8MaxL].
constexpr uint32_t kLog8Significand[65] = {
    8388608,  8479954,  8572295,  8665641,  8760003,  8855394,  8951823,  9049301,
    9147842,  9247455,  9348154,  9449948,  9552851,  9656875,  9762032,  9868333,
    9975792,  10084422, 10194234, 10305242, 10417458, 10530897, 10645571, 10761494,
    10878679, 10997140, 11116891, 11237946, 11360319, 11484025, 11609078, 11735492,
    11863283, 11992466, 12123055, 12255067, 12388516, 12523418, 12659789, 12797645,
    12937002, 13077877, 13220286, 13364245, 13509772, 13656884, 13805598, 13955931,
    14107901, 14261526, 14416824, 14573813, 14732511, 14892937, 15055111, 15219050,
    15384775, 15552304, 15721658, 15892855, 16065917, 16240863, 16417715, 16596492,
    16777216, // 2^(64/64): the next octave, for rounding only
};
constexpr int32_t kLog8MinL = -126 * 64;     // 2^-126, the smallest normal float
constexpr int32_t kLog8MaxL = 127 * 64 + 63; // 2^(127 + 63/64) < FLT_MAX
constexpr size_t kLog8Header = 1 + 4 + 1;
constexpr int kLog8MaxShift = 6; // 255 << 6 covers kLog8MaxL - kLog8MinL

float log8_scale(int32_t L) {
  const int32_t shifted = L + 128 * 64; // > 0 in range: plain division is floor division
  return std::ldexp(static_cast<float>(kLog8Significand[shifted % 64]), shifted / 64 - 128 - 23);
}

// The L whose 2^(L/64) is nearest to a positive finite s (ties to the smaller), clamped to range.
int32_t log8_level(float s) {
  int e = 0;
  const double sig = std::ldexp(std::frexp(static_cast<double>(s), &e), 24); // [2^23, 2^24)
  const auto *hi = std::upper_bound(kLog8Significand, kLog8Significand + 64, sig);
  const int32_t j = static_cast<int32_t>(hi - kLog8Significand) - 1;
  const bool up = static_cast<double>(kLog8Significand[j + 1]) - sig < sig - kLog8Significand[j];
  const int64_t L = static_cast<int64_t>(e - 1) * 64 + j + (up ? 1 : 0);
  return static_cast<int32_t>(std::clamp<int64_t>(L, kLog8MinL, kLog8MaxL));
}

// Rice-coded log8 (container code 65): the same grid, [u8 65][i32 base][u8 shift][u8 center][u8 k]
// then, per row, v = zigzag(q - center) as v >> k one-bits, a zero-bit and v's k low bits (least
// significant first), bits filling each byte from its least significant bit, zero-padded to a
// byte. Row scales cluster around a tensor's typical row (a few octaves' spread on 1/64-octave
// steps), so this takes ~6.5 bits a row instead of 8; the writer keeps whichever form is smaller.
constexpr uint8_t kLog8RiceCode = 65;
constexpr size_t kLog8RiceHeader = kLog8Header + 2;
constexpr int kLog8RiceMaxK = 8;
constexpr uint32_t kLog8MaxZigzag = 510; // |q - center| <= 255

uint32_t zigzag(int32_t d) {
  return d >= 0 ? 2u * static_cast<uint32_t>(d) : 2u * static_cast<uint32_t>(-d) - 1u;
}
int32_t unzigzag(uint32_t v) {
  return (v & 1u) ? -static_cast<int32_t>((v + 1u) / 2u) : static_cast<int32_t>(v / 2u);
}

class BitWriter {
public:
  explicit BitWriter(std::vector<uint8_t> &out) : out_(out) {}
  void put(uint32_t bit) {
    if (used_ % 8 == 0) out_.push_back(0);
    out_.back() = static_cast<uint8_t>(out_.back() | (bit << (used_ % 8)));
    ++used_;
  }

private:
  std::vector<uint8_t> &out_;
  size_t used_ = 0;
};

// Header bytes shared by both log8 forms.
void put_log8_header(std::vector<uint8_t> &out, uint8_t code, int32_t base, int shift) {
  out.push_back(code);
  const auto ubase = static_cast<uint32_t>(base);
  for (int b = 0; b < 4; ++b) out.push_back(static_cast<uint8_t>(ubase >> (8 * b)));
  out.push_back(static_cast<uint8_t>(shift));
}

// The Rice form of stored grid indices q, with the center (median) and the k that make it shortest.
std::vector<uint8_t> rice_log8(int32_t base, int shift, const std::vector<uint8_t> &q) {
  std::vector<uint8_t> sorted = q;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2),
                   sorted.end());
  const uint8_t center = sorted.empty() ? 0 : sorted[sorted.size() / 2];
  std::vector<uint32_t> v(q.size());
  for (size_t i = 0; i < q.size(); ++i) v[i] = zigzag(int32_t{q[i]} - int32_t{center});
  int best_k = 0;
  uint64_t best_bits = UINT64_MAX;
  for (int k = 0; k <= kLog8RiceMaxK; ++k) {
    uint64_t bits = 0;
    for (uint32_t x : v) bits += (x >> k) + 1 + static_cast<uint64_t>(k);
    if (bits < best_bits) best_bits = bits, best_k = k;
  }
  std::vector<uint8_t> out;
  put_log8_header(out, kLog8RiceCode, base, shift);
  out.push_back(center);
  out.push_back(static_cast<uint8_t>(best_k));
  BitWriter bits(out);
  for (uint32_t x : v) {
    for (uint32_t u = x >> best_k; u > 0; --u) bits.put(1);
    bits.put(0);
    for (int b = 0; b < best_k; ++b) bits.put((x >> b) & 1u);
  }
  return out;
}

std::vector<uint8_t> encode_log8(std::vector<float> &scales, const std::string &where) {
  std::vector<int32_t> level(scales.size());
  for (size_t i = 0; i < scales.size(); ++i) {
    if (!(scales[i] > 0.0f) || !std::isfinite(scales[i]))
      fail(NWC_E_INVALID_ARG, where + ": row scale " + std::to_string(scales[i]) +
                                  " cannot be stored as log8 (positive finite scales only; use "
                                  "f16 or f32)");
    level[i] = log8_level(scales[i]);
  }
  const int32_t base = level.empty() ? 0 : *std::min_element(level.begin(), level.end());
  const int32_t top = level.empty() ? 0 : *std::max_element(level.begin(), level.end());
  int shift = 0; // the finest grid that spans the tensor's scales
  while ((top - base) > (255 << shift)) ++shift;
  std::vector<uint8_t> q(scales.size());
  for (size_t i = 0; i < scales.size(); ++i) {
    const int32_t nearest =
        shift == 0 ? level[i] - base : (level[i] - base + (1 << (shift - 1))) >> shift;
    const int32_t stored = std::min(nearest, (kLog8MaxL - base) >> shift);
    q[i] = static_cast<uint8_t>(stored);
    scales[i] = log8_scale(base + (stored << shift)); // what the decoder will see
  }
  std::vector<uint8_t> rice = rice_log8(base, shift, q);
  if (rice.size() < kLog8Header + q.size()) return rice;
  std::vector<uint8_t> out;
  out.reserve(kLog8Header + q.size());
  put_log8_header(out, static_cast<uint8_t>(NWC_ROW_SCALES_LOG8), base, shift);
  out.insert(out.end(), q.begin(), q.end());
  return out;
}

// The grid indices q of a Rice-coded log8 stream; every bit is accounted for (exact length, zero
// padding), so one set of scales has one encoding.
std::vector<uint8_t> unrice_log8(const std::vector<uint8_t> &bytes, int64_t rows,
                                 const std::string &where) {
  auto corrupt = [&](const std::string &what) {
    fail(NWC_E_CORRUPT_STREAM, where + ": Rice-coded log8 row_scales stream " + what);
  };
  const uint8_t center = bytes[kLog8Header];
  const int k = bytes[kLog8Header + 1];
  if (k > kLog8RiceMaxK)
    corrupt("has Rice parameter " + std::to_string(k) + " (at most " +
            std::to_string(kLog8RiceMaxK) + ")");
  const size_t total_bits = (bytes.size() - kLog8RiceHeader) * 8;
  size_t pos = 0;
  auto bit = [&]() -> uint32_t {
    if (pos >= total_bits) corrupt("ends before its " + std::to_string(rows) + " rows");
    const uint32_t b = (bytes[kLog8RiceHeader + pos / 8] >> (pos % 8)) & 1u;
    ++pos;
    return b;
  };
  std::vector<uint8_t> q(static_cast<size_t>(rows));
  for (size_t i = 0; i < q.size(); ++i) {
    uint32_t high = 0;
    while (bit() == 1)
      if (++high > (kLog8MaxZigzag >> k))
        corrupt("has a row (" + std::to_string(i) + ") more than 255 steps from its center");
    uint32_t v = high << k;
    for (int b = 0; b < k; ++b) v |= bit() << b;
    const int32_t value = int32_t{center} + unzigzag(v);
    if (v > kLog8MaxZigzag || value < 0 || value > 255)
      corrupt("has a row (" + std::to_string(i) + ") outside the 256-step grid");
    q[i] = static_cast<uint8_t>(value);
  }
  if ((pos + 7) / 8 != total_bits / 8)
    corrupt("has " + std::to_string(bytes.size()) + " bytes, expected " +
            std::to_string(kLog8RiceHeader + (pos + 7) / 8));
  while (pos < total_bits)
    if (bit() != 0) corrupt("has non-zero padding bits");
  return q;
}

std::vector<float> decode_log8(const std::vector<uint8_t> &bytes, int64_t rows,
                               const std::string &where) {
  const bool rice = bytes[0] == kLog8RiceCode;
  if (!rice && bytes.size() != kLog8Header + static_cast<size_t>(rows))
    fail(NWC_E_CORRUPT_STREAM, where + ": log8 row_scales stream has " +
                                   std::to_string(bytes.size()) + " bytes, expected " +
                                   std::to_string(kLog8Header + static_cast<size_t>(rows)));
  if (rice && bytes.size() < kLog8RiceHeader)
    fail(NWC_E_CORRUPT_STREAM, where + ": Rice-coded log8 row_scales stream has " +
                                   std::to_string(bytes.size()) + " bytes, less than its " +
                                   std::to_string(kLog8RiceHeader) + "-byte header");
  uint32_t ubase = 0;
  for (int b = 0; b < 4; ++b) ubase |= static_cast<uint32_t>(bytes[1 + b]) << (8 * b);
  const auto base = static_cast<int32_t>(ubase);
  const int shift = bytes[5];
  if (shift > kLog8MaxShift || base < kLog8MinL || base > kLog8MaxL)
    fail(NWC_E_CORRUPT_STREAM, where + ": log8 row_scales header (base " + std::to_string(base) +
                                   ", shift " + std::to_string(shift) +
                                   ") is outside float's normal range");
  const std::vector<uint8_t> q =
      rice ? unrice_log8(bytes, rows, where)
           : std::vector<uint8_t>(bytes.begin() + static_cast<std::ptrdiff_t>(kLog8Header),
                                  bytes.end());
  std::vector<float> out(static_cast<size_t>(rows));
  for (size_t i = 0; i < out.size(); ++i) {
    const int32_t L = base + (static_cast<int32_t>(q[i]) << shift);
    if (L > kLog8MaxL)
      fail(NWC_E_CORRUPT_STREAM,
           where + ": log8 row scale of row " + std::to_string(i) + " is above float's range");
    out[i] = log8_scale(L);
  }
  return out;
}

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
                                   " (expected F32, F16, BF16, log8 or Rice-coded log8)");
  }
}

} // namespace

std::vector<uint8_t> encode_row_scales(uint32_t code, std::vector<float> &scales,
                                       const std::string &where) {
  if (code == NWC_ROW_SCALES_LOG8) return encode_log8(scales, where);
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

uint32_t row_scales_storage(const std::vector<uint8_t> &bytes) {
  if (bytes.empty()) fail(NWC_E_CORRUPT_STREAM, "empty row_scales stream");
  return bytes[0] == kLog8RiceCode ? NWC_ROW_SCALES_LOG8 : bytes[0];
}

std::vector<float> decode_row_scales(const std::vector<uint8_t> &bytes, int64_t rows,
                                     const std::string &where) {
  if (bytes.empty()) fail(NWC_E_CORRUPT_STREAM, where + ": empty row_scales stream");
  if (bytes[0] == NWC_ROW_SCALES_LOG8 || bytes[0] == kLog8RiceCode)
    return decode_log8(bytes, rows, where);
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
