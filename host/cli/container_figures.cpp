#include "container_figures.hpp"

#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"

#include <cmath>
#include <limits>
#include <memory>
#include <optional>

namespace nwc::cli {

namespace {

double db(double signal, double error) {
  return error > 0 ? 10 * std::log10(signal / error) : std::numeric_limits<double>::infinity();
}

struct Comparison {
  double squared_error = 0, signal = 0;
  size_t count = 0;
};

// The reference tensor `t.name` against the decoded one.
Comparison compare(const TensorRecord &t, const Model &reference, const std::string &name,
                   const host::ContainerDecoder &decoder, unsigned threads) {
  const ModelTensor *orig = reference.find(t.name);
  if (!orig) throw Error(NWC_E_INVALID_ARG, name + ": has no tensor " + t.name);
  if (orig->info.shape != t.shape)
    throw Error(NWC_E_INVALID_ARG, name + ": tensor " + t.name + " has shape " +
                                       shape_str(orig->info.shape) + ", the container " +
                                       shape_str(t.shape));
  std::vector<float> a = orig->load();
  std::vector<float> b = decoder.decode_tensor(t, threads);
  Comparison c;
  c.count = a.size();
  for (size_t i = 0; i < a.size(); ++i) {
    double diff = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    c.squared_error += diff * diff;
    c.signal += static_cast<double>(a[i]) * static_cast<double>(a[i]);
  }
  return c;
}

} // namespace

ContainerFigures container_figures(const ContainerReader &reader, const host::Registry &registry,
                                   const std::string &reference, unsigned threads) {
  const auto &m = reader.manifest();
  std::unique_ptr<host::ContainerDecoder> decoder;
  std::optional<Model> ref;
  if (!reference.empty()) {
    decoder = std::make_unique<host::ContainerDecoder>(reader, registry);
    ref = load_model(reference);
  }
  ContainerFigures f;
  f.file_bytes = reader.file_size();
  f.compared = ref.has_value();
  double total_bytes = 0, pipe_bytes = 0, sq_err = 0, sq_sig = 0;
  for (const auto &t : m.tensors) {
    TensorFigures row;
    row.record = &t;
    row.bytes = container_tensor_bytes(m, f.file_bytes, t);
    row.bits_per_weight = t.numel() ? row.bytes * 8 / static_cast<double>(t.numel()) : 0;
    if (t.storage == "pipeline") {
      for (const auto &s : m.stage_configs[static_cast<size_t>(t.stage_config)].stages)
        row.stages.push_back(s.plugin_id);
      pipe_bytes += row.bytes;
      f.pipeline_weights += t.numel();
    }
    total_bytes += row.bytes;
    f.weights += t.numel();
    if (ref) {
      const Comparison c = compare(t, *ref, reference, *decoder, threads);
      sq_err += c.squared_error;
      sq_sig += c.signal;
      row.mse = c.count > 0 ? c.squared_error / static_cast<double>(c.count) : 0.0;
      row.sqnr_db = db(c.signal, c.squared_error);
    }
    f.tensors.push_back(std::move(row));
  }
  f.bits_per_weight = f.weights ? total_bytes * 8 / static_cast<double>(f.weights) : 0;
  f.pipeline_bits_per_weight =
      f.pipeline_weights ? pipe_bytes * 8 / static_cast<double>(f.pipeline_weights) : 0;
  if (ref) {
    f.mse = f.weights ? sq_err / static_cast<double>(f.weights) : 0;
    f.sqnr_db = db(sq_sig, sq_err);
  }
  return f;
}

} // namespace nwc::cli
