// bindings.hpp — what the files of the Python extension module `nwc._nwc` share: the bind_*
// functions that register each part, NumPy conversions, and the in-memory model built from
// Python tensors (state_dicts).
#pragma once

#include "nwc/formats/model.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace nwc::python {

void bind_errors(py::module_ &m);
void bind_registry(py::module_ &m);
void bind_model(py::module_ &m);
void bind_container(py::module_ &m);
void bind_compress(py::module_ &m);
void bind_runtime(py::module_ &m);

using RegistryPtr = std::shared_ptr<const host::Registry>;

// A float32 NumPy array of `shape` that owns `values` (no copy).
py::array_t<float> to_numpy(std::vector<float> values, const std::vector<int64_t> &shape);

// A parsed and validated pipeline, with the registry it was validated against (which must
// outlive it: Pipeline::registry points there).
struct PipelineHandle {
  RegistryPtr registry;
  host::Pipeline pipeline;
};

// One tensor handed over from Python: a C-contiguous array of float32, float16 or (stored as
// uint16) bfloat16 values, and the dtype recorded for it ("F32", "F16" or "BF16").
struct TensorSource {
  std::string name;
  py::array array;
  std::string dtype;
};

// A Model whose loaders read the arrays of `tensors` (converted to float32 on demand, on any
// thread, without the GIL). `keep` receives references that keep the arrays alive; the Model must
// not be used after they are released. architecture_json: Architecture::to_json() text.
Model model_from_tensors(const std::vector<TensorSource> &tensors,
                         const std::string &architecture_json, const std::string &source,
                         std::vector<py::array> &keep);

// Opens a model file or a .nwc container (chosen by the file's magic bytes, as the CLI does).
Model open_any_model(const std::string &path, const host::Registry &registry, unsigned threads);

} // namespace nwc::python
