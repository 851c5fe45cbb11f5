// nwc.transform.neural — the NWC learned transform: each chunk (a 16-vector running down a column,
// row-normalized by nwc.chunk.column) goes through the codec's analysis MLP g_a with its quality
// level's embedding; the latents are centered on the entropy model's medians, so that plain
// rounding (nwc.quant.round) is rounding around the medians, and the entropy model's quantized CDF
// tables (stored in the codec file, never recomputed) are handed to nwc.entropy.rans.
#include "nwc/cpp/plugin.hpp"
#include "nwc/formats/codec_file.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace {

class NeuralTransform final : public nwc::Transform {
public:
  static constexpr const char *id = "nwc.transform.neural";
  static constexpr const char *version = "1.1.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "neural";
  static constexpr const char *description =
      "The NWC neural codec (arXiv 2510.11234): an MLP analysis transform with residual blocks "
      "and a quality-level embedding maps each chunk to latents; a factorized-prior entropy model "
      "supplies per-latent-channel CDF tables (one set per quality level for codecs trained with "
      "level priors) that nwc.entropy.rans codes the symbols against (with escapes for values "
      "outside the tables). Latents are centered on the model's "
      "medians, so nwc.quant.round rounds around them. Expects unit-variance chunks "
      "(nwc.chunk.column with normalize = \"row\").";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::string_option("codec", "",
                                 "The trained codec (.nwcc file). Containers record its XXH64 "
                                 "hash; decoding with a different codec is refused.",
                                 NWC_OPTF_REQUIRED | NWC_OPTF_AFFECTS_BITSTREAM, NWC_OPT_PATH),
              nwc::int_option("level", 0, 0, 15,
                              "Quality level of every chunk when the host supplies no per-column "
                              "levels (0 = fewest bits; the codec defines how many levels exist).",
                              NWC_OPTF_AFFECTS_BITSTREAM),
              nwc::float_option("input_scale", 1.0, 1e-12, 1e12,
                                "Chunks are divided by this before the analysis transform and "
                                "multiplied by it after synthesis: 1 for row-normalized chunks "
                                "(nwc.chunk.column normalize = \"row\"); the codec's training "
                                "std (`nwc codec info`) to code raw weights with one global "
                                "scale, as the reference's variant without row normalization.",
                                NWC_OPTF_AFFECTS_BITSTREAM));

  explicit NeuralTransform(const nwc::Options &opts)
      : file_(nwc::neural::load_codec(opts.get_string("codec"))), level_(opts.get_int("level")),
        input_scale_(opts.get_float("input_scale")) {
    if (level_ >= file_.config.levels)
      nwc::fail(NWC_E_INVALID_ARG, "level = " + std::to_string(level_) + ", but codec " +
                                       opts.get_string("codec") + " has " +
                                       std::to_string(file_.config.levels) + " levels");
    model_ = file_.tables.view();
    model_.default_level = static_cast<uint32_t>(level_); // with a prior per level
  }

  int64_t latent_length(int64_t chunk_length) override {
    if (chunk_length != file_.config.chunk)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "the codec codes chunks of " + std::to_string(file_.config.chunk) +
                    " values, the chunker made chunks of " + std::to_string(chunk_length) +
                    " (set the chunker's chunk option to " + std::to_string(file_.config.chunk) +
                    ")");
    return file_.config.latent;
  }

  void forward(const nwc::BlockInfo &b, nwc::ConstTensor<float> chunks,
               nwc::Tensor<float> latents) override {
    const int64_t n = check(b, chunks.rows, chunks.cols, latents.rows, latents.cols,
                            file_.config.chunk, file_.config.latent);
    for (int64_t i = 0; i < chunks.size(); ++i)
      if (!std::isfinite(chunks.data[i]))
        nwc::fail(NWC_E_INVALID_ARG,
                  "tensor " + std::string(b.tensor_name) + ": a chunk holds a non-finite value");
    const float *x = chunks.data;
    std::vector<float> scaled;
    if (input_scale_ != 1.0) {
      scaled.resize(static_cast<size_t>(chunks.size()));
      for (size_t i = 0; i < scaled.size(); ++i)
        scaled[i] = static_cast<float>(static_cast<double>(chunks.data[i]) / input_scale_);
      x = scaled.data();
    }
    file_.analyze(x, n, levels(b, n), latents.data);
    const auto &med = file_.tables.medians;
    const int64_t m = file_.config.latent;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < m; ++c) latents.data[i * m + c] -= med[static_cast<size_t>(c)];
  }

  void inverse(const nwc::BlockInfo &b, nwc::ConstTensor<float> latents,
               nwc::Tensor<float> chunks) override {
    const int64_t n = check(b, latents.rows, latents.cols, chunks.rows, chunks.cols,
                            file_.config.latent, file_.config.chunk);
    const auto &med = file_.tables.medians;
    const int64_t m = file_.config.latent;
    std::vector<float> &y = y_; // reused from call to call: no fresh pages per block
    y.resize(static_cast<size_t>(latents.size()));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < m; ++c)
        y[i * m + c] = latents.data[i * m + c] + med[static_cast<size_t>(c)];
    file_.synthesize(y.data(), n, levels(b, n), chunks.data);
    if (input_scale_ != 1.0)
      for (int64_t i = 0; i < chunks.size(); ++i)
        chunks.data[i] = static_cast<float>(static_cast<double>(chunks.data[i]) * input_scale_);
  }

  const nwc_cdf_model *probability_model() override { return &model_; }

private:
  int64_t check(const nwc::BlockInfo &b, int64_t in_rows, int64_t in_cols, int64_t out_rows,
                int64_t out_cols, int64_t want_in, int64_t want_out) const {
    if (in_cols != want_in || out_cols != want_out || in_rows != out_rows)
      nwc::fail(NWC_E_INVALID_ARG, "tensor " + std::string(b.tensor_name) + ": expected [n, " +
                                       std::to_string(want_in) + "] -> [n, " +
                                       std::to_string(want_out) + "] views");
    return in_rows;
  }

  // The quality level of each of n chunks: the host's per-chunk levels (checked), or the uniform
  // option (in a buffer kept from call to call).
  const uint8_t *levels(const nwc::BlockInfo &b, int64_t n) {
    if (!b.chunk_levels) {
      uniform_levels_.assign(static_cast<size_t>(n), static_cast<uint8_t>(level_));
      return uniform_levels_.data();
    }
    for (int64_t i = 0; i < n; ++i)
      if (b.chunk_levels[i] >= file_.config.levels)
        nwc::fail(NWC_E_INVALID_ARG, "tensor " + std::string(b.tensor_name) + ": quality level " +
                                         std::to_string(b.chunk_levels[i]) +
                                         " is out of range for a codec with " +
                                         std::to_string(file_.config.levels) + " levels");
    return b.chunk_levels;
  }

  nwc::neural::CodecFile file_;
  int64_t level_;
  double input_scale_;
  nwc_cdf_model model_{};
  std::vector<float> y_; // inverse: the latents plus the medians
  std::vector<uint8_t> uniform_levels_;
};

} // namespace

NWC_MODULE(NeuralTransform)
