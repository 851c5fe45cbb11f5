// llama.cpp itself as the reference runtime for GGUF files nwc writes: libllama.v0.5.0.so of the
// node-llama-cpp package in the reference cache (scripts/fetch-references.sh), opened with
// dlopen, with its CPU backend loaded from the same folder. The functions are declared by hand
// from llama.h; the two parameter structs are treated as opaque blobs that the library's own
// llama_*_default_params() fill, and only fields whose offsets have not moved in llama.h's
// history are changed (n_ctx, n_batch, n_ubatch at the start of llama_context_params, checked
// against their defaults); the model parameters stay the library's defaults.
// A missing package or library throws with a message: a test fails, it is never skipped.
#pragma once

#include "test_support.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nwc::test {

class LlamaCpp {
public:
  // struct llama_batch (llama.h): unchanged since llama.cpp's batch API appeared.
  struct Batch {
    int32_t n_tokens;
    int32_t *token;
    float *embd;
    int32_t *pos;
    int32_t *n_seq_id;
    int32_t **seq_id;
    int8_t *logits;
  };
  // Larger than either struct in any release: a by-value struct argument of this type puts the
  // library's struct first on the stack, so the callee reads exactly its own fields.
  struct alignas(8) Params {
    unsigned char bytes[512];
  };

  static const LlamaCpp &get() {
    static const LlamaCpp lib;
    return lib;
  }

