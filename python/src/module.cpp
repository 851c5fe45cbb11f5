// module.cpp — the extension module `nwc._nwc`. The public API is the pure-Python package `nwc`
// (python/nwc/__init__.py), which wraps these functions and classes; docs/python.md describes it.
#include "bindings.hpp"

PYBIND11_MODULE(_nwc, m) {
  m.doc() = "nwc's C++ host library (plugins, pipelines, compression, container decoding); use "
            "the `nwc` package, which wraps this module";
  m.attr("__version__") = NWC_VERSION;
#ifdef NWC_PYTHON_WITH_RUNTIME
  m.attr("HAS_RUNTIME") = true;
#else
  m.attr("HAS_RUNTIME") = false;
#endif
  nwc::python::bind_errors(m);
  nwc::python::bind_registry(m);
  nwc::python::bind_model(m);
  nwc::python::bind_container(m);
  nwc::python::bind_compress(m);
  nwc::python::bind_runtime(m);
}
