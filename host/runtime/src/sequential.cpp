#include "nwc/runtime/sequential.hpp"

#include "nwc/cpp/error.hpp"

#include <memory>

namespace nwc::runtime {
using namespace nwc::host;

SequentialResult compress_model_sequential(const Model &model, const Pipeline &pipeline,
                                           const Registry &registry,
                                           const std::filesystem::path &out,
                                           const CompressSettings &settings,
                                           const std::vector<int32_t> &tokens,
                                           const CalibrationSettings &calibration,
                                           const std::function<void(const std::string &)> &coded) {
  if (settings.job && settings.job->size() > 1)
    fail(NWC_E_INVALID_ARG, pipeline.file.string() +
                                ": [calibration] mode = \"sequential\" runs in one process; start "
                                "it without mpirun (or use mode = \"original\")");
  if (!settings.hessians.empty() || !settings.precoded.empty())
    fail(NWC_E_INVALID_ARG, pipeline.file.string() +
                                ": [calibration] mode = \"sequential\" computes the Hessians "
                                "itself; do not also pass --calibration");
  CompressSettings s = settings;
  SequentialResult result;
  result.calibration = calibrate_sequential(model, tokens, calibration, [&](const Hessian &h) {
    std::map<std::string, std::vector<float>> replaced;
    auto values = std::make_shared<std::vector<float>>(h.h.begin(), h.h.end());
    const HessianRef ref(values);
    for (const std::string &name : h.linears) {
      if (!pipeline.chain_for(name)) continue; // stored as it is: the model keeps its values
      const ModelTensor *mt = model.find(name);
      if (!mt) fail(NWC_E_INVALID_ARG, model.path.string() + ": missing tensor " + name);
      s.hessians[name] = ref;
      // GPTQ codes the original weights; only the Hessian sees the quantized model upstream.
      TensorCoding tc = encode_tensor(pipeline, registry, mt->info, mt->load(), s);
      replaced[name] = std::move(tc.reconstruction);
      // Only the streams are kept for writing: reconstructions of a whole large model would
      // not fit in memory.
      tc.reconstruction = {};
      tc.unit_reconstruction = {};
      s.precoded[name] = std::make_shared<const TensorCoding>(std::move(tc));
      s.hessians.erase(name);
      if (coded) coded(name);
    }
    return replaced;
  });
  result.compress = compress_model(model, pipeline, registry, out, s);
  return result;
}

} // namespace nwc::runtime
