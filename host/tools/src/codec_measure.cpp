#include "nwc/tools/codec_measure.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/codec_file.hpp"
#include "nwc/formats/dtype.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/nwc.h"

#include <cmath>

namespace nwc::tools {
using namespace nwc::host;

namespace {

struct ByteCounter {
  size_t bytes = 0;
  static nwc_status write(nwc_sink *s, const void *, size_t len) {
    static_cast<ByteCounter *>(s->ctx)->bytes += len;
    return NWC_OK;
  }
};

} // namespace

CodecMeasure measure_codec(const CodecMeasureSettings &s, const Registry &registry) {
  neural::CodecFile codec = neural::load_codec(s.codec);
  const auto &cfg = codec.config;
  if (s.level < 0 || s.level >= cfg.levels)
    fail(NWC_E_INVALID_ARG, "codec measure: level " + std::to_string(s.level) + " outside [0, " +
                                std::to_string(cfg.levels) + ")");
  if (s.block < 1) fail(NWC_E_INVALID_ARG, "codec measure: block must be positive");
  const auto &t = codec.tables;
  nwc_cdf_model cm = t.view();
  cm.default_level = static_cast<uint32_t>(s.level); // its level's tables, with a prior per level
  auto coder = registry.create(s.measure_entropy, OptionValues());
  const auto &entropy = coder->interface_as<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);

  Model model = load_model(s.model);
  CodecMeasure out;
  const int64_t L = cfg.chunk, M = cfg.latent;
  for (const auto &mt : model.tensors) {
    if (!is_decoder_linear(mt.info.name) || mt.info.shape.size() != 2) continue;
    const int64_t rows = mt.info.shape[0], cols = mt.info.shape[1];
    std::vector<float> w = mt.load();
    CodecMeasureTensor r;
    r.name = mt.info.name;
    r.rows = rows;
    r.cols = cols;
    // Row scales: unbiased std in double, rounded through f16 (the column chunker's default).
    std::vector<float> scale(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) {
      const double sd = neural::row_std(w.data() + i * cols, cols);
      float f = static_cast<float>(sd);
      uint16_t h = 0;
      from_float(DType::F16, &f, 1, &h);
      to_float(DType::F16, &h, 1, &scale[static_cast<size_t>(i)]);
    }
    r.side_bits = 8.0 + 16.0 * static_cast<double>(rows);
    const int64_t per_col = (rows + L - 1) / L;
    for (int64_t c0 = 0; c0 < cols; c0 += s.block) {
      const int64_t c1 = std::min(cols, c0 + s.block), n = (c1 - c0) * per_col;
      std::vector<float> x(static_cast<size_t>(n * L), 0.0f), y(static_cast<size_t>(n * M)),
          xr(static_cast<size_t>(n * L));
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < rows; ++i)
          x[static_cast<size_t>(((c - c0) * per_col) * L + i)] = static_cast<float>(
              static_cast<double>(w[i * cols + c]) / static_cast<double>(scale[i]));
      std::vector<uint8_t> levels(static_cast<size_t>(n), static_cast<uint8_t>(s.level));
      codec.analyze(x.data(), n, levels.data(), y.data());
      std::vector<int32_t> sym(y.size());
      for (size_t k = 0; k < y.size(); ++k) {
        const float med = t.medians[k % static_cast<size_t>(M)];
        const float q = std::nearbyint(y[k] - med);
        sym[k] = static_cast<int32_t>(q);
        y[k] = q + med;
      }
      r.estimate_bits += codec.estimate_bits(y.data(), n, levels.data());
      int64_t shape[2] = {n, M};
      nwc_tensor_view sv{sym.data(), 0, NWC_DTYPE_I32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
      ByteCounter counter;
      nwc_sink sink{&counter, &ByteCounter::write};
      coder->check(entropy.encode(coder->raw(), &sv, &cm, &sink), "encode");
      r.rans_bits += 8.0 * static_cast<double>(counter.bytes);
      codec.synthesize(y.data(), n, levels.data(), xr.data());
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < rows; ++i) {
          const double orig = w[i * cols + c];
          const double rec = static_cast<double>(static_cast<float>(
              static_cast<double>(xr[static_cast<size_t>(((c - c0) * per_col) * L + i)]) *
              static_cast<double>(scale[i])));
          r.squared_error += (orig - rec) * (orig - rec);
          r.sum += orig;
          r.sum_sq += orig * orig;
        }
    }
    out.tensors.push_back(r);
  }
  if (out.tensors.empty())
    fail(NWC_E_INVALID_ARG, s.model.string() + ": no decoder-block linear weights to measure");
  double est = 0, bits = 0, side = 0, err = 0, sum = 0, sq = 0;
  for (const auto &r : out.tensors) {
    out.weights += static_cast<double>(r.rows * r.cols);
    est += r.estimate_bits;
    bits += r.rans_bits;
    side += r.side_bits;
    err += r.squared_error;
    sum += r.sum;
    sq += r.sum_sq;
  }
  out.estimate_bpw = est / out.weights;
  out.rans_bpw = bits / out.weights;
  out.side_bpw = side / out.weights;
  out.mse = err / out.weights;
  const double mean = sum / out.weights;
  out.variance = sq / out.weights - mean * mean;
  out.shannon_mse = out.variance * std::pow(2.0, -2.0 * (out.rans_bpw + out.side_bpw));
  return out;
}

} // namespace nwc::tools
