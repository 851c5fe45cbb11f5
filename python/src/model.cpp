// model.cpp — models between Python and the host: NumPy arrays owning decoded tensors, in-memory
// models over Python tensors (a state_dict handed to compress or eval), and model files opened by
// any reader (nwc._nwc.Model: nwc.load_model).
#include "bindings.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/dtype.hpp"
#include "nwc/formats/safetensors.hpp"
#include "nwc/host/decode.hpp"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

namespace nwc::python {

py::array_t<float> to_numpy(std::vector<float> values, const std::vector<int64_t> &shape) {
  auto *owned = new std::vector<float>(std::move(values));
  py::capsule free_when_done(owned, [](void *p) { delete static_cast<std::vector<float> *>(p); });
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  return py::array_t<float>(dims, owned->data(), free_when_done);
}

Model model_from_tensors(const std::vector<TensorSource> &tensors,
                         const std::string &architecture_json, const std::string &source,
                         std::vector<py::array> &keep) {
  Model m;
  m.format = "python";
  m.path = source;
  nlohmann::json arch;
  try {
    arch = nlohmann::json::parse(architecture_json);
  } catch (const nlohmann::json::exception &e) {
    fail(NWC_E_INVALID_ARG, std::string("architecture: not JSON: ") + e.what());
  }
  try {
    m.arch = Architecture::from_json(arch);
  } catch (const Error &e) { // a caller's argument, not a corrupt file
    fail(NWC_E_INVALID_ARG, e.what());
  }
  for (const TensorSource &t : tensors) {
    if (m.find(t.name)) fail(NWC_E_INVALID_ARG, "tensor " + t.name + ": given twice");
    DType dtype;
    if (!dtype_from_name(t.dtype, dtype) ||
        (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16))
      fail(NWC_E_UNSUPPORTED_DTYPE,
           "tensor " + t.name + ": dtype " + t.dtype + ", expected F32, F16 or BF16");
    const py::array &a = t.array;
    if (!(a.flags() & py::array::c_style))
      fail(NWC_E_INVALID_ARG, "tensor " + t.name + ": the array is not C-contiguous");
    if (static_cast<size_t>(a.itemsize()) != dtype_size(dtype))
      fail(NWC_E_INVALID_ARG, "tensor " + t.name + ": " + std::to_string(a.itemsize()) +
                                  "-byte elements for dtype " + t.dtype);
    ModelTensor mt;
    mt.info.name = t.name;
    mt.info.dtype = dtype;
    for (py::ssize_t d = 0; d < a.ndim(); ++d) mt.info.shape.push_back(a.shape(d));
    const void *data = a.data();
    const size_t n = static_cast<size_t>(a.size());
    // The array stays alive and unchanged while the model is used (keep); reading its memory
    // needs no GIL.
    mt.load = [data, n, dtype] {
      std::vector<float> out(n);
      to_float(dtype, data, n, out.data());
      return out;
    };
    keep.push_back(a);
    m.tensors.push_back(std::move(mt));
  }
  return m;
}

Model open_any_model(const std::string &path, const host::Registry &registry, unsigned threads) {
  static const unsigned char magic[8] = {0x89, 'N', 'W', 'C', '\r', '\n', 0x1a, '\n'};
  unsigned char head[8] = {};
  if (FILE *f = std::fopen(path.c_str(), "rb")) {
    const size_t got = std::fread(head, 1, 8, f);
    std::fclose(f);
    if (got == 8 && std::memcmp(head, magic, 8) == 0)
      return host::open_container_model(path, registry, threads);
  }
  return load_model(path);
}

namespace {

// A model file opened for reading: its architecture and tensors, each loaded (converted to
// float32) on request.
struct ModelHandle {
  RegistryPtr registry; // for containers: their decoder's plugins
  Model model;
};

} // namespace

void bind_model(py::module_ &m) {
  m.def(
      "read_hf_config",
      [](const std::string &path) { return read_hf_config(path).to_json().dump(); },
      py::arg("path"), "An HF config.json as nwc's architecture (JSON text).");
  m.def(
      "hf_config",
      [](const std::string &architecture_json, const std::string &dtype) {
        DType d;
        if (!dtype_from_name(dtype, d))
          fail(NWC_E_INVALID_ARG, "dtype: expected F32, F16 or BF16, got '" + dtype + "'");
        return hf_llama_config(Architecture::from_json(nlohmann::json::parse(architecture_json)), d)
            .dump(2);
      },
      py::arg("architecture_json"), py::arg("dtype") = "F32",
      "The config.json transformers needs for an architecture (JSON text).");
  py::class_<ModelHandle, std::shared_ptr<ModelHandle>>(
      m, "Model", "A model file (llama2.c .bin, safetensors, HF directory, GGUF, .nwc) opened.")
      .def(py::init([](const std::shared_ptr<host::Registry> &reg, const std::string &path,
                       unsigned threads) {
             auto h = std::make_shared<ModelHandle>();
             h->registry = reg;
             py::gil_scoped_release release;
             h->model = open_any_model(path, *reg, threads);
             return h;
           }),
           py::arg("registry"), py::arg("path"), py::arg("threads") = 0)
      .def_property_readonly("format", [](const ModelHandle &h) { return h.model.format; })
      .def_property_readonly("architecture_json",
                             [](const ModelHandle &h) { return h.model.arch.to_json().dump(); })
      .def("tensors",
           [](const ModelHandle &h) {
             std::vector<std::tuple<std::string, std::vector<int64_t>, std::string>> out;
             for (const auto &t : h.model.tensors)
               out.emplace_back(t.info.name, t.info.shape, std::string(dtype_name(t.info.dtype)));
             return out;
           })
      .def(
          "load",
          [](const ModelHandle &h, const std::string &name) {
            const ModelTensor *t = h.model.find(name);
            if (!t) fail(NWC_E_INVALID_ARG, h.model.path.string() + ": no tensor named " + name);
            std::vector<float> values;
            {
              py::gil_scoped_release release;
              values = t->load();
            }
            return to_numpy(std::move(values), t->info.shape);
          },
          py::arg("name"), "The tensor as a float32 array (the GIL is released while it loads).");
}

} // namespace nwc::python
