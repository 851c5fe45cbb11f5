// llama2c.cpp — reader for llama2.c checkpoints (the legacy "version 0" layout: 7 int32 header,
// then float32 tensors stacked over layers).
#include "nwc/formats/llama2c.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"

#include <cstring>

namespace nwc {

namespace {

constexpr uint64_t kHeaderBytes = 7 * 4;

// Bounds well above any llama2.c model, low enough that every size computed below fits in 64 bits.
constexpr int64_t kMaxDim = 1 << 16;
constexpr int64_t kMaxHidden = 1 << 20;
constexpr int64_t kMaxLayers = 1 << 10;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxSeq = 1 << 22;

uint64_t mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(NWC_E_CORRUPT_STREAM, "llama2.c: size overflow");
  return r;
}

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

std::string describe(const Header &h) {
  return "dim=" + std::to_string(h.dim) + ", hidden_dim=" + std::to_string(h.hidden_dim) +
         ", n_layers=" + std::to_string(h.n_layers) + ", n_heads=" + std::to_string(h.n_heads) +
         ", n_kv_heads=" + std::to_string(h.n_kv_heads) +
         ", vocab_size=" + std::to_string(h.vocab_size) + ", seq_len=" + std::to_string(h.seq_len);
}

void check_field(const std::string &path, const char *name, int64_t v, int64_t max) {
  if (v <= 0 || v > max)
    fail(NWC_E_CORRUPT_STREAM, path + ": bad llama2.c header: " + name + " = " + std::to_string(v) +
                                   " (expected 1.." + std::to_string(max) + ")");
}

} // namespace