  // A loaded GGUF model with one context of n_ctx tokens.
  class Model {
  public:
    Model(const LlamaCpp &lib, const std::filesystem::path &gguf, uint32_t n_ctx) : lib_(lib) {
      log().clear();
      model_ = lib.model_load_from_file(gguf.c_str(), lib.model_default_params());
      if (!model_) throw std::runtime_error("llama.cpp cannot load " + gguf.string());
      // llama.cpp's own size report: "file size   = 252.59 KiB (7.77 BPW)".
      if (const size_t at = log().find(" BPW)"); at != std::string::npos) {
        const size_t open = log().rfind('(', at);
        if (open != std::string::npos) bpw_ = std::stod(log().substr(open + 1, at - open - 1));
      }
      vocab_ = lib.model_get_vocab(model_);
      Params cp = lib.context_default_params();
      uint32_t defaults[3];
      std::memcpy(defaults, cp.bytes, sizeof defaults);
      if (defaults[0] == 0 || defaults[1] < defaults[2])
        throw std::runtime_error("llama_context_params does not start with n_ctx, n_batch, "
                                 "n_ubatch in this libllama (another llama.h?)");
      for (int k = 0; k < 3; ++k) std::memcpy(cp.bytes + 4 * k, &n_ctx, 4); // n_ctx, n_(u)batch
      // n_threads, n_threads_batch: the first two adjacent int32 holding GGML_DEFAULT_N_THREADS
      // (4) after n_seq_max; their offset moved between releases. One thread: CI has two cores.
      for (int off = 16; off + 8 <= 64; off += 4) {
        int32_t t[2];
        std::memcpy(t, cp.bytes + off, sizeof t);
        if (t[0] != 4 || t[1] != 4) continue;
        const int32_t one[2] = {1, 1};
        std::memcpy(cp.bytes + off, one, sizeof one);
        break;
      }
      ctx_ = lib.init_from_model(model_, cp);
      if (!ctx_) throw std::runtime_error("llama.cpp cannot create a context for " + gguf.string());
    }
    ~Model() {
      if (ctx_) lib_.free_context(ctx_);
      if (model_) lib_.model_free(model_);
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    int32_t n_vocab() const { return lib_.vocab_n_tokens(vocab_); }
    // Bits per weight as llama.cpp reports the file when loading it (0 if it did not say).
    double bits_per_weight() const { return bpw_; }

    // llama_tokenize: add_special adds BOS/EOS as the file's add_bos_token/add_eos_token say;
    // parse_special matches control tokens spelled in the text (as HF's tokenizers do).
    std::vector<int32_t> tokenize(const std::string &text, bool add_special,
                                  bool parse_special = false) const {
      std::vector<int32_t> ids(text.size() + 8);
      int32_t n = lib_.tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                                static_cast<int32_t>(ids.size()), add_special, parse_special);
      if (n < 0) {
        ids.resize(static_cast<size_t>(-n));
        n = lib_.tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), ids.data(),
                          static_cast<int32_t>(ids.size()), add_special, parse_special);
      }
      if (n < 0) throw std::runtime_error("llama_tokenize failed");
      ids.resize(static_cast<size_t>(n));
      return ids;
    }

    // llama.cpp's logits at every position of one window evaluated from an empty cache:
    // [tokens, n_vocab] row-major.
    std::vector<float> logits(const std::vector<int32_t> &tokens) const {
      decode_window(tokens);
      const auto v = static_cast<size_t>(n_vocab());
      std::vector<float> out(tokens.size() * v);
      for (size_t i = 0; i < tokens.size(); ++i) {
        const float *l = lib_.get_logits_ith(ctx_, static_cast<int32_t>(i));
        std::copy(l, l + v, out.begin() + static_cast<std::ptrdiff_t>(i * v));
      }
      return out;
    }

    // Sum of next-token NLLs over one window evaluated from an empty cache (positions 0..n-1):
    // log-softmax of llama.cpp's logits at i, taken at token i+1.
    double window_nll(const std::vector<int32_t> &tokens) const {
      const auto n = static_cast<int32_t>(tokens.size());
      decode_window(tokens);
      const int32_t v = n_vocab();
      double sum = 0;
      for (int32_t i = 0; i + 1 < n; ++i) {
        const float *l = lib_.get_logits_ith(ctx_, i);
        double mx = l[0];
        for (int32_t k = 1; k < v; ++k) mx = std::max(mx, static_cast<double>(l[k]));
        double z = 0;
        for (int32_t k = 0; k < v; ++k) z += std::exp(static_cast<double>(l[k]) - mx);
        sum += mx + std::log(z) - l[tokens[static_cast<size_t>(i) + 1]];
      }
      return sum;
    }

  private:
    // llama_decode of tokens at positions 0..n-1 of sequence 0, after clearing the cache, with
    // logits at every position.
    void decode_window(const std::vector<int32_t> &tokens) const {
      const auto n = static_cast<int32_t>(tokens.size());
      lib_.memory_clear(lib_.get_memory(ctx_), true);
      std::vector<int32_t> tok(tokens), pos(tokens.size()), nseq(tokens.size(), 1);
      std::vector<int32_t> seq0(tokens.size(), 0);
      std::vector<int32_t *> seq(tokens.size());
      std::vector<int8_t> out(tokens.size(), 1);
      for (int32_t i = 0; i < n; ++i) {
        pos[static_cast<size_t>(i)] = i;
        seq[static_cast<size_t>(i)] = &seq0[static_cast<size_t>(i)];
      }
      const Batch b{n, tok.data(), nullptr, pos.data(), nseq.data(), seq.data(), out.data()};
      if (const int32_t rc = lib_.decode(ctx_, b); rc != 0)
        throw std::runtime_error("llama_decode returned " + std::to_string(rc));
    }

    const LlamaCpp &lib_;
    void *model_ = nullptr, *ctx_ = nullptr;
    const void *vocab_ = nullptr;
    double bpw_ = 0;
  };

  // What llama.cpp logged since the last model load began.
  static std::string &log() {
    static std::string text;
    return text;
  }

  // llama_model_quantize, as `llama-quantize IN OUT FTYPE 1` runs it: ftype is a llama_ftype
  // (2 Q4_0, 7 Q8_0, 12 Q3_K_M, 15 Q4_K_M, 17 Q5_K_M, 18 Q6_K, 30 IQ4_XS). Only nthread and
  // ftype, the first two fields of llama_model_quantize_params, change from the defaults.
  // struct llama_model_imatrix_data (llama.h): one tensor's importance, ne[0] floats.
  struct ImatrixEntry {
    const char *name;
    const float *data;
    size_t size;
  };
  // With `imatrix` (terminated by an entry with a null name) and `pure` (llama-quantize --pure:
  // every tensor in ftype's type or its fallback): the fields pure (byte 19) and imatrix (offset
  // 24) as llama.h lays them out in this release (the mixture tests confirm the offsets from
  // llama.cpp's log).
  void quantize(const std::filesystem::path &in, const std::filesystem::path &out, int32_t ftype,
                const ImatrixEntry *imatrix = nullptr, bool pure = false) const {
    Params p = quantize_default_params();
    const int32_t head[2] = {1, ftype};
    std::memcpy(p.bytes, head, sizeof head);
    p.bytes[19] = pure ? 1 : 0;
    std::memcpy(p.bytes + 24, &imatrix, sizeof imatrix);
    if (const uint32_t rc = model_quantize(in.c_str(), out.c_str(), &p); rc != 0)
      throw std::runtime_error("llama_model_quantize(" + in.string() + ", ftype " +
                               std::to_string(ftype) + ") returned " + std::to_string(rc));
  }

