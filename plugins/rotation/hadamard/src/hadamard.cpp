// nwc.rotation.hadamard — incoherence processing by a randomized Hadamard transform (QuIP#, Tseng
// et al. 2024): W' = U·W·Vᵀ with V = H_n·diag(s_in)/sqrt(n) on the input side and U likewise on
// the output side, signs s from the tensor's key. See README.md for the construction of H_n and
// the side information.
#include "hadamard_math.hpp"
#include "nwc/cpp/plugin.hpp"

#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include <xxhash.h>

namespace {

using nwc_hadamard::SideTransform;

constexpr uint8_t kFormat = 1;
constexpr uint8_t kInput = 1, kOutput = 2;
constexpr size_t kSideSize = 18; // u8 format, u8 sides, u32 rows, u32 cols, u64 key

struct Side {
  uint8_t sides = 0;
  int64_t rows = 0, cols = 0;
  uint64_t key = 0;
};

template <class T> void put_le(std::vector<uint8_t> &out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
template <class T> T get_le(const uint8_t *p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
  return v;
}

// Checks side information against the matrix it is applied to; everything wrong is
// NWC_E_CORRUPT_STREAM (the bytes come from a file when decoding).
Side parse_side(nwc::Bytes b, int64_t rows, int64_t cols) {
  if (b.size != kSideSize)
    nwc::fail(NWC_E_CORRUPT_STREAM, "side information has " + std::to_string(b.size) +
                                        " bytes, expected " + std::to_string(kSideSize));
  if (b.data[0] != kFormat)
    nwc::fail(NWC_E_CORRUPT_STREAM,
              "side information has format " + std::to_string(b.data[0]) + ", expected 1");
  Side s;
  s.sides = b.data[1];
  if (s.sides < 1 || s.sides > 3)
    nwc::fail(NWC_E_CORRUPT_STREAM, "side information names sides " + std::to_string(s.sides) +
                                        " (expected 1 input, 2 output or 3 both)");
  s.rows = get_le<uint32_t>(b.data + 2);
  s.cols = get_le<uint32_t>(b.data + 6);
  s.key = get_le<uint64_t>(b.data + 10);
  if (s.rows != rows || s.cols != cols)
    nwc::fail(NWC_E_CORRUPT_STREAM, "side information is for a [" + std::to_string(s.rows) + ", " +
                                        std::to_string(s.cols) + "] matrix, not [" +
                                        std::to_string(rows) + ", " + std::to_string(cols) + "]");
  for (int64_t n : {s.rows, s.cols})
    if (!nwc_hadamard::decompose(n).supported)
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "side information names size " + std::to_string(n) + ", which has no transform");
  return s;
}

class HadamardRotation final : public nwc::Rotation {
public:
  static constexpr const char *id = "nwc.rotation.hadamard";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "hadamard";
  static constexpr const char *description =
      "Incoherence processing as in QuIP# (Tseng et al. 2024): the randomized Hadamard transform "
      "W' = U·W·Vᵀ, V = H_n·diag(s)/sqrt(n) on the input side and U likewise on the output side, "
      "with independent random signs s drawn by splitmix64 from the tensor's key XXH64(tensor "
      "name, seed). H_n = H_{2^k} ⊗ H_K: a fast Walsh–Hadamard transform for the power-of-two "
      "part, and for K > 1 a Hadamard matrix built by Paley's constructions (I: K = q + 1, II: K "
      "= 2(q + 1), q prime) with K ≤ 1024; when the odd part m of n has no such K (172 = 4·43), "
      "a seeded random orthogonal matrix of order m (Householder QR in double, QuIP's "
      "construction) takes H_K's place. The Hessian is transformed with it (V·H·Vᵀ). Side "
      "information: 18 bytes per tensor (format, sides, rows, cols, key), never the matrices. "
      "Plain scalar loops in double, in a fixed order: the inverse gives the same bits on every "
      "machine and thread count. Sizes whose odd part exceeds 1024 without a Paley order are "
      "refused.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static inline const char *const side_choices[] = {"both", "input", "output"};
  NWC_OPTIONS(nwc::int_option("seed", 0, 0.0, 9007199254740992.0,
                              "Seed of the random signs (and of the random orthogonal fallback); "
                              "each tensor's key is XXH64(tensor name, seed).",
                              NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::enum_option("sides", "both", side_choices, 3,
                               "Which sides to rotate: both (U·W·Vᵀ), input (W·Vᵀ, columns mixed) "
                               "or output (U·W, rows mixed).",
                               NWC_OPTF_AFFECTS_BITSTREAM));

  explicit HadamardRotation(const nwc::Options &opts)
      : seed_(static_cast<uint64_t>(opts.get_int("seed"))) {
    const std::string s = opts.get_string("sides");
    sides_ = s == "input" ? kInput : s == "output" ? kOutput : kInput | kOutput;
  }

  void plan(std::string_view tensor_name, int64_t rows, int64_t cols, const nwc_tensor_view *,
            nwc::Sink &side) override {
    const std::string where = "tensor '" + std::string(tensor_name) + "' [" + std::to_string(rows) +
                              ", " + std::to_string(cols) + "]";
    if (rows <= 0 || cols <= 0 || rows > UINT32_MAX || cols > UINT32_MAX)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE, where + ": the shape is empty or too large");
    for (auto [bit, n] : {std::pair<uint8_t, int64_t>{kInput, cols}, {kOutput, rows}})
      if ((sides_ & bit) && !nwc_hadamard::decompose(n).supported)
        nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                  where + ": no transform of size " + std::to_string(n) +
                      " (its odd part has no Paley Hadamard order <= 1024 and exceeds 1024)");
    std::vector<uint8_t> out;
    out.push_back(kFormat);
    out.push_back(sides_);
    put_le<uint32_t>(out, static_cast<uint32_t>(rows));
    put_le<uint32_t>(out, static_cast<uint32_t>(cols));
    put_le<uint64_t>(out, XXH64(tensor_name.data(), tensor_name.size(), seed_));
    side.write(out.data(), out.size());
  }

