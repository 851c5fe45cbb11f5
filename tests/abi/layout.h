/* Pinned layouts of every ABI struct (LP64). A change here is an ABI break: see docs/abi.md.
 * Included from a C11 and a C++20 translation unit. */
#pragma once
#include "nwc/nwc.h"

#ifdef __cplusplus
#define NWC_PIN(expr) static_assert(expr, #expr)
#else
#define NWC_PIN(expr) _Static_assert(expr, #expr)
#endif

#if UINTPTR_MAX == 0xffffffffffffffffu
NWC_PIN(sizeof(nwc_tensor_view) == 48);
NWC_PIN(offsetof(nwc_tensor_view, byte_offset) == 8);
NWC_PIN(offsetof(nwc_tensor_view, dtype) == 16);
NWC_PIN(offsetof(nwc_tensor_view, device_type) == 20);
NWC_PIN(offsetof(nwc_tensor_view, device_id) == 24);
NWC_PIN(offsetof(nwc_tensor_view, ndim) == 28);
NWC_PIN(offsetof(nwc_tensor_view, shape) == 32);
NWC_PIN(offsetof(nwc_tensor_view, strides) == 40);

NWC_PIN(sizeof(nwc_value) == 16);
NWC_PIN(offsetof(nwc_value, count) == 4);
NWC_PIN(offsetof(nwc_value, u) == 8);
NWC_PIN(sizeof(nwc_option_spec) == 80);
NWC_PIN(offsetof(nwc_option_spec, type) == 8);
NWC_PIN(offsetof(nwc_option_spec, flags) == 12);
NWC_PIN(offsetof(nwc_option_spec, default_value) == 16);
NWC_PIN(offsetof(nwc_option_spec, min) == 32);
NWC_PIN(offsetof(nwc_option_spec, max) == 40);
NWC_PIN(offsetof(nwc_option_spec, choices) == 48);
NWC_PIN(offsetof(nwc_option_spec, choice_count) == 56);
NWC_PIN(offsetof(nwc_option_spec, unit) == 64);
NWC_PIN(offsetof(nwc_option_spec, doc) == 72);
NWC_PIN(sizeof(nwc_option) == 24);
NWC_PIN(offsetof(nwc_option, value) == 8);
NWC_PIN(sizeof(nwc_options) == 16);
NWC_PIN(offsetof(nwc_options, items) == 8);

NWC_PIN(sizeof(nwc_host) == 48);
NWC_PIN(offsetof(nwc_host, host_data) == 8);
NWC_PIN(offsetof(nwc_host, log) == 16);
NWC_PIN(offsetof(nwc_host, progress) == 24);
NWC_PIN(offsetof(nwc_host, alloc) == 32);
NWC_PIN(offsetof(nwc_host, free) == 40);
NWC_PIN(sizeof(nwc_sink) == 16);
NWC_PIN(sizeof(nwc_bytes) == 16);

NWC_PIN(sizeof(nwc_plugin_descriptor) == 64);
NWC_PIN(offsetof(nwc_plugin_descriptor, kind) == 8);
NWC_PIN(offsetof(nwc_plugin_descriptor, flags) == 12);
NWC_PIN(offsetof(nwc_plugin_descriptor, id) == 16);
NWC_PIN(offsetof(nwc_plugin_descriptor, version) == 24);
NWC_PIN(offsetof(nwc_plugin_descriptor, stream_version) == 32);
NWC_PIN(offsetof(nwc_plugin_descriptor, option_count) == 36);
NWC_PIN(offsetof(nwc_plugin_descriptor, name) == 40);
NWC_PIN(offsetof(nwc_plugin_descriptor, description) == 48);
NWC_PIN(offsetof(nwc_plugin_descriptor, options) == 56);
NWC_PIN(sizeof(nwc_plugin_vtable) == 48);
NWC_PIN(offsetof(nwc_plugin_vtable, create) == 8);
NWC_PIN(offsetof(nwc_plugin_vtable, destroy) == 16);
NWC_PIN(offsetof(nwc_plugin_vtable, get_options) == 24);
NWC_PIN(offsetof(nwc_plugin_vtable, get_interface) == 32);
NWC_PIN(offsetof(nwc_plugin_vtable, last_error) == 40);
NWC_PIN(sizeof(nwc_module) == 48);
NWC_PIN(offsetof(nwc_module, init) == 8);
NWC_PIN(offsetof(nwc_module, deinit) == 16);
NWC_PIN(offsetof(nwc_module, plugin_count) == 24);
NWC_PIN(offsetof(nwc_module, descriptor) == 32);
NWC_PIN(offsetof(nwc_module, vtable) == 40);

