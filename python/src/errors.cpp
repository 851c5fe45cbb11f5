// errors.cpp — C++ exceptions as Python exceptions. nwc::Error carries an nwc_status code
// (sdk/include/nwc/status.h); nwc._errors.error_class maps it to the package's exception
// hierarchy (nwc.CorruptStreamError, nwc.VersionError, ...). The message is the text the CLI
// prints after "error: ", unchanged.
#include "bindings.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/status.h"

#ifdef NWC_PYTHON_WITH_RUNTIME
#include "nwc/runtime/calibrate_job.hpp"
#endif

#include <filesystem>
#include <new>

namespace nwc::python {

namespace {

// Sets the Python error for an nwc status code and message (the GIL is held in translators).
void raise_status(nwc_status code, const char *message) {
  py::object cls = py::module_::import("nwc._errors").attr("error_class")(code);
  // One constructor argument: OSError (IoError's base) reads two as (errno, strerror).
  py::object error = cls(message);
  error.attr("code") = code;
  PyErr_SetObject(cls.ptr(), error.ptr());
}

} // namespace

void bind_errors(py::module_ &m) {
  m.def(
      "status_name", [](nwc_status code) { return std::string(nwc_status_name(code)); },
      "The C ABI's name of a status code (\"NWC_E_CORRUPT_STREAM\").");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error &e) {
      raise_status(e.code(), e.what());
#ifdef NWC_PYTHON_WITH_RUNTIME
    } catch (const runtime::RequestError &e) { // settings that cannot run as given
      raise_status(NWC_E_INVALID_ARG, e.what());
#endif
    } catch (const std::filesystem::filesystem_error &e) {
      raise_status(NWC_E_IO, e.what());
    }
    // Anything else goes on to pybind11's own translators (std::bad_alloc -> MemoryError, ...).
  });
}

} // namespace nwc::python
