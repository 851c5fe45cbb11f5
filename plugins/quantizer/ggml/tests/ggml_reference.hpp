// llama.cpp's own libraries as the reference for nwc.quant.ggml's tests: libggml-base.so and
// libllama.v0.5.0.so of the node-llama-cpp package in the reference cache
// (scripts/fetch-references.sh), opened with dlopen. The few functions and structs the tests need
// are declared here by hand, from ggml.h / llama.h of the llama.cpp build the package names
// (_nlcBuildMetadata.json; ggml_version() 0.25.1, ggml_commit() 0ad4a86); the harness checks the
// declarations against the library where it can (type names, block sizes, struct fields).
// Both libraries carry RUNPATH $ORIGIN, so no LD_LIBRARY_PATH is needed; quantization runs in
// ggml-base and llama, no CPU-backend variant (libggml-cpu-*.so) is loaded.
// A missing package or library throws with a message: the test fails, it is never skipped.
#pragma once

#include "test_support.hpp"

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace nwc::test {

// enum ggml_type values of the types under test (ggml.h; checked with ggml_type_name()).
enum GgmlTypeId : int {
  GGML_F32 = 0,
  GGML_F16 = 1,
  GGML_Q4_0 = 2,
  GGML_Q4_1 = 3,
  GGML_Q5_0 = 6,
  GGML_Q5_1 = 7,
  GGML_Q8_0 = 8,
  GGML_Q2_K = 10,
  GGML_Q3_K = 11,
  GGML_Q4_K = 12,
  GGML_Q5_K = 13,
  GGML_Q6_K = 14,
  GGML_IQ4_NL = 20,
  GGML_IQ4_XS = 23,
  GGML_TYPE_COUNT = 43,
};

// struct ggml_type_traits (ggml.h).
struct GgmlTypeTraits {
  const char *type_name;
  int64_t blck_size;
  int64_t blck_size_interleave;
  size_t type_size;
  bool is_quantized;
  void (*to_float)(const void *x, float *y, int64_t k);
  void (*from_float_ref)(const float *x, void *y, int64_t k);
};

inline std::filesystem::path llama_bins_dir() {
  return reference_dir("node-llama-cpp/linux-x64") / "bins" / "linux-x64";
}

inline void *open_reference_library(const char *file) {
  const std::filesystem::path p = llama_bins_dir() / file;
  if (!std::filesystem::exists(p))
    throw std::runtime_error("llama.cpp reference library not found: " + p.string() +
                             " (run scripts/fetch-references.sh, or set NWC_REFERENCES)");
  void *h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw std::runtime_error(std::string("cannot load ") + p.string() + ": " + dlerror());
  return h;
}

template <class F> F reference_symbol(void *h, const char *lib, const char *name) {
  void *s = dlsym(h, name);
  if (!s)
    throw std::runtime_error(std::string(lib) + " does not export " + name +
                             " (another llama.cpp release than the tests were written for?)");
  F f;
  static_assert(sizeof(f) == sizeof(s));
  std::memcpy(&f, &s, sizeof(f));
  return f;
}

struct GgmlBase {
  size_t (*quantize_chunk)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                           int64_t n_per_row, const float *imatrix);
  void (*quantize_init)(int type);
  bool (*quantize_requires_imatrix)(int type);
  const GgmlTypeTraits *(*get_type_traits)(int type);
  size_t (*row_size)(int type, int64_t ne);
  const char *(*type_name)(int type);
  int64_t (*blck_size)(int type);
  size_t (*type_size)(int type);
  uint16_t (*fp32_to_fp16)(float);
  float (*fp16_to_fp32)(uint16_t);
  bool (*validate_row_data)(int type, const void *data, size_t nbytes);
  const char *(*version)();
  const char *(*commit)();

  static const GgmlBase &get() {
    static const GgmlBase lib = load();
    return lib;
  }

private:
  static GgmlBase load() {
    void *h = open_reference_library("libggml-base.so");
    const char *n = "libggml-base.so";
    GgmlBase g{};
    g.quantize_chunk = reference_symbol<decltype(g.quantize_chunk)>(h, n, "ggml_quantize_chunk");
    g.quantize_init = reference_symbol<decltype(g.quantize_init)>(h, n, "ggml_quantize_init");
    g.quantize_requires_imatrix = reference_symbol<decltype(g.quantize_requires_imatrix)>(
        h, n, "ggml_quantize_requires_imatrix");
    g.get_type_traits = reference_symbol<decltype(g.get_type_traits)>(h, n, "ggml_get_type_traits");
    g.row_size = reference_symbol<decltype(g.row_size)>(h, n, "ggml_row_size");
    g.type_name = reference_symbol<decltype(g.type_name)>(h, n, "ggml_type_name");
    g.blck_size = reference_symbol<decltype(g.blck_size)>(h, n, "ggml_blck_size");
    g.type_size = reference_symbol<decltype(g.type_size)>(h, n, "ggml_type_size");
    g.fp32_to_fp16 = reference_symbol<decltype(g.fp32_to_fp16)>(h, n, "ggml_fp32_to_fp16");
    g.fp16_to_fp32 = reference_symbol<decltype(g.fp16_to_fp32)>(h, n, "ggml_fp16_to_fp32");
    g.validate_row_data =
        reference_symbol<decltype(g.validate_row_data)>(h, n, "ggml_validate_row_data");
    g.version = reference_symbol<decltype(g.version)>(h, n, "ggml_version");
    g.commit = reference_symbol<decltype(g.commit)>(h, n, "ggml_commit");
    return g;
  }
};

} // namespace nwc::test
