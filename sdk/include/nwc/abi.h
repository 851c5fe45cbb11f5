/* nwc/abi.h — ABI version and symbol-export macros.
 *
 * The ABI version is (major << 16) | minor. A host built against major M loads only plugins whose
 * module reports major M; minor bumps only append fields (guarded by struct_size) or functions.
 * See docs/abi.md for the full rules. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define NWC_ABI_VERSION_MAJOR 1
#define NWC_ABI_VERSION_MINOR 7
#define NWC_ABI_VERSION ((uint32_t)((NWC_ABI_VERSION_MAJOR << 16) | NWC_ABI_VERSION_MINOR))
#define NWC_ABI_MAJOR(v) ((uint32_t)(v) >> 16)
#define NWC_ABI_MINOR(v) ((uint32_t)(v)&0xffffu)

#if defined(_WIN32)
#define NWC_EXPORT __declspec(dllexport)
#else
#define NWC_EXPORT __attribute__((visibility("default")))
#endif

/* Marks a pointer (NWC_APPENDED_DEFAULT) or integer (NWC_APPENDED_ZERO) field appended by a minor
 * version. In C++ it is a default member initializer (= nullptr, = 0), so C++ code that lists only
 * the older fields in a braced initializer stays warning-free (-Wmissing-field-initializers) and
 * leaves the new field NULL or 0; in C it is empty (use designated initializers or {0}). The layout
 * is the same in both languages. */
#ifdef __cplusplus
#define NWC_APPENDED_DEFAULT = nullptr
#define NWC_APPENDED_ZERO = 0
#else
#define NWC_APPENDED_DEFAULT
#define NWC_APPENDED_ZERO
#endif

#ifdef __cplusplus
#define NWC_EXTERN_C_BEGIN extern "C" {
#define NWC_EXTERN_C_END }
#else
#define NWC_EXTERN_C_BEGIN
#define NWC_EXTERN_C_END
#endif
