// nwc.quant.ggml — llama.cpp's (ggml's) quantization types, byte for byte, as an nwc quantizer.
//
// Each chunk (with nwc.chunk.group: `group` consecutive input columns of one row) is cut into ggml
// blocks of the type's block size (32 weights for q4_0 … q8_0 and iq4_nl, 256 for the k-quants and
// iq4_xs, 1 for f16); each block is quantized exactly as ggml_quantize_chunk() would quantize it
// (ggml_quants.cpp) and split into its per-weight codes (the symbols) and the rest of its bytes
// (the side information), in the layouts of ggml_blocks.hpp. Dequantization reproduces ggml's
// to_float. The plugin links nothing of ggml: the tests check it against libggml-base.so.
#include "ggml_blocks.hpp"
#include "ggml_mixture.hpp"
#include "ggml_quants.hpp"
#include "ggml_types.hpp"

#include "nwc/cpp/plugin.hpp"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace {

using nwc::ggml::Type;
using nwc::ggml::TypeTraits;

constexpr const char *kTypeNames[] = {"q4_0", "q4_1", "q5_0", "q5_1",   "q8_0",   "q2_K", "q3_K",
                                      "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs", "f16"};
constexpr const char *kFallbacks[] = {"none", "llama.cpp"};
constexpr const char *kMixtures[] = {"none",   "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
                                     "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",   "IQ4_XS"};

