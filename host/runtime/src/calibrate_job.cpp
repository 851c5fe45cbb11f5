#include "nwc/runtime/calibrate_job.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace nwc::runtime {

std::filesystem::path calibration_text_path(const std::string &given, const std::string &option) {
  std::string path = given;
  if (path.empty()) {
    const char *data = std::getenv("NWC_DATA");
    if (!data || !*data)
      throw RequestError(option + " is required (or set NWC_DATA to use its " +
                         "text/tinystories-calib.txt)");
    path = (std::filesystem::path(data) / "text" / "tinystories-calib.txt").string();
  }
  if (std::filesystem::path(path).filename() == "tinystories-eval.txt")
    throw Error(NWC_E_INVALID_ARG, path + ": this is the evaluation half of TinyStories; "
                                          "calibrate on tinystories-calib.txt");
  return path;
}

CalibrationText load_calibration_text(const std::filesystem::path &text,
                                      const std::filesystem::path &tokenizer, int64_t vocab_size) {
  auto tok = load_tokenizer(tokenizer, vocab_size);
  const std::string bytes = read_text_file(text);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(container_checksum(bytes.data(), bytes.size())));
  return {text, hex, ppl_token_stream(bytes, *tok)};
}

CalibrateOutcome calibrate_into_file(const Model &model, const CalibrationText &text,
                                     const CalibrationSettings &settings,
                                     const std::filesystem::path &out, host::Job *job) {
  CalibrateOutcome o;
  o.written = !job || job->rank() == 0;
  const std::string fingerprint = o.written ? model_fingerprint(model) : "";
  const auto t0 = std::chrono::steady_clock::now();
  // Layer by layer; each Hessian is written as its layer finishes (rank 0 writes under mpirun).
  o.plan = calibrate_to_file(model, text.tokens, settings, fingerprint, text.hash, out, job,
                             [&](const Hessian &h) {
                               double trace = 0;
                               for (int64_t i = 0; i < h.dim; ++i)
                                 trace += h.h[static_cast<size_t>(i * h.dim + i)];
                               o.inputs.push_back({h.input, h.linears, h.dim, h.count, trace});
                             });
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return o;
}

} // namespace nwc::runtime