Model read_llama2c(const std::filesystem::path &path) {
  auto file = std::make_shared<MappedFile>(path);
  const std::string p = path.string();
  if (file->size() < kHeaderBytes)
    fail(NWC_E_CORRUPT_STREAM, p + ": truncated llama2.c file: need a 28-byte header, file has " +
                                   std::to_string(file->size()) + " bytes");
  Header h;
  std::memcpy(&h, file->data(), sizeof h);

  // Validate every header field before any size is computed from it.
  check_field(p, "dim", h.dim, kMaxDim);
  check_field(p, "hidden_dim", h.hidden_dim, kMaxHidden);
  check_field(p, "n_layers", h.n_layers, kMaxLayers);
  check_field(p, "n_heads", h.n_heads, h.dim);
  check_field(p, "n_kv_heads", h.n_kv_heads, h.n_heads);
  check_field(p, "seq_len", h.seq_len, kMaxSeq);
  if (h.vocab_size == 0 || h.vocab_size < -kMaxVocab || h.vocab_size > kMaxVocab)
    fail(NWC_E_CORRUPT_STREAM,
         p + ": bad llama2.c header: vocab_size = " + std::to_string(h.vocab_size) +
             " (expected 1.." + std::to_string(kMaxVocab) +
             ", negative for a separate classifier)");
  if (h.dim % h.n_heads != 0)
    fail(NWC_E_CORRUPT_STREAM, p + ": bad llama2.c header: dim " + std::to_string(h.dim) +
                                   " is not a multiple of n_heads " + std::to_string(h.n_heads));
  if (h.n_heads % h.n_kv_heads != 0)
    fail(NWC_E_CORRUPT_STREAM, p + ": bad llama2.c header: n_heads " + std::to_string(h.n_heads) +
                                   " is not a multiple of n_kv_heads " +
                                   std::to_string(h.n_kv_heads));

  const bool shared_classifier = h.vocab_size > 0;
  const uint64_t dim = static_cast<uint64_t>(h.dim);
  const uint64_t hidden = static_cast<uint64_t>(h.hidden_dim);
  const uint64_t layers = static_cast<uint64_t>(h.n_layers);
  const uint64_t vocab = static_cast<uint64_t>(shared_classifier ? h.vocab_size : -h.vocab_size);
  const uint64_t head_size = dim / static_cast<uint64_t>(h.n_heads);
  const uint64_t kv_dim = head_size * static_cast<uint64_t>(h.n_kv_heads);
  const uint64_t seq = static_cast<uint64_t>(h.seq_len);

  Model m;
  m.format = "llama2c";
  m.path = path;
  m.keepalive = file;
  Architecture &a = m.arch;
  a.family = "llama";
  a.dim = h.dim;
  a.hidden_dim = h.hidden_dim;
  a.n_layers = h.n_layers;
  a.n_heads = h.n_heads;
  a.n_kv_heads = h.n_kv_heads;
  a.vocab_size = static_cast<int64_t>(vocab);
  a.max_seq_len = h.seq_len;
  a.norm_eps = 1e-5;
  a.rope_theta = 10000.0;
  a.rope_style = "interleaved";
  a.tied_embeddings = shared_classifier;

  // Offsets in floats from the end of the header; tensors are appended in file order. Stacked
  // tensors ([L, ...]) are split into one tensor per layer.
  uint64_t offset = 0;
  struct Pending {
    std::string name;
    std::vector<int64_t> shape;
    uint64_t offset; // in floats
  };
  std::vector<Pending> pending;
  auto add = [&](const std::string &name, std::vector<int64_t> shape) {
    uint64_t n = 1;
    for (int64_t d : shape) n = mul(n, static_cast<uint64_t>(d));
    pending.push_back({name, std::move(shape), offset});
    offset += n;
  };
  auto per_layer = [&](const std::string &suffix, int64_t rows, int64_t cols) {
    for (uint64_t l = 0; l < layers; ++l) {
      std::vector<int64_t> shape = {rows};
      if (cols > 0) shape.push_back(cols);
      add("model.layers." + std::to_string(l) + "." + suffix, std::move(shape));
    }
  };
  const auto D = static_cast<int64_t>(dim), H = static_cast<int64_t>(hidden),
             KV = static_cast<int64_t>(kv_dim);
  add("model.embed_tokens.weight", {static_cast<int64_t>(vocab), D});
  per_layer("input_layernorm.weight", D, 0);
  per_layer("self_attn.q_proj.weight", D, D);
  per_layer("self_attn.k_proj.weight", KV, D);
  per_layer("self_attn.v_proj.weight", KV, D);
  per_layer("self_attn.o_proj.weight", D, D);
  per_layer("post_attention_layernorm.weight", D, 0);
  per_layer("mlp.gate_proj.weight", H, D);
  per_layer("mlp.down_proj.weight", D, H);
  per_layer("mlp.up_proj.weight", H, D);
  add("model.norm.weight", {D});
  const uint64_t freq_cis = mul(mul(seq, head_size / 2), 2); // real and imaginary parts
  const uint64_t classifier = shared_classifier ? 0 : mul(vocab, dim);
  const uint64_t without_freq = kHeaderBytes + mul(offset + classifier, 4);
  const uint64_t with_freq = kHeaderBytes + mul(offset + freq_cis + classifier, 4);

  const uint64_t size = file->size();
  bool has_freq;
  if (size == with_freq)
    has_freq = true;
  else if (size == without_freq)
    has_freq = false;
  else if (size < with_freq) // shorter than a legacy file and not a modern one: cut off
    fail(NWC_E_CORRUPT_STREAM, p + ": truncated llama2.c file: header says " +
                                   std::to_string(with_freq) + " bytes (" +
                                   std::to_string(without_freq) + " without freq_cis), file has " +
                                   std::to_string(size) + " (" + describe(h) + ")");
  else
    fail(NWC_E_CORRUPT_STREAM,
         p + ": llama2.c file size " + std::to_string(size) + " does not match the header (" +
             describe(h) + "), which implies " + std::to_string(with_freq) +
             " bytes with freq_cis or " + std::to_string(without_freq) + " without");
  if (!shared_classifier)
    pending.push_back(
        {"lm_head.weight", {static_cast<int64_t>(vocab), D}, offset + (has_freq ? freq_cis : 0)});

  const uint8_t *base = file->data() + kHeaderBytes;
  for (auto &t : pending) {
    ModelTensor mt;
    mt.info.name = std::move(t.name);
    mt.info.dtype = DType::F32;
    mt.info.shape = std::move(t.shape);
    const uint64_t n = mt.info.numel();
    const uint8_t *src = base + t.offset * 4;
    mt.load = [file, src, n]() {
      std::vector<float> out(n);
      to_float(DType::F32, src, n, out.data());
      return out;
    };
    m.tensors.push_back(std::move(mt));
  }
  return m;
}

} // namespace nwc
