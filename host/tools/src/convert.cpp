#include "nwc/tools/convert.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

#include <atomic>
#include <climits>
#include <cstring>
#include <unistd.h>

namespace nwc::tools {

namespace {

// The directory being built, for the signal handler: fixed storage, no locks, no allocation.
// g_pending is true while g_paths holds the directory (first) and the files it may contain.
constexpr int kPendingFiles = 2;
const char *const kFileNames[kPendingFiles] = {"config.json", "model.safetensors"};
char g_paths[kPendingFiles + 1][PATH_MAX];
std::atomic<bool> g_pending{false};
static_assert(std::atomic<bool>::is_always_lock_free, "read from a signal handler");

void set_pending(const std::filesystem::path &tmp) {
  const std::string d = tmp.string();
  if (d.size() + 32 >= PATH_MAX) return; // too long to register; the catch below still cleans up
  std::memcpy(g_paths[0], d.c_str(), d.size() + 1);
  for (int i = 0; i < kPendingFiles; ++i) {
    const std::string f = (tmp / kFileNames[i]).string();
    std::memcpy(g_paths[i + 1], f.c_str(), f.size() + 1);
  }
  g_pending.store(true);
}

} // namespace

void remove_pending_hf_directory() noexcept {
  if (!g_pending.load()) return;
  for (int i = 1; i <= kPendingFiles; ++i) ::unlink(g_paths[i]);
  ::rmdir(g_paths[0]);
}

void write_hf_directory(const Model &model, const std::filesystem::path &dir, DType dtype) {
  const Architecture &a = model.arch;
  if (a.dim <= 0 || a.n_heads <= 0 || a.n_kv_heads <= 0)
    fail(NWC_E_INVALID_ARG, model.path.string() + ": no Llama architecture to write a config for");
  if (std::filesystem::exists(dir))
    fail(NWC_E_IO, dir.string() + ": already exists (choose a new directory name)");
  const bool permute = a.rope_style == "interleaved";
  if (!permute && a.rope_style != "rotate_half")
    fail(NWC_E_INVALID_ARG, model.path.string() + ": cannot convert RoPE style '" + a.rope_style +
                                "' to the HF layout");
  const int64_t head_dim = a.head_size();
  if (permute && (a.attention_bias || a.qk_norm))
    fail(NWC_E_INVALID_ARG, model.path.string() +
                                ": interleaved RoPE with q/k biases or norms (attention_bias, "
                                "qk_norm) cannot be converted to the HF layout");
  Architecture hf = a; // what the directory holds: q/k rows in the rotate-half layout
  hf.rope_style = "rotate_half";
  hf_llama_config(hf, dtype); // refuses what config.json cannot describe, before any output

  auto tmp =
      dir.parent_path() / ("." + dir.filename().string() + ".tmp." + std::to_string(getpid()));
  set_pending(tmp); // before the directory exists, so that no moment leaves it unregistered
  std::filesystem::create_directories(tmp);
  try {
    write_hf_config(tmp / "config.json", hf, dtype);
    std::vector<TensorInfo> infos;
    for (const auto &t : model.tensors) infos.push_back({t.info.name, dtype, t.info.shape});
    SafetensorsWriter w(tmp / "model.safetensors", infos, {{"format", "pt"}});
    for (const auto &t : model.tensors) {
      std::vector<float> v = t.load();
      const std::string &n = t.info.name;
      auto ends = [&](const char *s) {
        std::string suf(s);
        return n.size() >= suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
      };
      if (permute && ends("self_attn.q_proj.weight"))
        v = permute_rope_rows(v, a.n_heads, head_dim, a.dim, true);
      else if (permute && ends("self_attn.k_proj.weight"))
        v = permute_rope_rows(v, a.n_kv_heads, head_dim, a.dim, true);
      w.write(n, v.data());
    }
    w.commit();
    std::filesystem::rename(tmp, dir);
    g_pending.store(false);
  } catch (...) {
    g_pending.store(false);
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
    throw;
  }
}

} // namespace nwc::tools