NWC_PIN(sizeof(nwc_block_info) == 72);
NWC_PIN(offsetof(nwc_block_info, tensor_name) == 8);
NWC_PIN(offsetof(nwc_block_info, rows) == 16);
NWC_PIN(offsetof(nwc_block_info, cols) == 24);
NWC_PIN(offsetof(nwc_block_info, col_begin) == 32);
NWC_PIN(offsetof(nwc_block_info, col_end) == 40);
NWC_PIN(offsetof(nwc_block_info, row_scales) == 48);
NWC_PIN(offsetof(nwc_block_info, chunk_levels) == 56);
NWC_PIN(offsetof(nwc_block_info, importance) == 64);
NWC_PIN(sizeof(nwc_cdf_model) == 64);
NWC_PIN(offsetof(nwc_cdf_model, cdfs) == 16);
NWC_PIN(offsetof(nwc_cdf_model, lengths) == 24);
NWC_PIN(offsetof(nwc_cdf_model, offsets) == 32);
NWC_PIN(offsetof(nwc_cdf_model, level_count) == 40);
NWC_PIN(offsetof(nwc_cdf_model, default_level) == 44);
NWC_PIN(offsetof(nwc_cdf_model, row_length) == 48);
NWC_PIN(offsetof(nwc_cdf_model, row_levels) == 56);
NWC_PIN(sizeof(nwc_chunk_geometry) == 16);
NWC_PIN(sizeof(nwc_chunker_interface) == 48);
NWC_PIN(offsetof(nwc_chunker_interface, plan) == 8);
NWC_PIN(offsetof(nwc_chunker_interface, split) == 16);
NWC_PIN(offsetof(nwc_chunker_interface, merge) == 24);
NWC_PIN(offsetof(nwc_chunker_interface, row_scales) == 32);
NWC_PIN(offsetof(nwc_chunker_interface, chunk_columns) == 40);
NWC_PIN(sizeof(nwc_transform_interface) == 40);
NWC_PIN(offsetof(nwc_transform_interface, probability_model) == 32);
NWC_PIN(sizeof(nwc_quantizer_interface) == 40);
NWC_PIN(offsetof(nwc_quantizer_interface, export_native) == 32); /* since 1.5 */
NWC_PIN(sizeof(nwc_native_layout) == 56);                        /* since 1.5 */
NWC_PIN(offsetof(nwc_native_layout, format) == 8);
NWC_PIN(offsetof(nwc_native_layout, type) == 24);
NWC_PIN(offsetof(nwc_native_layout, values_per_block) == 40);
NWC_PIN(offsetof(nwc_native_layout, bytes_per_block) == 48);
NWC_PIN(offsetof(nwc_quantizer_interface, dequantize) == 16);
NWC_PIN(offsetof(nwc_quantizer_interface, quantize_fitted) == 24); /* since 1.1 */
NWC_PIN(sizeof(nwc_entropy_interface) == 24);
NWC_PIN(offsetof(nwc_entropy_interface, decode) == 16);
NWC_PIN(sizeof(nwc_compensator_interface) == 24);
NWC_PIN(offsetof(nwc_compensator_interface, compensate) == 16);
NWC_PIN(sizeof(nwc_block_codec) == 48);
NWC_PIN(offsetof(nwc_block_codec, encode_ex) == 40); /* since 1.1 */
NWC_PIN(offsetof(nwc_block_codec, ctx) == 8);
NWC_PIN(offsetof(nwc_block_codec, rows) == 16);
NWC_PIN(offsetof(nwc_block_codec, encode) == 32);
NWC_PIN(sizeof(nwc_rotation_interface) == 40); /* since 1.4 */
NWC_PIN(offsetof(nwc_rotation_interface, plan) == 8);
NWC_PIN(offsetof(nwc_rotation_interface, forward) == 16);
NWC_PIN(offsetof(nwc_rotation_interface, forward_hessian) == 24);
NWC_PIN(offsetof(nwc_rotation_interface, inverse) == 32);
#endif

/* Values are part of the ABI too: append-only. */
NWC_PIN(NWC_ABI_VERSION == 0x00010007u);
NWC_PIN(NWC_KIND_CHUNKER == 1 && NWC_KIND_TRANSFORM == 2 && NWC_KIND_ENTROPY_CODER == 3 &&
        NWC_KIND_COMPENSATOR == 4 && NWC_KIND_QUANTIZER == 5 && NWC_KIND_ROTATION == 6);
NWC_PIN(NWC_DTYPE_F32 == 1 && NWC_DTYPE_F16 == 2 && NWC_DTYPE_BF16 == 3 && NWC_DTYPE_I32 == 8);
NWC_PIN(NWC_ROW_SCALES_LOG8 == 64); /* since 1.6 */
NWC_PIN(NWC_OPT_BOOL == 1 && NWC_OPT_PATH == 8);
NWC_PIN(NWC_E_INVALID_ARG == -1 && NWC_E_CORRUPT_STREAM == -5 && NWC_E_IO == -11);
