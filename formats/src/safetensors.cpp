// safetensors.cpp — safetensors reader (file, directory, sharded) and streaming writer.
//
// Layout: u64 little-endian header length N, N bytes of JSON, then the data area. Every tensor's
// entry {"dtype", "shape", "data_offsets": [begin, end]} is relative to the data area.
#include "nwc/formats/safetensors.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"

#include <algorithm>
#include <cstring>
#include <set>

namespace nwc {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxDims = 8;
constexpr uint64_t kMaxSideFile = 64ull << 20; // config.json, index.json

bool mul_ok(uint64_t a, uint64_t b, uint64_t &r) {
  return !__builtin_mul_overflow(a, b, &r);
}

// dtype names the format defines that nwc does not read, for a clearer error.
bool known_unsupported_dtype(const std::string &s) {
  static const char *names[] = {"F64",     "I16",     "U16",     "U32",         "U64",
                                "BOOL",    "F8_E4M3", "F8_E5M2", "F8_E8M0",     "F4",
                                "F6_E2M3", "F6_E3M2", "C64",     "F8_E4M3FNUZ", "F8_E5M2FNUZ"};
  for (const char *n : names)
    if (s == n) return true;
  return false;
}

json parse_json_file(const fs::path &path, const char *what) {
  MappedFile f(path);
  if (f.size() > kMaxSideFile)
    fail(NWC_E_CORRUPT_STREAM, path.string() + ": " + what + " is " + std::to_string(f.size()) +
                                   " bytes (expected at most " + std::to_string(kMaxSideFile) +
                                   ")");
  const char *b = reinterpret_cast<const char *>(f.data());
  json j = json::parse(b, b + f.size(), nullptr, false);
  if (j.is_discarded())
    fail(NWC_E_CORRUPT_STREAM, path.string() + ": " + what + " is not valid JSON");
  if (!j.is_object())
    fail(NWC_E_CORRUPT_STREAM, path.string() + ": " + what + " must be a JSON object");
  return j;
}

uint64_t as_u64(const json &v, bool &ok) {
  ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  return ok ? v.get<uint64_t>() : 0;
}

// One parsed shard: tensors (in data order) whose loaders read from the shared mapping.
std::shared_ptr<MappedFile> read_file(const fs::path &path, std::vector<ModelTensor> &tensors_out,
                                      std::map<std::string, std::string> &metadata) {
  auto file = std::make_shared<MappedFile>(path);
  const std::string p = path.string();
  const uint64_t size = file->size();
  if (size < 8)
    fail(NWC_E_CORRUPT_STREAM, p + ": not a safetensors file (" + std::to_string(size) +
                                   " bytes, too short for the 8-byte header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file->data()[i];
  if (n > kSafetensorsMaxHeader)
    fail(NWC_E_CORRUPT_STREAM, p + ": not a safetensors file (header length " + std::to_string(n) +
                                   " exceeds the limit of " +
                                   std::to_string(kSafetensorsMaxHeader) + " bytes)");
  if (n > size - 8)
    fail(NWC_E_CORRUPT_STREAM, p + ": not a safetensors file, or truncated (header length " +
                                   std::to_string(n) + " is larger than the file: " +
                                   std::to_string(size - 8) + " bytes after the length field)");
  const char *hb = reinterpret_cast<const char *>(file->data() + 8);
  if (n < 2 || hb[0] != '{')
    fail(NWC_E_CORRUPT_STREAM,
         p + ": not a safetensors file (the header does not start with a JSON object)");
  // JSON objects keep the last of duplicate keys silently: note a tensor listed twice while
  // parsing.
  std::set<std::string> keys;
  std::string duplicate;
  const json::parser_callback_t note_keys = [&](int depth, json::parse_event_t event,
                                                json &parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !keys.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header = json::parse(hb, hb + n, note_keys, false);
  if (header.is_discarded())
    fail(NWC_E_CORRUPT_STREAM, p + ": safetensors header is not valid JSON");
  if (!duplicate.empty())
    fail(NWC_E_CORRUPT_STREAM, p + ": safetensors header lists '" + duplicate + "' twice");
  if (!header.is_object())
    fail(NWC_E_CORRUPT_STREAM, p + ": safetensors header must be a JSON object");

  const uint64_t data_size = size - 8 - n;
  const uint8_t *data = file->data() + 8 + n;
  struct Entry {
    uint64_t begin, end;
    ModelTensor t;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string &name = it.key();
    const json &v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        fail(NWC_E_CORRUPT_STREAM, p + ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(NWC_E_CORRUPT_STREAM, p + ": __metadata__ value '" + m.key() +
                                         "' must be a string, got " + m.value().type_name());
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = p + ": tensor '" + name + "'";
    if (!v.is_object()) fail(NWC_E_CORRUPT_STREAM, where + " must be a JSON object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string())
      fail(NWC_E_CORRUPT_STREAM, where + " has no string 'dtype'");
    if (sh == v.end() || !sh->is_array())
      fail(NWC_E_CORRUPT_STREAM, where + " has no array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      fail(NWC_E_CORRUPT_STREAM, where + " needs 'data_offsets' [begin, end]");
    const std::string dname = dt->get<std::string>();
    DType dtype;
    if (!dtype_from_name(dname, dtype))
      fail(NWC_E_UNSUPPORTED_DTYPE,
           where + " has dtype '" + dname + "'" +
               (known_unsupported_dtype(dname) ? ", which nwc does not read" : " (unknown)") +
               " (expected F32, F16, BF16, I8, U8, I32 or I64)");
    if (sh->size() > kMaxDims)
      fail(NWC_E_CORRUPT_STREAM, where + " has " + std::to_string(sh->size()) +
                                     " dimensions (at most " + std::to_string(kMaxDims) + ")");
    ModelTensor mt;
    uint64_t numel = 1;
    for (const json &d : *sh) {
      bool ok;
      const uint64_t dv = as_u64(d, ok);
      if (!ok || dv > static_cast<uint64_t>(INT64_MAX))
        fail(NWC_E_CORRUPT_STREAM,
             where + " shape " + sh->dump() + " must hold non-negative integers");
      if (!mul_ok(numel, dv, numel))
        fail(NWC_E_CORRUPT_STREAM, where + " shape " + sh->dump() + " overflows");
      mt.info.shape.push_back(static_cast<int64_t>(dv));
    }
    bool ok_b, ok_e;
    const uint64_t b = as_u64((*off)[0], ok_b), e = as_u64((*off)[1], ok_e);
    if (!ok_b || !ok_e)
      fail(NWC_E_CORRUPT_STREAM,
           where + " data_offsets " + off->dump() + " must be non-negative integers");
    if (b > e || e > data_size)
      fail(NWC_E_CORRUPT_STREAM, where + " data [" + std::to_string(b) + ", " + std::to_string(e) +
                                     ") lies outside the data area (size " +
                                     std::to_string(data_size) + ")");
    uint64_t bytes;
    if (!mul_ok(numel, dtype_size(dtype), bytes) || bytes != e - b)
      fail(NWC_E_CORRUPT_STREAM, where + " has " + std::to_string(e - b) + " bytes of data, " +
                                     "expected " + std::to_string(numel) + " elements x " +
                                     std::to_string(dtype_size(dtype)) + " bytes (" +
                                     std::string(dtype_name(dtype)) + ")");
    mt.info.name = name;
    mt.info.dtype = dtype;
    const uint8_t *src = data + b;
    mt.load = [file, src, dtype, numel]() {
      std::vector<float> out(numel);
      to_float(dtype, src, numel, out.data());
      file->release(src, numel * dtype_size(dtype)); // bounded memory over a whole checkpoint
      return out;
    };
    entries.push_back({b, e, std::move(mt)});
  }
  // File order; also makes the overlap check a single pass.
  std::sort(entries.begin(), entries.end(), [](const Entry &x, const Entry &y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  for (size_t i = 1; i < entries.size(); ++i) {
    const Entry &prev = entries[i - 1], &cur = entries[i];
    if (cur.begin < prev.end)
      fail(NWC_E_CORRUPT_STREAM,
           p + ": tensors '" + prev.t.info.name + "' [" + std::to_string(prev.begin) + ", " +
               std::to_string(prev.end) + ") and '" + cur.t.info.name + "' [" +
               std::to_string(cur.begin) + ", " + std::to_string(cur.end) + ") overlap");
  }
  for (auto &e : entries) tensors_out.push_back(std::move(e.t));
  return file;
}

std::vector<fs::path> shards_from_index(const fs::path &dir, const fs::path &index,
                                        std::map<std::string, std::string> &expected) {
  const json j = parse_json_file(index, "index");
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object())
    fail(NWC_E_CORRUPT_STREAM, index.string() + ": no 'weight_map' object");
  std::set<std::string> files;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      fail(NWC_E_CORRUPT_STREAM,
           index.string() + ": weight_map entry '" + it.key() + "' must be a file name");
    const std::string f = it.value().get<std::string>();
    // Shards are plain names in the same directory: no path components.
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      fail(NWC_E_CORRUPT_STREAM, index.string() + ": weight_map entry '" + it.key() + "' names '" +
                                     f + "' (expected a file name in " + dir.string() + ")");
    if (!fs::is_regular_file(dir / f))
      fail(NWC_E_IO, index.string() + ": shard '" + f + "' (for tensor '" + it.key() +
                         "') does not exist in " + dir.string());
    files.insert(f);
    expected[it.key()] = f;
  }
  std::vector<fs::path> out;
  for (const auto &f : files) out.push_back(dir / f);
  return out;
}

} // namespace

// ---- HF config.json ----

namespace {

// The HF model types whose decoder nwc runs, with their transformers class.
struct HfModelType {
  const char *model_type, *architecture;
};
constexpr HfModelType kHfModelTypes[] = {{"llama", "LlamaForCausalLM"},
                                         {"mistral", "MistralForCausalLM"},
                                         {"qwen2", "Qwen2ForCausalLM"},
                                         {"qwen3", "Qwen3ForCausalLM"}};

const HfModelType *hf_model_type(const std::string &type) {
  for (const auto &t : kHfModelTypes)
    if (type == t.model_type) return &t;
  return nullptr;
}

std::string hf_model_type_list() {
  std::string out;
  for (const auto &t : kHfModelTypes) out += (out.empty() ? "" : ", ") + std::string(t.model_type);
  return out;
}

} // namespace

Architecture read_hf_config(const fs::path &path) {
  const json c = parse_json_file(path, "config.json");
  const std::string p = path.string();
  Architecture a;
  auto get_int = [&](const json &obj, const std::string &key, int64_t &out) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return;
    if (!it->is_number_integer() || it->get<int64_t>() < 0)
      fail(NWC_E_CORRUPT_STREAM,
           p + ": key '" + key + "' must be a non-negative integer, got " + it->dump());
    out = it->get<int64_t>();
  };
  auto get_double = [&](const json &obj, const std::string &key, double &out) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return;
    if (!it->is_number())
      fail(NWC_E_CORRUPT_STREAM, p + ": key '" + key + "' must be a number, got " + it->dump());
    out = it->get<double>();
  };
  auto get_bool = [&](const char *key, bool &out) {
    auto it = c.find(key);
    if (it == c.end() || it->is_null()) return;
    if (!it->is_boolean()) fail(NWC_E_CORRUPT_STREAM, p + ": key '" + key + "' must be a boolean");
    out = it->get<bool>();
  };
  auto get_string = [&](const json &obj, const std::string &key, std::string &out) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return false;
    if (!it->is_string()) fail(NWC_E_CORRUPT_STREAM, p + ": key '" + key + "' must be a string");
    out = it->get<std::string>();
    return true;
  };
  // What nwc cannot run is refused with one line naming the config.json key.
  if (get_string(c, "model_type", a.family) && !hf_model_type(a.family))
    fail(NWC_E_INVALID_ARG, p + ": model_type '" + a.family + "' is not supported (expected " +
                                hf_model_type_list() + ")");
  const std::string type = a.family.empty() ? "llama" : a.family;
  if (std::string act; get_string(c, "hidden_act", act) && act != "silu" && act != "swish")
    fail(NWC_E_INVALID_ARG,
         p + ": hidden_act '" + act + "' is not supported (expected silu, SwiGLU's gate)");
  get_int(c, "hidden_size", a.dim);
  get_int(c, "intermediate_size", a.hidden_dim);
  get_int(c, "num_hidden_layers", a.n_layers);
  get_int(c, "num_attention_heads", a.n_heads);
  a.n_kv_heads = a.n_heads; // HF default when num_key_value_heads is absent
  get_int(c, "num_key_value_heads", a.n_kv_heads);
  get_int(c, "vocab_size", a.vocab_size);
  get_int(c, "max_position_embeddings", a.max_seq_len);
  get_double(c, "rms_norm_eps", a.norm_eps);
  get_double(c, "rope_theta", a.rope_theta);
  a.rope_style = "rotate_half";
  if (auto it = c.find("nwc_rope_style"); it != c.end()) {
    if (!it->is_string()) fail(NWC_E_CORRUPT_STREAM, p + ": key 'nwc_rope_style' must be a string");
    a.rope_style = it->get<std::string>();
  }
  if (auto it = c.find("tie_word_embeddings"); it != c.end()) {
    if (!it->is_boolean())
      fail(NWC_E_CORRUPT_STREAM, p + ": key 'tie_word_embeddings' must be a boolean");
    a.tied_embeddings = it->get<bool>();
  }

  // The head size: transformers' getattr(config, "head_dim", hidden_size // num_attention_heads);
  // Qwen3Config's own default is 128.
  if (type == "qwen3") a.head_dim = 128;
  get_int(c, "head_dim", a.head_dim);
  // Biases as each model's attention and MLP modules create them.
  if (type == "llama") {
    get_bool("attention_bias", a.attention_bias); // q, k, v and o
    a.attention_out_bias = a.attention_bias;
    get_bool("mlp_bias", a.mlp_bias);
  } else if (type == "qwen2") {
    a.attention_bias = true; // Qwen2Attention: q, k and v always, never o
  } else if (type == "qwen3") {
    get_bool("attention_bias", a.attention_bias);
    a.attention_out_bias = a.attention_bias;
    a.qk_norm = true; // Qwen3Attention's q_norm and k_norm
  }
  // Sliding-window attention: Mistral's sliding_window (MistralConfig's default 4096 when the key
  // is absent, none when null); Qwen's use_sliding_window (with max_window_layers) is not run.
  if (type == "mistral") {
    a.sliding_window = 4096;
    if (auto it = c.find("sliding_window"); it != c.end() && it->is_null()) a.sliding_window = 0;
    get_int(c, "sliding_window", a.sliding_window);
  } else if (type == "qwen2" || type == "qwen3") {
    bool sliding = false;
    get_bool("use_sliding_window", sliding);
    if (sliding)
      fail(NWC_E_INVALID_ARG,
           p + ": use_sliding_window true is not supported (Qwen's per-layer sliding window)");
  }
  // RoPE: the default frequencies or Llama 3's scaling. transformers 5 keeps rope_theta and the
  // type in rope_parameters; earlier versions in rope_theta and rope_scaling.
  double partial = 1.0;
  get_double(c, "partial_rotary_factor", partial);
  if (partial != 1.0)
    fail(NWC_E_INVALID_ARG, p + ": partial_rotary_factor " + std::to_string(partial) +
                                " is not supported (RoPE over whole heads only)");
  for (const char *key : {"rope_scaling", "rope_parameters"}) {
    auto it = c.find(key);
    if (it == c.end() || it->is_null()) continue;
    const std::string k = key;
    if (!it->is_object()) fail(NWC_E_CORRUPT_STREAM, p + ": key '" + k + "' must be an object");
    const json &r = *it;
    get_double(r, "rope_theta", a.rope_theta); // rope_parameters only
    std::string rope_type = "default";
    if (!get_string(r, "rope_type", rope_type)) get_string(r, "type", rope_type);
    if (rope_type == "default") continue;
    if (rope_type != "llama3")
      fail(NWC_E_INVALID_ARG, p + ": " + k + ".rope_type '" + rope_type +
                                  "' is not supported (expected llama3, or default)");
    RopeScaling &s = a.rope_scaling;
    s.type = "llama3";
    for (const char *f :
         {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!r.contains(f))
        fail(NWC_E_CORRUPT_STREAM, p + ": " + k + "." + f + " is missing (rope_type llama3)");
    get_double(r, "factor", s.factor);
    get_double(r, "low_freq_factor", s.low_freq_factor);
    get_double(r, "high_freq_factor", s.high_freq_factor);
    get_int(r, "original_max_position_embeddings", s.original_max_position_embeddings);
    if (!(s.factor > 0) || !(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0) ||
        s.original_max_position_embeddings <= 0)
      fail(NWC_E_CORRUPT_STREAM, p + ": " + k +
                                     " (llama3) needs factor > 0, 0 < low_freq_factor < "
                                     "high_freq_factor and original_max_position_embeddings > 0");
  }
  return a;
}

json hf_llama_config(const Architecture &a, DType dtype) {
  const std::string type = a.family.empty() ? "llama" : a.family;
  const HfModelType *t = hf_model_type(type);
  if (!t)
    fail(NWC_E_INVALID_ARG, "HF config.json: model_type '" + type + "' is not one nwc writes (" +
                                hf_model_type_list() + ")");
  const std::string what = "HF config.json (" + std::string(t->architecture) + ")";
  if (a.dim <= 0 || a.hidden_dim <= 0 || a.n_layers <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0 ||
      a.vocab_size <= 0)
    fail(NWC_E_INVALID_ARG,
         what + ": the architecture lacks a size (hidden " + std::to_string(a.dim) +
             ", intermediate " + std::to_string(a.hidden_dim) + ", layers " +
             std::to_string(a.n_layers) + ", heads " + std::to_string(a.n_heads) + ", kv heads " +
             std::to_string(a.n_kv_heads) + ", vocabulary " + std::to_string(a.vocab_size) + ")");
  if ((a.head_dim == 0 && a.dim % a.n_heads != 0) || a.n_heads % a.n_kv_heads != 0)
    fail(NWC_E_INVALID_ARG, what + ": " + std::to_string(a.n_heads) + " heads and " +
                                std::to_string(a.n_kv_heads) +
                                " kv heads do not divide hidden size " + std::to_string(a.dim));
  if (!a.rope_style.empty() && a.rope_style != "rotate_half")
    fail(NWC_E_INVALID_ARG, what + ": transformers' Llama rotates halves; RoPE style '" +
                                a.rope_style +
                                "' needs the q/k rows permuted first (permute_rope_rows)");
  const char *torch_dtype = dtype == DType::F32    ? "float32"
                            : dtype == DType::F16  ? "float16"
                            : dtype == DType::BF16 ? "bfloat16"
                                                   : nullptr;
  if (!torch_dtype)
    fail(NWC_E_UNSUPPORTED_DTYPE,
         what + ": weights in " + std::string(dtype_name(dtype)) + " (expected F32, F16 or BF16)");
  // Each model type has its own fixed set of biases and norms; a combination it cannot hold is
  // refused naming the field.
  auto refuse = [&](const char *field, const std::string &why) {
    fail(NWC_E_INVALID_ARG, what + ": " + field + " " + why);
  };
  const bool llama = type == "llama", mistral = type == "mistral", qwen2 = type == "qwen2",
             qwen3 = type == "qwen3";
  if ((llama || qwen3) && a.attention_bias != a.attention_out_bias)
    refuse("attention_out_bias",
           "must equal attention_bias (" + type + "'s attention_bias covers q, k, v and o)");
  if (mistral && (a.attention_bias || a.attention_out_bias))
    refuse("attention_bias", "is not available in mistral (no attention biases)");
  if (qwen2 && !(a.attention_bias && !a.attention_out_bias))
    refuse("attention_bias", "must be q/k/v biases without an o_proj bias in qwen2");
  if (!llama && a.mlp_bias) refuse("mlp_bias", "is available in llama only");
  if (a.qk_norm != qwen3) refuse("qk_norm", "is what qwen3 has and the others lack");
  if (!mistral && a.sliding_window != 0) refuse("sliding_window", "is available in mistral only");
  if (!a.rope_scaling.type.empty() && a.rope_scaling.type != "llama3")
    refuse("rope_scaling", "type '" + a.rope_scaling.type + "' is not llama3");
  if (!a.rope_freq_factors.empty())
    refuse("rope_freq_factors",
           "(GGUF's rope_freqs) have no config.json field: transformers describes Llama 3's "
           "scaling by its parameters, which the factors do not give back");

  json c = {{"architectures", {t->architecture}},
            {"model_type", type},
            {"hidden_act", "silu"},
            {"hidden_size", a.dim},
            {"intermediate_size", a.hidden_dim},
            {"num_hidden_layers", a.n_layers},
            {"num_attention_heads", a.n_heads},
            {"num_key_value_heads", a.n_kv_heads},
            {"vocab_size", a.vocab_size},
            {"max_position_embeddings", a.max_seq_len},
            {"rms_norm_eps", a.norm_eps},
            {"rope_theta", a.rope_theta},
            {"tie_word_embeddings", a.tied_embeddings},
            {"torch_dtype", torch_dtype}};
  // head_dim only when set: transformers' default is hidden_size / num_attention_heads, except
  // Qwen 3's (128), which is therefore always written.
  if (a.head_dim != 0 || qwen3) c["head_dim"] = a.head_size();
  if (llama) {
    c["attention_bias"] = a.attention_bias;
    c["mlp_bias"] = a.mlp_bias;
  }
  if (qwen3) c["attention_bias"] = a.attention_bias;
  if (mistral) c["sliding_window"] = a.sliding_window ? json(a.sliding_window) : json(nullptr);
  if (qwen2 || qwen3) c["use_sliding_window"] = false;
  if (!a.rope_scaling.type.empty())
    c["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", a.rope_scaling.factor},
        {"low_freq_factor", a.rope_scaling.low_freq_factor},
        {"high_freq_factor", a.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", a.rope_scaling.original_max_position_embeddings}};
  return c;
}

void write_hf_config(const fs::path &path, const Architecture &arch, DType dtype,
                     const json &extra) {
  json config = hf_llama_config(arch, dtype);
  if (!extra.is_null() && !extra.is_object())
    fail(NWC_E_INVALID_ARG, path.string() + ": extra config.json keys must be a JSON object");
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      if (config.contains(it.key()))
        fail(NWC_E_INVALID_ARG,
             path.string() + ": extra key '" + it.key() + "' would replace a config key");
      config[it.key()] = it.value();
    }
  const std::string text = config.dump(2) + "\n";
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

// ---- reader ----

namespace {
constexpr const char *kEmbedding = "model.embed_tokens.weight";
constexpr const char *kOutputHead = "lm_head.weight";

// A tied model holds its embedding once. nwc's canonical form (as llama2.c files): the embedding
// under model.embed_tokens.weight, no lm_head, tied_embeddings set. transformers and safetensors'
// save_model drop one name of a shared tensor and may keep the other: a file that holds only
// lm_head.weight is tied when config.json says tie_word_embeddings or __metadata__ aliases the
// embedding to it ("model.embed_tokens.weight": "lm_head.weight"); the stored tensor is then
// renamed to the embedding and the alias, now pointing at nothing, dropped.
void tie_embeddings(Model &m, std::map<std::string, std::string> &metadata) {
  const bool has_embedding = m.find(kEmbedding) != nullptr;
  const bool has_head = m.find(kOutputHead) != nullptr;
  const auto alias = metadata.find(kEmbedding);
  const bool aliased = alias != metadata.end() && alias->second == kOutputHead;
  if (!has_embedding && has_head && (aliased || m.arch.tied_embeddings)) {
    for (auto &t : m.tensors)
      if (t.info.name == kOutputHead) t.info.name = kEmbedding;
    m.arch.tied_embeddings = true;
    if (aliased) metadata.erase(alias);
  }
  // Without (or in spite of) a config, a missing lm_head next to an embedding means tied.
  if (!m.find(kOutputHead) && m.find(kEmbedding)) m.arch.tied_embeddings = true;
}
} // namespace

Model read_safetensors(const fs::path &path) {
  Model m;
  m.format = "safetensors";
  m.path = path;
  std::vector<fs::path> files;
  std::map<std::string, std::string> expected; // tensor -> shard file, from the index
  fs::path dir;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    dir = path;
    if (fs::is_regular_file(path / "model.safetensors.index.json")) {
      files = shards_from_index(path, path / "model.safetensors.index.json", expected);
    } else if (fs::is_regular_file(path / "model.safetensors")) {
      files.push_back(path / "model.safetensors");
    } else {
      for (const auto &e : fs::directory_iterator(path))
        if (e.path().extension() == ".safetensors" && e.is_regular_file())
          files.push_back(e.path());
      std::sort(files.begin(), files.end());
    }
    if (files.empty())
      fail(NWC_E_IO, path.string() + ": no .safetensors files in the directory (expected "
                                     "model.safetensors, shards with "
                                     "model.safetensors.index.json, or *.safetensors)");
  } else {
    dir = path.parent_path();
    files.push_back(path);
  }

  std::map<std::string, std::string> metadata;
  std::map<std::string, std::string> owner; // tensor name -> file it came from
  auto mappings = std::make_shared<std::vector<std::shared_ptr<MappedFile>>>();
  for (const auto &f : files) {
    std::vector<ModelTensor> ts;
    mappings->push_back(read_file(f, ts, metadata));
    for (auto &t : ts) {
      const std::string fname = f.filename().string();
      auto [it, inserted] = owner.emplace(t.info.name, fname);
      if (!inserted)
        fail(NWC_E_CORRUPT_STREAM, path.string() + ": tensor '" + t.info.name +
                                       "' appears in both " + it->second + " and " + fname);
      m.tensors.push_back(std::move(t));
    }
  }
  for (const auto &[name, shard] : expected) {
    auto it = owner.find(name);
    if (it == owner.end() || it->second != shard)
      fail(NWC_E_CORRUPT_STREAM, path.string() + ": index lists tensor '" + name + "' in " + shard +
                                     ", but that shard does not contain it");
  }
  // The loaders hold their mappings too; keepalive owns them all for callers that rely on it.
  m.keepalive = mappings;

  const fs::path config = (dir.empty() ? fs::path(".") : dir) / "config.json";
  if (fs::is_regular_file(config, ec)) {
    m.arch = read_hf_config(config);
  }
  tie_embeddings(m, metadata);
  m.metadata = json::object();
  if (!metadata.empty()) m.metadata["__metadata__"] = metadata;
  return m;
}

// ---- writer ----

struct SafetensorsWriter::Impl {
  std::unique_ptr<AtomicFile> file;
  std::vector<TensorInfo> tensors;
  size_t next = 0;
  uint64_t part_done = 0; // bytes of tensors[next] given so far by write_raw_part()
  std::string path;

  const TensorInfo &expect(const std::string &name) {
    if (next >= tensors.size())
      fail(NWC_E_INVALID_ARG, path + ": tensor '" + name + "' written after all " +
                                  std::to_string(tensors.size()) + " declared tensors");
    if (tensors[next].name != name)
      fail(NWC_E_INVALID_ARG, path + ": expected tensor '" + tensors[next].name +
                                  "' next (declared order), got '" + name + "'");
    return tensors[next];
  }
  // write() and write_raw() give a whole tensor: not after part of it came from write_raw_part().
  const TensorInfo &expect_whole(const std::string &name) {
    const TensorInfo &t = expect(name);
    if (part_done != 0)
      fail(NWC_E_INVALID_ARG, path + ": tensor '" + name + "' was partly written (" +
                                  std::to_string(part_done) +
                                  " bytes by write_raw_part); give the rest the same way");
    return t;
  }
};

SafetensorsWriter::SafetensorsWriter(const fs::path &out, const std::vector<TensorInfo> &tensors,
                                     const std::map<std::string, std::string> &metadata)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = out.string();
  impl_->tensors = tensors;
  // ordered_json keeps the declared order in the header, which reads naturally.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto &t : tensors) {
    if (t.name == "__metadata__" || !seen.insert(t.name).second)
      fail(NWC_E_INVALID_ARG,
           impl_->path + ": tensor name '" + t.name + "' is reserved or declared twice");
    if (t.shape.size() > kMaxDims)
      fail(NWC_E_INVALID_ARG, impl_->path + ": tensor '" + t.name + "' has more than " +
                                  std::to_string(kMaxDims) + " dimensions");
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || !mul_ok(n, static_cast<uint64_t>(d), n))
        fail(NWC_E_INVALID_ARG, impl_->path + ": tensor '" + t.name + "' has a bad shape");
    }
    uint64_t bytes;
    if (!mul_ok(n, dtype_size(t.dtype), bytes) || offset + bytes < offset)
      fail(NWC_E_INVALID_ARG, impl_->path + ": tensor '" + t.name + "' is too large");
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad with spaces (allowed by the format) so the data area starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  impl_->file = std::make_unique<AtomicFile>(out);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(text.size() >> (8 * i));
  impl_->file->write(len, 8);
  impl_->file->write(text.data(), text.size());
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write(const std::string &name, const float *data) {
  const TensorInfo &t = impl_->expect_whole(name);
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
    fail(NWC_E_UNSUPPORTED_DTYPE, impl_->path + ": tensor '" + name + "' is declared " +
                                      std::string(dtype_name(t.dtype)) +
                                      "; write() converts floats only to F32, F16 or BF16 "
                                      "(use write_raw)");
  const uint64_t n = t.numel();
  const size_t esize = dtype_size(t.dtype);
  // Convert in bounded chunks so a large tensor does not need a second full-size buffer.
  constexpr uint64_t kChunk = 1 << 18;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(n, kChunk)) * esize);
  for (uint64_t i = 0; i < n; i += kChunk) {
    const size_t c = static_cast<size_t>(std::min(kChunk, n - i));
    from_float(t.dtype, data + i, c, buf.data());
    impl_->file->write(buf.data(), c * esize);
  }
  ++impl_->next;
}

