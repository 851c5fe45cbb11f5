// ggml_mixture.hpp — llama-quantize's per-tensor type choice, as pure functions.
//
// Transcribed from llama.cpp's src/llama-quant.cpp (tensor_type_fallback, llama_tensor_get_type,
// llama_tensor_get_type_impl, tensor_allows_quantization) for the mixtures listed in Mixture, with
// llama-quantize's defaults (no --pure, no --output-tensor-type / --token-embedding-type, no
// --tensor-type overrides). The tests compare these choices with llama_model_quantize() itself.
// Tensor names are GGUF names (blk.N.attn_v.weight); gguf_tensor_name() maps nwc's Hugging
// Face-style names onto them.
#pragma once

#include "ggml_types.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nwc::ggml {

// llama.cpp's tensor_type_fallback: the type llama-quantize stores a tensor in when its rows have
// `cols` columns and `type` needs cols % block == 0. Returns `type` itself when the rows fit;
// k-quants fall back to q5_0 (q4_K), q5_1 (q5_K), q8_0 (q6_K), q4_0 (q2_K, q3_K) and iq4_nl
// (iq4_xs), and every type to f16 when cols % 32 != 0 as well (q4_0, q4_1, q5_0, q5_1, q8_0 and
// iq4_nl directly). This is the behaviour of the llama.cpp build the tests run (node-llama-cpp
// 3.22.1, llama.cpp commit 0ad4a86; checked with llama_model_quantize); the llama-quant.cpp of
// commit 007dbbf throws "no tensor type fallback" for the 32-weight types instead.
Type llama_fallback_type(Type type, int64_t cols);

// The llama-quantize file types (llama_ftype) whose tensor rules are transcribed.
enum class Mixture { Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_XS };
// "Q4_K_M" etc. (llama-quantize's names), case-sensitive.
std::optional<Mixture> mixture_from_name(std::string_view name);
const char *mixture_name(Mixture m);
// llama_ftype value (llama.h) and default tensor type (llama_ftype_get_default_type).
int mixture_ftype(Mixture m);
Type mixture_default_type(Mixture m);

// What llama-quantize knows about the model when it chooses types.
struct MixtureModel {
  int n_layers = 0;        // hparams.n_layer: number of blocks (the ffn_down count, n_ffn_down)
  int n_attention_wv = -1; // attn_v-like tensors (attn_v, attn_qkv, attn_kv_b); -1: n_layers
  int n_head = 1;          // n_gqa() = n_head / n_head_kv
  int n_head_kv = 1;
  int n_expert = 0;
  bool tied_embeddings = false; // no output.weight: token_embd.weight is quantized like the output
  bool has_imatrix = false;
  bool falcon = false;    // LLM_ARCH_FALCON
  bool llama_70b = false; // LLM_TYPE_70B (llama, 80 layers, GQA)
};

struct MixtureChoice {
  enum class Kind {
    Quantized, // stored as `type`
    Kept,      // not quantized by llama-quantize (norms, 1-D tensors, names not ending in "weight")
  };
  Kind kind = Kind::Kept;
  Type type = Type::F16; // for Quantized
};

// The type llama-quantize gives tensor `name` (GGUF name) of a model quantized with `mixture`.
// `index` is the tensor's position among the tensors of its kind as llama-quantize counts them
// (i_attention_wv for attn_v-like tensors, i_ffn_down / i_ffn_gate / i_ffn_up for the FFN ones):
// in a dense model, whose blocks each have one of each, it is the block index N of blk.N.
// `cols` is the row length (ne[0]); `n_dims` the tensor's number of dimensions.
MixtureChoice ggml_mixture_type(Mixture mixture, std::string_view name, int index, int64_t cols,
                                int n_dims, const MixtureModel &model);

// GGUF name of a Llama-family tensor named like Hugging Face / nwc ("model.layers.3.mlp.down_proj
// .weight" -> "blk.3.ffn_down.weight", "model.embed_tokens.weight" -> "token_embd.weight",
// "lm_head.weight" -> "output.weight", "model.norm.weight" -> "output_norm.weight"); names it does
// not know are returned unchanged. *layer receives N of model.layers.N (-1 otherwise).
std::string gguf_tensor_name(std::string_view hf_name, int *layer = nullptr);

} // namespace nwc::ggml
