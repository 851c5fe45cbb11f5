// compress.cpp — nwc._nwc.compress: tensors held by Python (a state_dict) coded with a pipeline
// into a .nwc container by host::compress_model, the GIL released while the workers run.
//
// The progress callback runs on the calling thread between tensors. There it takes the GIL,
// checks for signals (Ctrl-C) and calls the Python callback; a KeyboardInterrupt or an exception
// from the callback stops the run by throwing through compress_model, whose container writer then
// removes its temporary file: no output is left behind. The Python error is raised as it was.
#include "bindings.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/host/compress.hpp"

#ifdef NWC_PYTHON_WITH_RUNTIME
#include "nwc/runtime/calibrate.hpp"
#endif

#include <chrono>
#include <exception>
#include <map>

namespace nwc::python {

namespace {

// The Python error that stopped a run, fetched while the GIL was held (restored afterwards).
struct PendingError {
  PyObject *type = nullptr, *value = nullptr, *trace = nullptr;
  bool set() const { return type != nullptr; }
};

// Thrown through compress_model when PendingError holds the reason.
struct StoppedByPython : std::exception {
  const char *what() const noexcept override { return "stopped by a Python exception"; }
};

// Hessians handed over as float32 arrays (cols x cols), by weight name.
std::map<std::string, host::HessianRef> hessians_from_arrays(const py::dict &arrays) {
  std::map<std::string, host::HessianRef> out;
  for (const auto &item : arrays) {
    const std::string name = py::cast<std::string>(item.first);
    auto a = py::cast<py::array_t<float, py::array::c_style | py::array::forcecast>>(item.second);
    if (a.ndim() != 2 || a.shape(0) != a.shape(1))
      fail(NWC_E_INVALID_ARG, "calibration[" + name + "]: expected a square matrix (cols x cols)");
    const float *p = a.data();
    out[name] = host::HessianRef(std::make_shared<std::vector<float>>(p, p + a.size()));
  }
  return out;
}

#ifdef NWC_PYTHON_WITH_RUNTIME
// The Hessians of an `nwc calibrate` file, loaded on demand; refused when made from another model.
std::map<std::string, host::HessianRef> hessians_from_file(const std::string &path,
                                                           const Model &model) {
  runtime::CalibrationFile cal = runtime::open_calibration(path);
  const std::string fp = runtime::model_fingerprint(model);
  if (fp != cal.info.model_hash)
    fail(NWC_E_INVALID_ARG, path + ": calibrated on model " + cal.info.model_hash +
                                ", but the tensors given are model " + fp +
                                " (calibrate these tensors)");
  return runtime::hessians_by_linear(cal);
}
#endif

// What nwc.compress cannot run: the pipeline tables that need the model runtime and calibration
// text inside the coding itself.
void check_supported(const host::Pipeline &pl) {
  const std::string what = pl.file.string();
  auto refuse = [&](const std::string &table) {
    fail(NWC_E_INVALID_ARG,
         what + " has " + table +
             ", which nwc.compress does not run (it codes with calibration text through the "
             "model runtime): use `nwc compress`");
  };
  if (pl.blockft.enabled) refuse("[blockft]");
  if (pl.awq.enabled) refuse("[awq]");
  if (pl.allocate.enabled) refuse("[allocate]");
  if (pl.calibration_mode == host::CalibrationMode::Sequential)
    refuse("[calibration] mode = \"sequential\"");
}

py::dict result_dict(const host::CompressResult &r, double seconds) {
  const host::RateFigures f = host::rate_figures(r);
  py::list tensors;
  for (const auto &t : r.tensors)
    tensors.append(py::make_tuple(t.name, t.storage, t.numel, t.stream_bytes));
  py::dict d;
  d["tensors"] = tensors;
  d["file_bytes"] = r.file_bytes;
  d["weights"] = f.weights;
  d["bits_per_weight"] = f.bits_per_weight;
  d["coded_bits_per_weight"] = f.coded_bits_per_weight;
  d["seconds"] = seconds;
  return d;
}

} // namespace

void bind_compress(py::module_ &m) {
  m.def(
      "compress",
      [](const std::shared_ptr<PipelineHandle> &pipeline,
         const std::vector<std::tuple<std::string, py::array, std::string>> &tensors,
         const std::string &architecture_json, const std::string &out, const py::dict &hessians,
         const std::string &calibration_file, unsigned threads, const py::object &progress,
         bool embed_codec, const std::string &source) {
        const host::Pipeline &pl = pipeline->pipeline;
        check_supported(pl);
        std::vector<TensorSource> sources;
        for (const auto &[name, array, dtype] : tensors) sources.push_back({name, array, dtype});
        std::vector<py::array> keep;
        const Model model = model_from_tensors(sources, architecture_json, source, keep);

        host::CompressSettings s;
        s.threads = threads;
        s.embed_resources = embed_codec;
        s.hessians = hessians_from_arrays(hessians);
        if (!calibration_file.empty()) {
#ifdef NWC_PYTHON_WITH_RUNTIME
          py::gil_scoped_release release;
          for (auto &[name, ref] : hessians_from_file(calibration_file, model))
            s.hessians.emplace(name, ref);
#else
          fail(NWC_E_INVALID_ARG,
               calibration_file +
                   ": reading an `nwc calibrate` file needs the model runtime, which this build "
                   "of nwc lacks; pass the Hessians as arrays");
#endif
        }
        PendingError pending;
        s.progress = [&](size_t done, size_t total, const std::string &name) {
          py::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() == 0) {
            if (progress.is_none()) return;
            PyObject *r =
                PyObject_CallFunction(progress.ptr(), "nns", static_cast<Py_ssize_t>(done),
                                      static_cast<Py_ssize_t>(total), name.c_str());
            if (r) {
              Py_DECREF(r);
              return;
            }
          }
          PyErr_Fetch(&pending.type, &pending.value, &pending.trace);
          throw StoppedByPython();
        };

        std::exception_ptr failure;
        host::CompressResult result;
        const auto t0 = std::chrono::steady_clock::now();
        {
          py::gil_scoped_release release;
          try {
            result = host::compress_model(model, pl, *pipeline->registry, out, s);
          } catch (...) {
            failure = std::current_exception();
          }
        }
        if (pending.set()) {
          PyErr_Restore(pending.type, pending.value, pending.trace);
          throw py::error_already_set();
        }
        if (failure) std::rethrow_exception(failure);
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return result_dict(result, secs);
      },
      py::arg("pipeline"), py::arg("tensors"), py::arg("architecture_json"), py::arg("out"),
      py::arg("hessians"), py::arg("calibration_file"), py::arg("threads"), py::arg("progress"),
      py::arg("embed_codec"), py::arg("source"),
      "Codes (name, array, dtype) tensors with a pipeline into `out`; see nwc.compress.");
}

} // namespace nwc::python