private:
  LlamaCpp() {
    const std::filesystem::path dir =
        reference_dir("node-llama-cpp/linux-x64") / "bins" / "linux-x64";
    void *ggml = open(dir / "libggml.v0.5.0.so");
    void *llama = open(dir / "libllama.v0.5.0.so");
    auto load_backends = sym<void (*)(const char *)>(ggml, "ggml_backend_load_all_from_path");
    load_backends(dir.c_str()); // the CPU backend variant that suits this processor
    sym(llama, "llama_log_set", log_set);
    sym(llama, "llama_backend_init", backend_init);
    sym(llama, "llama_model_default_params", model_default_params);
    sym(llama, "llama_context_default_params", context_default_params);
    sym(llama, "llama_model_load_from_file", model_load_from_file);
    sym(llama, "llama_model_free", model_free);
    sym(llama, "llama_model_get_vocab", model_get_vocab);
    sym(llama, "llama_vocab_n_tokens", vocab_n_tokens);
    sym(llama, "llama_tokenize", tokenize);
    sym(llama, "llama_init_from_model", init_from_model);
    sym(llama, "llama_free", free_context);
    sym(llama, "llama_get_memory", get_memory);
    sym(llama, "llama_memory_clear", memory_clear);
    sym(llama, "llama_decode", decode);
    sym(llama, "llama_get_logits_ith", get_logits_ith);
    sym(llama, "llama_model_quantize_default_params", quantize_default_params);
    sym(llama, "llama_model_quantize", model_quantize);
    log_set([](int, const char *text, void *) { log() += text; }, nullptr);
    backend_init();
  }

  static void *open(const std::filesystem::path &p) {
    if (!std::filesystem::exists(p))
      throw std::runtime_error("llama.cpp reference library not found: " + p.string() +
                               " (run scripts/fetch-references.sh, or set NWC_REFERENCES)");
    void *h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) throw std::runtime_error("cannot load " + p.string() + ": " + dlerror());
    return h;
  }
  template <class F> static F sym(void *h, const char *name) {
    void *s = dlsym(h, name);
    if (!s) throw std::runtime_error(std::string("llama.cpp does not export ") + name);
    F f;
    static_assert(sizeof(f) == sizeof(s));
    std::memcpy(&f, &s, sizeof(f));
    return f;
  }
  template <class F> static void sym(void *h, const char *name, F &f) { f = sym<F>(h, name); }

public:
  void (*log_set)(void (*cb)(int, const char *, void *), void *) = nullptr;
  void (*backend_init)() = nullptr;
  Params (*model_default_params)() = nullptr;
  Params (*context_default_params)() = nullptr;
  void *(*model_load_from_file)(const char *, Params) = nullptr;
  void (*model_free)(void *) = nullptr;
  const void *(*model_get_vocab)(const void *) = nullptr;
  int32_t (*vocab_n_tokens)(const void *) = nullptr;
  int32_t (*tokenize)(const void *, const char *, int32_t, int32_t *, int32_t, bool,
                      bool) = nullptr;
  void *(*init_from_model)(void *, Params) = nullptr;
  void (*free_context)(void *) = nullptr;
  void *(*get_memory)(void *) = nullptr;
  void (*memory_clear)(void *, bool) = nullptr;
  int32_t (*decode)(void *, Batch) = nullptr;
  float *(*get_logits_ith)(void *, int32_t) = nullptr;
  Params (*quantize_default_params)() = nullptr;
  uint32_t (*model_quantize)(const char *, const char *, const Params *) = nullptr;
};

} // namespace nwc::test