  void forward(nwc::Bytes side, nwc::Tensor<float> w) override {
    apply(parse_side(side, w.rows, w.cols), w, false);
  }

  void forward_hessian(nwc::Bytes side, nwc::Tensor<float> h) override {
    // The side names the weight [rows, cols]; the Hessian is [cols, cols].
    if (side.size >= 10 && h.rows != get_le<uint32_t>(side.data + 6))
      nwc::fail(NWC_E_INVALID_ARG, "the Hessian is [" + std::to_string(h.rows) + ", " +
                                       std::to_string(h.cols) + "], not [cols, cols]");
    const Side s = parse_side(side, side.size >= 6 ? get_le<uint32_t>(side.data + 2) : 0, h.cols);
    if (!(s.sides & kInput)) return; // V = I
    const SideTransform &v = transform(s.key, s.cols, 1);
    const auto n = static_cast<size_t>(h.cols);
    std::vector<double> a(n * n), t(n * n);
    for (size_t i = 0; i < n * n; ++i) a[i] = h.data[i];
    for (size_t r = 0; r < n; ++r) v.forward(&a[r * n]); // H·Vᵀ
    for (size_t r = 0; r < n; ++r)
      for (size_t c = 0; c < n; ++c) t[c * n + r] = a[r * n + c];
    for (size_t r = 0; r < n; ++r) v.forward(&t[r * n]); // (V·Hᵀ·Vᵀ) = (V·H·Vᵀ)ᵀ
    for (size_t r = 0; r < n; ++r)
      for (size_t c = 0; c < n; ++c) h.data[r * n + c] = static_cast<float>(t[c * n + r]);
  }

  void inverse(nwc::Bytes side, nwc::Tensor<float> w) override {
    apply(parse_side(side, w.rows, w.cols), w, true);
  }

private:
  // The transform of one side, kept for the last tensor seen (the base block of the random
  // fallback costs a QR).
  const SideTransform &transform(uint64_t key, int64_t n, uint64_t purpose) {
    auto &slot = cache_[purpose - 1];
    if (!slot || slot_key_[purpose - 1] != key || slot->size() != n) {
      slot = std::make_unique<SideTransform>(n, key, purpose);
      slot_key_[purpose - 1] = key;
    }
    return *slot;
  }

  // Forward: W -> U·W·Vᵀ (rows by V, then columns by U); inverse: W -> Uᵀ·W·V (columns by Uᵀ,
  // then rows by Vᵀ).
  void apply(const Side &s, nwc::Tensor<float> w, bool inverse) {
    const auto rows = static_cast<size_t>(w.rows), cols = static_cast<size_t>(w.cols);
    std::vector<double> a(rows * cols);
    for (size_t i = 0; i < a.size(); ++i) a[i] = w.data[i];
    auto by_rows = [&] {
      const SideTransform &v = transform(s.key, w.cols, 1);
      for (size_t r = 0; r < rows; ++r)
        inverse ? v.transpose(&a[r * cols]) : v.forward(&a[r * cols]);
    };
    auto by_columns = [&] {
      const SideTransform &u = transform(s.key, w.rows, 2);
      std::vector<double> t(rows * cols);
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) t[c * rows + r] = a[r * cols + c];
      for (size_t c = 0; c < cols; ++c)
        inverse ? u.transpose(&t[c * rows]) : u.forward(&t[c * rows]);
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) a[r * cols + c] = t[c * rows + r];
    };
    if (!inverse) {
      if (s.sides & kInput) by_rows();
      if (s.sides & kOutput) by_columns();
    } else {
      if (s.sides & kOutput) by_columns();
      if (s.sides & kInput) by_rows();
    }
    for (size_t i = 0; i < a.size(); ++i) w.data[i] = static_cast<float>(a[i]);
  }

  uint64_t seed_;
  uint8_t sides_;
  std::unique_ptr<SideTransform> cache_[2];
  uint64_t slot_key_[2] = {0, 0};
};

} // namespace

NWC_MODULE(HadamardRotation)
