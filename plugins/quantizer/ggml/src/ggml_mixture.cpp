// ggml_mixture.cpp — llama-quantize's type rules (src/llama-quant.cpp), transcribed; see the
// header.
#include "ggml_mixture.hpp"

#include <array>
#include <cstdio>

namespace nwc::ggml {

Type llama_fallback_type(Type type, int64_t cols) {
  if (cols % traits(type).block == 0) return type;
  Type fb = type; // the 32-weight types have no other type to go to
  switch (type) { // tensor_type_fallback
  case Type::IQ4_XS:
    fb = Type::IQ4_NL;
    break;
  case Type::Q2_K:
  case Type::Q3_K:
    fb = Type::Q4_0;
    break;
  case Type::Q4_K:
    fb = Type::Q5_0;
    break;
  case Type::Q5_K:
    fb = Type::Q5_1;
    break;
  case Type::Q6_K:
    fb = Type::Q8_0;
    break;
  default:
    break;
  }
  if (cols % traits(fb).block != 0) fb = Type::F16; // "must use F16 due to unusual shape"
  return fb;
}

namespace {

struct MixtureInfo {
  Mixture mixture;
  const char *name;
  int ftype; // llama_ftype
  Type type; // llama_ftype_get_default_type
};
constexpr std::array<MixtureInfo, 9> kMixtures = {{
    {Mixture::Q3_K_S, "Q3_K_S", 11, Type::Q3_K},
    {Mixture::Q3_K_M, "Q3_K_M", 12, Type::Q3_K},
    {Mixture::Q3_K_L, "Q3_K_L", 13, Type::Q3_K},
    {Mixture::Q4_K_S, "Q4_K_S", 14, Type::Q4_K},
    {Mixture::Q4_K_M, "Q4_K_M", 15, Type::Q4_K},
    {Mixture::Q5_K_S, "Q5_K_S", 16, Type::Q5_K},
    {Mixture::Q5_K_M, "Q5_K_M", 17, Type::Q5_K},
    {Mixture::Q6_K, "Q6_K", 18, Type::Q6_K},
    {Mixture::IQ4_XS, "IQ4_XS", 30, Type::IQ4_XS},
}};

const MixtureInfo &info(Mixture m) {
  for (const auto &i : kMixtures)
    if (i.mixture == m) return i;
  return kMixtures[0];
}

enum class Category {
  TokenEmbd,
  AttnQ,
  AttnV,
  AttnK,
  AttnQkv,
  AttnKvB,
  AttnOut,
  Up,
  Gate,
  Down,
  Output,
  Other
};

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

Category category(std::string_view name) { // tensor_get_category
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight")
    return Category::TokenEmbd;
  if (contains(name, "attn_qkv.weight")) return Category::AttnQkv;
  if (contains(name, "attn_kv_b.weight")) return Category::AttnKvB;
  if (contains(name, "attn_v.weight")) return Category::AttnV;
  if (contains(name, "attn_k.weight")) return Category::AttnK;
  if (contains(name, "attn_q.weight")) return Category::AttnQ;
  if (contains(name, "attn_output.weight")) return Category::AttnOut;
  if (contains(name, "ffn_up")) return Category::Up;
  if (contains(name, "ffn_gate")) return Category::Gate;
  if (contains(name, "ffn_down")) return Category::Down;
  return Category::Other;
}

// The name-based part of tensor_allows_quantization for the tensors of Llama-family models (the
// other exclusions name tensors of other architectures).
bool allows_quantization(std::string_view name, int n_dims) {
  if (n_dims < 2) return false;
  const bool ends_weight = name.size() >= 6 && name.substr(name.size() - 6) == "weight";
  static constexpr std::string_view kExcluded[] = {"_norm.weight",
                                                   "ffn_gate_inp.weight",
                                                   "ffn_gate_tid2eid.weight",
                                                   "altup",
                                                   "laurel",
                                                   "per_layer_model_proj",
                                                   "ssm_conv1d",
                                                   "shortconv.conv.weight",
                                                   "indexer.k_proj.weight",
                                                   "indexer.q_proj.weight",
                                                   "attn_rel_b.weight",
                                                   ".position_embd",
                                                   ".rel_pos",
                                                   ".patch_embd",
                                                   ".patch_merger"};
  if (!ends_weight) return false;
  for (std::string_view e : kExcluded)
    if (contains(name, e)) return false;
  return name != "position_embd.weight" && name != "token_types.weight";
}

bool use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

} // namespace

std::optional<Mixture> mixture_from_name(std::string_view name) {
  for (const auto &i : kMixtures)
    if (name == i.name) return i.mixture;
  return std::nullopt;
}
const char *mixture_name(Mixture m) {
  return info(m).name;
}
int mixture_ftype(Mixture m) {
  return info(m).ftype;
}
Type mixture_default_type(Mixture m) {
  return info(m).type;
}

MixtureChoice ggml_mixture_type(Mixture mix, std::string_view name, int index, int64_t cols,
                                int n_dims, const MixtureModel &model) {
  MixtureChoice out;
  if (!allows_quantization(name, n_dims)) return out; // Kept
  using M = Mixture;
  const Category cat = category(name);
  const int n_gqa = model.n_head_kv > 0 ? model.n_head / model.n_head_kv : 0;
  const int n_wv = model.n_attention_wv >= 0 ? model.n_attention_wv : model.n_layers;
  const bool attn_v_like =
      cat == Category::AttnV || cat == Category::AttnQkv || cat == Category::AttnKvB;
  Type t = mixture_default_type(mix);

  // llama_tensor_get_type_impl, the branches these mixtures reach
  if (cat == Category::Output || (model.tied_embeddings && cat == Category::TokenEmbd)) {
    if (model.falcon || cols % traits(t).block != 0)
      t = Type::Q8_0;
    else if (t != Type::Q8_0)
      t = Type::Q6_K;
  } else if (cat == Category::TokenEmbd) {
    // untied token embeddings keep the default type for these mixtures
  } else if (attn_v_like) {
    const int i = index;
    if (mix == M::Q3_K_M)
      t = i < 2 ? Type::Q5_K : Type::Q4_K;
    else if (mix == M::Q3_K_L)
      t = Type::Q5_K;
    else if (mix == M::IQ4_XS && n_gqa >= 4)
      t = Type::Q5_K;
    else if ((mix == M::Q4_K_M || mix == M::Q5_K_M) && use_more_bits(i, n_wv))
      t = Type::Q6_K;
    else if (mix == M::Q4_K_S && i < 4)
      t = Type::Q5_K;
    if (model.llama_70b && (t == Type::Q3_K || t == Type::Q4_K)) t = Type::Q5_K;
    if (model.n_expert == 8) t = Type::Q8_0;
  } else if (cat == Category::AttnK) {
    if (model.n_expert == 8) t = Type::Q8_0;
  } else if (cat == Category::AttnQ) {
    // only the IQ3 mixtures change attn_q
  } else if (cat == Category::Down) {
    int i_layer = index;
    const int n_layer = model.n_layers;
    if (model.n_expert > 1) { // experts: the layer comes from the name
      int parsed = -1;
      const std::string s(name);
      if (std::sscanf(s.c_str(), "blk.%d.", &parsed) == 1) i_layer = parsed;
    }
    if (mix == M::Q3_K_M) {
      t = i_layer < n_layer / 16                             ? Type::Q5_K
          : !model.falcon || use_more_bits(i_layer, n_layer) ? Type::Q4_K
                                                             : Type::Q3_K;
    } else if (mix == M::Q3_K_L) {
      t = model.falcon ? Type::Q4_K : Type::Q5_K;
    } else if (mix == M::Q4_K_M) {
      if (model.falcon)
        t = i_layer < n_layer / 16            ? Type::Q6_K
            : use_more_bits(i_layer, n_layer) ? Type::Q5_K
                                              : Type::Q4_K;
      else if (use_more_bits(i_layer, n_layer))
        t = Type::Q6_K;
    } else if (i_layer < n_layer / 8 && mix == M::IQ4_XS && !model.has_imatrix) {
      t = Type::Q5_K;
    } else if (mix == M::Q5_K_M && use_more_bits(i_layer, n_layer)) {
      t = Type::Q6_K;
    } else if (mix == M::Q4_K_S && !model.falcon && i_layer < n_layer / 8) {
      t = Type::Q5_K;
    }
  } else if (cat == Category::AttnOut) {
    if (!model.falcon) {
      if (model.n_expert == 8) {
        if (mix == M::Q3_K_S || mix == M::Q3_K_M || mix == M::Q4_K_S || mix == M::Q4_K_M ||
            mix == M::IQ4_XS)
          t = Type::Q5_K;
      } else if (mix == M::Q3_K_M) {
        t = Type::Q4_K;
      } else if (mix == M::Q3_K_L) {
        t = Type::Q5_K;
      }
    } else if (mix == M::Q3_K_L) {
      t = Type::Q4_K;
    }
  } else if (cat == Category::AttnQkv) {
    // (unreachable: attn_qkv is attn_v-like above, as in llama.cpp)
  }

  // tensor_type_fallback, always applied
  out.kind = MixtureChoice::Kind::Quantized;
  out.type = llama_fallback_type(t, cols);
  return out;
}

std::string gguf_tensor_name(std::string_view hf, int *layer) {
  if (layer) *layer = -1;
  if (hf == "model.embed_tokens.weight" || hf == "tok_embeddings.weight")
    return "token_embd.weight";
  if (hf == "lm_head.weight" || hf == "output.weight") return "output.weight";
  if (hf == "model.norm.weight" || hf == "norm.weight") return "output_norm.weight";
  constexpr std::string_view prefix = "model.layers.";
  if (hf.substr(0, prefix.size()) != prefix) return std::string(hf);
  std::string_view rest = hf.substr(prefix.size());
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::string(hf);
  int n = 0;
  for (char c : rest.substr(0, dot)) {
    if (c < '0' || c > '9') return std::string(hf);
    n = n * 10 + (c - '0');
  }
  const std::string_view tail = rest.substr(dot + 1);
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
  };
  for (const auto &[from, to] : kMap)
    if (tail == from) {
      if (layer) *layer = n;
      return "blk." + std::to_string(n) + "." + std::string(to);
    }
  return std::string(hf);
}

} // namespace nwc::ggml