void SafetensorsWriter::write_raw(const std::string &name, const void *bytes, size_t len) {
  const TensorInfo &t = impl_->expect_whole(name);
  const uint64_t want = t.numel() * dtype_size(t.dtype);
  if (len != want)
    fail(NWC_E_INVALID_ARG, impl_->path + ": tensor '" + name + "' needs " + std::to_string(want) +
                                " bytes, got " + std::to_string(len));
  impl_->file->write(bytes, len);
  ++impl_->next;
}

void SafetensorsWriter::write_raw_part(const std::string &name, const void *bytes, size_t len) {
  const TensorInfo &t = impl_->expect(name);
  const uint64_t want = t.numel() * dtype_size(t.dtype);
  if (len > want - impl_->part_done)
    fail(NWC_E_INVALID_ARG, impl_->path + ": tensor '" + name + "' needs " + std::to_string(want) +
                                " bytes; a part of " + std::to_string(len) + " after " +
                                std::to_string(impl_->part_done) + " goes past its end");
  impl_->file->write(bytes, len);
  impl_->part_done += len;
  if (impl_->part_done == want) {
    impl_->part_done = 0;
    ++impl_->next;
  }
}

void SafetensorsWriter::commit() {
  if (impl_->next != impl_->tensors.size())
    fail(NWC_E_INVALID_ARG, impl_->path + ": commit after " + std::to_string(impl_->next) + " of " +
                                std::to_string(impl_->tensors.size()) +
                                " declared tensors were written");
  impl_->file->commit();
}

} // namespace nwc