class GgmlQuantizer final : public nwc::Quantizer {
public:
  static constexpr const char *id = "nwc.quant.ggml";
  static constexpr const char *version = "1.2.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "ggml";
  static constexpr const char *description =
      "llama.cpp's quantization types (ggml q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, "
      "q6_K, iq4_nl, iq4_xs, f16), byte for byte as ggml_quantize_chunk writes them, with or "
      "without an importance matrix (nwc_block_info.importance, ABI 1.3), and decoded exactly as "
      "ggml's to_float. Each chunk is whole ggml blocks of consecutive columns of one row "
      "(nwc.chunk.group with group = the block size, 32 or 256, or 0 for whole rows); symbols are "
      "the per-weight codes, "
      "the side information the rest of each block (scales, minimums), so symbols + side repack "
      "into ggml's block bytes (ggml_blocks.hpp) and cost ggml's bits per weight with "
      "nwc.entropy.raw; export_native (ABI 1.5) hands those block bytes to the host, which writes "
      "them into GGUF files without re-quantizing.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  static constexpr bool supports_fitted = false;
  static constexpr bool supports_native = true;
  NWC_OPTIONS(
      nwc::enum_option(
          "type", "q8_0", kTypeNames, 13,
          "ggml type, named as ggml_type_name() names it (default q8_0, llama-quantize's "
          "default). Chunks must be whole blocks "
          "of it: 32 columns for q4_0, q4_1, q5_0, q5_1, q8_0 and iq4_nl, 256 for "
          "q2_K … q6_K and iq4_xs, any for f16.",
          NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::enum_option("fallback", "none", kFallbacks, 2,
                       "Rows whose length (the tensor's columns) is not a multiple of the type's "
                       "block: `none` refuses them; `llama.cpp` stores the tensor in the type "
                       "llama-quantize falls back to (q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0, "
                       "q2_K/q3_K -> q4_0, iq4_xs -> iq4_nl; f16 when cols % 32 != 0 too).",
                       NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::enum_option(
          "mixture", "none", kMixtures, 10,
          "A llama-quantize file type: each tensor gets the type llama-quantize gives it in that "
          "mixture (attn_v and ffn_down in more bits in some layers, …; llama.cpp's fallback for "
          "rows that are not whole blocks), from its name (model.layers.N.…) and the options "
          "layers, heads, kv_heads and imatrix; `type` and `fallback` are then unused.",
          NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::int_option("layers", 0, 0, 100000,
                      "With mixture: the model's number of decoder blocks (llama.cpp's n_layer).",
                      NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::int_option("heads", 1, 1, 100000,
                      "With mixture: attention heads (n_head; heads / kv_heads is the GQA "
                      "factor some mixtures use).",
                      NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::int_option("kv_heads", 1, 1, 100000, "With mixture: key/value heads (n_head_kv).",
                      NWC_OPTF_AFFECTS_BITSTREAM),
      nwc::bool_option("imatrix", false,
                       "With mixture: quantized with an importance matrix (some rules differ, as "
                       "in llama-quantize); must match whether the host passes importance "
                       "weights ([importance] in the pipeline).",
                       NWC_OPTF_AFFECTS_BITSTREAM));

  explicit GgmlQuantizer(const nwc::Options &opts)
      : type_(*nwc::ggml::type_from_name(opts.get_string("type"))),
        llama_fallback_(opts.get_string("fallback") == "llama.cpp") {
    const std::string mixture = opts.get_string("mixture");
    if (mixture == "none") return;
    mixture_ = nwc::ggml::mixture_from_name(mixture);
    model_.n_layers = static_cast<int>(opts.get_int("layers"));
    model_.n_head = static_cast<int>(opts.get_int("heads"));
    model_.n_head_kv = static_cast<int>(opts.get_int("kv_heads"));
    model_.has_imatrix = opts.get_bool("imatrix");
    if (model_.n_layers <= 0)
      nwc::fail(NWC_E_INVALID_ARG, "option mixture = \"" + mixture +
                                       "\" needs layers = the model's number of decoder blocks");
    if (model_.n_head % model_.n_head_kv != 0)
      nwc::fail(NWC_E_INVALID_ARG, "options heads = " + std::to_string(model_.n_head) +
                                       " and kv_heads = " + std::to_string(model_.n_head_kv) +
                                       ": heads must be a multiple of kv_heads");
  }

  void quantize(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
                nwc::Tensor<int32_t> symbols, nwc::Tensor<float> dequantized,
                nwc::Sink &side) override {
    const std::string tensor(b.tensor_name);
    nwc::require_shape(b, "symbols", symbols.rows, symbols.cols, latents.rows, latents.cols,
                       "latents");
    nwc::require_shape(b, "dequantized", dequantized.rows, dequantized.cols, latents.rows,
                       latents.cols, "latents");
    if (mixture_ && (b.importance != nullptr) != model_.has_imatrix)
      nwc::fail(NWC_E_INVALID_ARG,
                "tensor '" + tensor + "': option imatrix = " +
                    (model_.has_imatrix ? "true" : "false") + " but the host passes " +
                    (b.importance ? "importance weights" : "no importance weights") +
                    " ([importance] in the pipeline decides)");
    const Type t = resolve(b);
    const TypeTraits &tt = nwc::ggml::traits(t);
    const int64_t n = latents.rows, m = latents.cols;
    check_geometry(b, t, n, m);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < m; ++c)
        if (!std::isfinite(latents(r, c)))
          nwc::fail(NWC_E_INVALID_ARG, "tensor '" + tensor + "': non-finite value at chunk " +
                                           std::to_string(r) + ", element " + std::to_string(c));
    const float *imp = b.importance;
    if (imp)
      for (int64_t i = 0; i < n * m; ++i)
        if (!std::isfinite(imp[i]) || imp[i] < 0.0f)
          nwc::fail(NWC_E_INVALID_ARG,
                    "tensor '" + tensor + "': importance weight " + std::to_string(imp[i]) +
                        " at chunk " + std::to_string(i / m) + ", element " +
                        std::to_string(i % m) + " is not finite and non-negative");

    // q4_0 … q5_1 with importance weight values by sqrt(sigma2 + x²), sigma2 over the whole row:
    // the chunks of one row are consecutive (chunks_per_row of them).
    const int64_t chunks_per_row = b.rows > 0 ? n / b.rows : 1;
    std::vector<float> sigma2;
    if (nwc::ggml::needs_row_sigma2(t, imp != nullptr))
      for (int64_t r0 = 0; r0 < n; r0 += chunks_per_row)
        sigma2.push_back(nwc::ggml::row_sigma2(latents.row(r0), chunks_per_row * m));

    const int64_t per_chunk = m / tt.block;
    std::vector<uint8_t> out(static_cast<size_t>(n * per_chunk * tt.side_bytes));
    std::vector<uint8_t> block(static_cast<size_t>(tt.block_bytes));
    for (int64_t r = 0; r < n; ++r) {
      const float s2 = sigma2.empty() ? 0.0f : sigma2[static_cast<size_t>(r / chunks_per_row)];
      for (int64_t k = 0; k < per_chunk; ++k) {
        const int64_t at = k * tt.block;
        uint8_t *sd = out.data() + (r * per_chunk + k) * tt.side_bytes;
        int32_t *sym = symbols.row(r) + at;
        nwc::ggml::quantize_block(t, latents.row(r) + at, imp ? imp + r * m + at : nullptr, s2,
                                  block.data());
        nwc::ggml::unpack_block(t, block.data(), sym, sd);
        const bool finite = t == Type::F16
                                ? nwc::ggml::half_is_finite(static_cast<uint16_t>(sym[0]))
                                : nwc::ggml::side_is_valid(t, sd);
        if (!finite)
          nwc::fail(NWC_E_INVALID_ARG,
                    "tensor '" + tensor + "': chunk " + std::to_string(r) + ", block " +
                        std::to_string(k) + ": a " + tt.name +
                        " scale overflows fp16 (values too large for ggml's fp16 fields)");
        nwc::ggml::dequantize_block(t, sym, sd, dequantized.row(r) + at);
      }
    }
    side.write(out.data(), out.size());
  }

  void dequantize(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols, nwc::Bytes side,
                  nwc::Tensor<float> latents) override {
    const std::string tensor(b.tensor_name);
    nwc::require_shape(b, "latents", latents.rows, latents.cols, symbols.rows, symbols.cols,
                       "symbols");
    const Type t = resolve(b);
    const TypeTraits &tt = nwc::ggml::traits(t);
    const int64_t n = symbols.rows, m = symbols.cols;
    check_geometry(b, t, n, m);
    const int64_t per_chunk = m / tt.block;
    const auto need = static_cast<size_t>(n * per_chunk * tt.side_bytes);
    if (side.size != need)
      nwc::fail(NWC_E_CORRUPT_STREAM,
                "tensor '" + tensor + "': side info has " + std::to_string(side.size) +
                    " bytes, expected " + std::to_string(need) + " for " + std::to_string(n) +
                    " chunks of " + std::to_string(per_chunk) + " " + tt.name + " blocks");
    auto corrupt = [&](int64_t r, int64_t k, const std::string &what) {
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + tensor + "': chunk " + std::to_string(r) + ", " +
                                          tt.name + " block " + std::to_string(k) + ": " + what);
    };
    for (int64_t r = 0; r < n; ++r) {
      const int32_t *q = symbols.row(r);
      float *y = latents.row(r);
      if (t == Type::F16) { // one code per value: check all, then convert
        uint32_t bad = 0;
        for (int64_t c = 0; c < m; ++c)
          bad |= (static_cast<uint32_t>(q[c]) > 0xffffu ||
                  !nwc::ggml::half_is_finite(static_cast<uint16_t>(q[c])))
                     ? 1u
                     : 0u;
        if (bad)
          for (int64_t c = 0; c < m; ++c)
            if (static_cast<uint32_t>(q[c]) > 0xffffu ||
                !nwc::ggml::half_is_finite(static_cast<uint16_t>(q[c])))
              corrupt(r, c, "symbol " + std::to_string(q[c]) + " is not a finite fp16 value");
        for (int64_t c = 0; c < m; ++c) y[c] = nwc::ggml::fp16_to_fp32(static_cast<uint16_t>(q[c]));
        continue;
      }
      for (int64_t k = 0; k < per_chunk; ++k) {
        const int64_t at = k * tt.block;
        const uint8_t *sd = side.data + (r * per_chunk + k) * tt.side_bytes;
        if (!nwc::ggml::symbols_in_range(t, q + at))
          for (int64_t j = 0; j < tt.block; ++j)
            if (q[at + j] < tt.symbol_min || q[at + j] > tt.symbol_max)
              corrupt(r, k,
                      "symbol " + std::to_string(q[at + j]) + " at element " +
                          std::to_string(at + j) + " is outside [" + std::to_string(tt.symbol_min) +
                          ", " + std::to_string(tt.symbol_max) + "]");
        if (!nwc::ggml::side_is_valid(t, sd)) corrupt(r, k, "an fp16 scale is not finite");
        nwc::ggml::dequantize_block(t, q + at, sd, y + at);
      }
    }
  }

  // Repacks symbols + side into ggml's block bytes: the chunks are the block's rows cut into whole
  // ggml blocks of consecutive columns (check_geometry), so the chunks in order are the rows in
  // order, each row's blocks in column order, which is how GGUF stores a row-major tensor.
  NativeLayout export_native(const nwc::BlockInfo &b, nwc::ConstTensor<int32_t> symbols,
                             nwc::Bytes side, nwc::Sink &out) override {
    const std::string tensor(b.tensor_name);
    const Type t = resolve(b);
    const TypeTraits &tt = nwc::ggml::traits(t);
    const int64_t n = symbols.rows, m = symbols.cols;
    check_geometry(b, t, n, m);
    const int64_t per_chunk = m / tt.block;
    if (side.size != static_cast<size_t>(n * per_chunk * tt.side_bytes))
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + tensor + "': side info has " +
                                          std::to_string(side.size) + " bytes, expected " +
                                          std::to_string(n * per_chunk * tt.side_bytes));
    std::vector<uint8_t> bytes(static_cast<size_t>(n * per_chunk * tt.block_bytes));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t k = 0; k < per_chunk; ++k) {
        const int32_t *q = symbols.row(r) + k * tt.block;
        if (!nwc::ggml::symbols_in_range(t, q))
          nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + tensor + "': chunk " + std::to_string(r) +
                                              ", " + tt.name + " block " + std::to_string(k) +
                                              ": a symbol is outside the type's range");
        const size_t at = static_cast<size_t>(r * per_chunk + k);
        nwc::ggml::pack_block(t, q, side.data + at * tt.side_bytes,
                              bytes.data() + at * tt.block_bytes);
      }
    out.write(bytes.data(), bytes.size());
    return {"ggml", tt.name, static_cast<uint64_t>(tt.block),
            static_cast<uint64_t>(tt.block_bytes)};
  }

private:
  // The type of this tensor: the mixture's for its name, the option's, or with fallback =
  // "llama.cpp" the type llama-quantize gives rows of this length.
  Type resolve(const nwc::BlockInfo &b) const {
    if (mixture_) {
      int layer = -1;
      const std::string gguf = nwc::ggml::gguf_tensor_name(b.tensor_name, &layer);
      if (layer < 0 || layer >= model_.n_layers)
        nwc::fail(NWC_E_INVALID_ARG,
                  "tensor '" + std::string(b.tensor_name) +
                      "': option mixture needs a decoder-block linear model.layers.N.… with N < "
                      "layers = " +
                      std::to_string(model_.n_layers));
      const nwc::ggml::MixtureChoice c =
          nwc::ggml::ggml_mixture_type(*mixture_, gguf, layer, b.cols, 2, model_);
      if (c.kind != nwc::ggml::MixtureChoice::Kind::Quantized)
        nwc::fail(NWC_E_INVALID_ARG, "tensor '" + std::string(b.tensor_name) +
                                         "': llama-quantize does not quantize it in mixture " +
                                         nwc::ggml::mixture_name(*mixture_));
      return c.type;
    }
    if (llama_fallback_) return nwc::ggml::llama_fallback_type(type_, b.cols);
    const TypeTraits &tt = nwc::ggml::traits(type_);
    if (b.cols % tt.block != 0)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + std::string(b.tensor_name) + "': option type = \"" + tt.name +
                    "\" needs rows of a multiple of " + std::to_string(tt.block) +
                    " columns, this tensor has " + std::to_string(b.cols) +
                    " (fallback = \"llama.cpp\" stores it in llama-quantize's fallback type)");
    return type_;
  }

  // Chunks must be whole blocks of consecutive columns of one row, aligned to the row's blocks:
  // the latents are the block's rows, each cut into chunks of m columns (nwc.chunk.group without
  // padding and without a transform).
  static void check_geometry(const nwc::BlockInfo &b, Type t, int64_t n, int64_t m) {
    const TypeTraits &tt = nwc::ggml::traits(t);
    const std::string tensor(b.tensor_name);
    if (m <= 0 || m % tt.block != 0)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE, "tensor '" + tensor + "': chunks of " + std::to_string(m) +
                                             " values are not whole " + tt.name + " blocks of " +
                                             std::to_string(tt.block) + " (option type = \"" +
                                             tt.name + "\"): use nwc.chunk.group with group = " +
                                             std::to_string(tt.block) + " and no transform");
    if (b.col_begin % tt.block != 0)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE, "tensor '" + tensor + "': column block starts at " +
                                             std::to_string(b.col_begin) + ", not at a " + tt.name +
                                             " block boundary (a multiple of " +
                                             std::to_string(tt.block) + ")");
    const int64_t width = b.width();
    if (n > 0 && (width % m != 0 || n != b.rows * (width / m)))
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + tensor + "': " + std::to_string(n) + " chunks of " +
                    std::to_string(m) + " are not the " + std::to_string(b.rows) + " rows of " +
                    std::to_string(width) +
                    " columns cut into whole chunks (ggml blocks are consecutive columns of one "
                    "row: nwc.chunk.group without padding, no transform)");
  }

  Type type_;
  bool llama_fallback_;
  std::optional<nwc::ggml::Mixture> mixture_; // per-tensor types of a llama-quantize file type
  nwc::ggml::MixtureModel model_;
};

} // namespace

NWC_MODULE(GgmlQuantizer)
