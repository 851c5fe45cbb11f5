#include "nwc/runtime/calibrate.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"
#include "nwc/host/threads.hpp"

#include "llama_block.hpp"
#include "nwc/runtime/llama.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <thread>
#include <torch/torch.h>
#include <xxhash.h>

namespace nwc::runtime {
using namespace nwc::host;

namespace {
std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
} // namespace

const Hessian *Calibration::for_linear(const std::string &name) const {
  for (const auto &h : hessians)
    for (const auto &l : h.linears)
      if (l == name) return &h;
  return nullptr;
}

Calibration calibration_plan(const Architecture &arch, int64_t stream_tokens,
                             const CalibrationSettings &settings) {
  Calibration c;
  c.seq_len = settings.seq_len > 0 ? settings.seq_len : arch.max_seq_len;
  if (c.seq_len < 1 || c.seq_len > arch.max_seq_len)
    fail(NWC_E_INVALID_ARG,
         "calibrate: --seq-len must be in [1, " + std::to_string(arch.max_seq_len) + "]");
  const int64_t usable = std::min<int64_t>(stream_tokens, settings.tokens);
  const int64_t windows = usable / c.seq_len;
  if (windows == 0)
    fail(NWC_E_INVALID_ARG, "calibrate: the text gives " + std::to_string(stream_tokens) +
                                " tokens, fewer than one window of " + std::to_string(c.seq_len));
  c.tokens = windows * c.seq_len;
  for (int64_t l = 0; l < arch.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto input = [&](const char *suffix, int64_t dim, std::vector<std::string> linears) {
      Hessian h;
      h.input = "layers." + std::to_string(l) + "." + suffix;
      for (auto &name : linears) name = p + name + ".weight";
      h.linears = std::move(linears);
      h.dim = dim;
      h.count = c.tokens;
      c.hessians.push_back(std::move(h));
    };
    input("attn_in", arch.dim, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"});
    input("attn_out", arch.attention_dim(), {"self_attn.o_proj"});
    input("mlp_in", arch.dim, {"mlp.gate_proj", "mlp.up_proj"});
    input("mlp_out", arch.hidden_dim, {"mlp.down_proj"});
  }
  return c;
}

namespace {

// One slice of the calibration windows: its activations (the input of the current block, one
// [1, seq_len, dim] tensor per window) and the Gram sums of the current layer's four inputs.
struct Slice {
  std::vector<torch::Tensor> x;
  std::vector<std::vector<double>> sums;
};

constexpr const char *kInputs[] = {"attn_in", "attn_out", "mlp_in", "mlp_out"};

} // namespace
} // namespace nwc::runtime

// BLAS (libblas.so.3: OpenBLAS on Debian): the symmetric rank-k update, half a general product.
extern "C" void dsyrk_(const char *uplo, const char *trans, const int *n, const int *k,
                       const double *alpha, const double *a, const int *lda, const double *beta,
                       double *c, const int *ldc, size_t uplo_len, size_t trans_len);

namespace nwc::runtime {
namespace {

// The lower triangle (row-major) of sum += Xᵀ X for X = x (rows x dim, float32), in float64; the
// upper triangle is left as it is (mirror_lower() fills it once the sums are complete).
void accumulate_gram(const float *x, int64_t rows, int64_t dim, double *sum) {
  std::vector<double> xd(x, x + rows * dim);
  // Row-major X is the column-major dim x rows matrix A = Xᵀ; C = A Aᵀ = Xᵀ X. Column-major
  // upper triangle = row-major lower triangle.
  const int n = static_cast<int>(dim), k = static_cast<int>(rows);
  const double one = 1.0;
  dsyrk_("U", "N", &n, &k, &one, xd.data(), &n, &one, sum, &n, 1, 1);
}

void mirror_lower(std::vector<double> &h, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j)
      h[static_cast<size_t>(i * n + j)] = h[static_cast<size_t>(j * n + i)];
}

// Every input of a block (all four sums) and the block's output as the next block's input: one
// pass. Sequential calibration sums one input per pass and advances in a pass of its own.
inline constexpr int kAllInputs = -1, kNoInputs = -2;

// Runs every window of `slice` through one block, summing XᵀX of its inputs window by window
// (`input` = 0..3: that input only; kAllInputs: all four; kNoInputs: none). With `advance`, the
// block's outputs replace the slice's activations.
void run_block(const llama::BlockWeights &w, const llama::BlockShape &shape, Slice &slice,
               const std::vector<int64_t> &dims, int input = kAllInputs, bool advance = true) {
  torch::NoGradGuard no_grad; // per thread: workers start with gradients on
  slice.sums.assign(4, {});
  for (size_t k = 0; k < 4; ++k)
    if (input == kAllInputs || input == static_cast<int>(k))
      slice.sums[k].assign(static_cast<size_t>(dims[k] * dims[k]), 0.0);
  llama::Report report = [&](const char *suffix, const torch::Tensor &v) {
    size_t k = 0;
    while (std::string(kInputs[k]) != suffix) ++k;
    if (slice.sums[k].empty()) return;
    auto flat = v.reshape({-1, v.size(-1)}).contiguous();
    accumulate_gram(flat.data_ptr<float>(), flat.size(0), flat.size(1), slice.sums[k].data());
  };
  for (auto &x : slice.x) {
    auto y = llama::decoder_block(w, shape, x, 0, nullptr, nullptr,
                                  input == kNoInputs ? nullptr : &report);
    if (advance) x = y;
  }
}

// The windows of `stream` the plan uses, as token embeddings, dealt into slices (window w into
// slice w mod slices) for the slices in `mine`. The embedding matrix is dropped on return.
std::map<int64_t, Slice> embed_slices(const Model &model, const std::vector<int32_t> &stream,
                                      const Calibration &c, int64_t slices,
                                      const std::vector<int64_t> &mine) {
  const Architecture &a = model.arch;
  for (int64_t i = 0; i < c.tokens; ++i)
    if (stream[static_cast<size_t>(i)] < 0 || stream[static_cast<size_t>(i)] >= a.vocab_size)
      fail(NWC_E_INVALID_ARG,
           "calibrate: token id " + std::to_string(stream[i]) + " outside the vocabulary");
  const int64_t windows = c.tokens / c.seq_len;
  std::map<int64_t, Slice> local;
  torch::Tensor embed =
      llama::load_weight(model, "model.embed_tokens.weight", {a.vocab_size, a.dim});
  for (int64_t s : mine)
    for (int64_t w = s; w < windows; w += slices) {
      auto ids = torch::from_blob(const_cast<int32_t *>(stream.data()) + w * c.seq_len, {c.seq_len},
                                  torch::kInt32)
                     .to(torch::kInt64);
      local[s].x.push_back(embed.index_select(0, ids).view({1, c.seq_len, a.dim}));
    }
  return local;
}

// Runs `fn(slice index)` for every index of `mine`, `workers` at a time (the last of each round
// on the calling thread), then `after_round(first, last)`; the first failure is rethrown.
void in_rounds(const std::vector<int64_t> &mine, unsigned workers,
               const std::function<void(int64_t)> &fn,
               const std::function<void(size_t, size_t)> &after_round = {}) {
  for (size_t first = 0; first < mine.size(); first += workers) {
    const size_t last = std::min(mine.size(), first + workers);
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(last - first);
    for (size_t i = first; i < last; ++i) {
      auto run = [&, i] {
        try {
          fn(mine[i]);
        } catch (...) {
          errors[i - first] = std::current_exception();
        }
      };
      if (i + 1 == last)
        run();
      else
        pool.emplace_back(run);
    }
    for (auto &t : pool) t.join();
    for (auto &e : errors)
      if (e) std::rethrow_exception(e);
    if (after_round) after_round(first, last);
  }
}

} // namespace

Calibration calibrate_layers(const Model &model, const std::vector<int32_t> &stream,
                             const CalibrationSettings &settings, const HessianSink &sink,
                             Job *job) {
  torch::NoGradGuard no_grad;
  // Workers run one slice each with one LibTorch thread: a window's arithmetic, and so the
  // Hessian bits, then do not depend on how many run beside it.
  llama::configure_threads(1);
  const Architecture &a = model.arch;
  const llama::BlockShape shape = llama::block_shape(a, model.path.string());
  Calibration c = calibration_plan(a, static_cast<int64_t>(stream.size()), settings);
  const int64_t windows = c.tokens / c.seq_len;
  const int64_t slices = std::min(kCalibrationSlices, windows);
  const int rank = job ? job->rank() : 0, ranks = job ? job->size() : 1;
  std::vector<int64_t> mine; // this process's slices, in order
  for (int64_t s = rank; s < slices; s += ranks) mine.push_back(s);
  // Every window of this process's slices enters as its token embeddings.
  std::map<int64_t, Slice> local = embed_slices(model, stream, c, slices, mine);
  const unsigned workers = std::max<unsigned>(
      1, std::min<unsigned>(resolve_threads(settings.threads), static_cast<unsigned>(mine.size())));

  for (int64_t l = 0; l < a.n_layers; ++l) {
    if (mine.empty()) break; // more processes than slices: nothing to do here
    const llama::BlockWeights w = llama::load_block(model, l, shape);
    const std::vector<int64_t> dims = {a.dim, a.attention_dim(), a.dim, a.hidden_dim};
    std::vector<std::vector<double>> total; // rank 0: slices 0..next-1 added in order
    int64_t next = 0;
    // Adds slice `next` to the total: this process's own, or received from the rank that ran it.
    auto add_next = [&] {
      std::vector<std::vector<double>> sums;
      const int owner = static_cast<int>(next % ranks);
      if (owner == 0) {
        sums = std::move(local[next].sums);
        local[next].sums.clear();
      } else {
        sums.resize(4);
        for (size_t k = 0; k < 4; ++k) {
          sums[k].resize(static_cast<size_t>(dims[k] * dims[k]));
          job->receive_into(owner, sums[k].data(), sums[k].size() * sizeof(double));
        }
      }
      if (next++ == 0) {
        total = std::move(sums);
        return;
      }
      for (size_t k = 0; k < 4; ++k)
        for (size_t i = 0; i < total[k].size(); ++i) total[k][i] += sums[k][i];
    };
    // Rounds of `workers` slices; after each, rank 0 adds every slice it can in order (receiving
    // other ranks' slices as their turn comes) and the other ranks send theirs.
    in_rounds(
        mine, workers, [&](int64_t s) { run_block(w, shape, local[s], dims); },
        [&](size_t first, size_t last) {
          for (size_t i = first; i < last; ++i) {
            Slice &done = local[mine[i]];
            if (rank != 0) {
              for (auto &sum : done.sums) job->send(0, sum.data(), sum.size() * sizeof(double));
              done.sums.clear();
              continue;
            }
            while (next <= mine[i]) add_next();
          }
        });
    if (rank != 0) continue;
    while (next < slices) add_next(); // other ranks' slices after this rank's last one
    for (size_t k = 0; k < 4; ++k) {
      Hessian h = c.hessians[static_cast<size_t>(l) * 4 + k];
      h.h = std::move(total[k]);
      mirror_lower(h.h, h.dim);
      for (double &v : h.h) v /= static_cast<double>(h.count);
      sink(std::move(h));
    }
  }
  return c;
}

namespace {

// The field of a block's weights that holds linear `name` ("model.layers.3.mlp.up_proj.weight").
torch::Tensor &linear_field(llama::BlockWeights &w, const std::string &name) {
  static const std::pair<const char *, torch::Tensor llama::BlockWeights::*> kFields[] = {
      {".self_attn.q_proj.weight", &llama::BlockWeights::wq},
      {".self_attn.k_proj.weight", &llama::BlockWeights::wk},
      {".self_attn.v_proj.weight", &llama::BlockWeights::wv},
      {".self_attn.o_proj.weight", &llama::BlockWeights::wo},
      {".mlp.gate_proj.weight", &llama::BlockWeights::w_gate},
      {".mlp.up_proj.weight", &llama::BlockWeights::w_up},
      {".mlp.down_proj.weight", &llama::BlockWeights::w_down}};
  for (const auto &[suffix, field] : kFields)
    if (name.size() > std::strlen(suffix) &&
        name.compare(name.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
      return w.*field;
  fail(NWC_E_INTERNAL, "sequential calibration: " + name + " is not a linear of a decoder block");
}

} // namespace

Calibration calibrate_sequential(const Model &model, const std::vector<int32_t> &stream,
                                 const CalibrationSettings &settings,
                                 const SequentialUpdate &update) {
  torch::NoGradGuard no_grad;
  llama::configure_threads(1); // as calibrate_layers: the bits do not depend on the thread count
  const Architecture &a = model.arch;
  const llama::BlockShape shape = llama::block_shape(a, model.path.string());
  Calibration c = calibration_plan(a, static_cast<int64_t>(stream.size()), settings);
  const int64_t windows = c.tokens / c.seq_len;
  const int64_t slices = std::min(kCalibrationSlices, windows);
  std::vector<int64_t> all(static_cast<size_t>(slices));
  std::iota(all.begin(), all.end(), int64_t{0});
  std::map<int64_t, Slice> local = embed_slices(model, stream, c, slices, all);
  const unsigned workers = std::max<unsigned>(
      1, std::min<unsigned>(resolve_threads(settings.threads), static_cast<unsigned>(slices)));
  const std::vector<int64_t> dims = {a.dim, a.attention_dim(), a.dim, a.hidden_dim};

  for (int64_t l = 0; l < a.n_layers; ++l) {
    llama::BlockWeights w = llama::load_block(model, l, shape);
    for (int k = 0; k < 4; ++k) {
      // This input's sums with the block as it is now (its earlier inputs' linears replaced).
      in_rounds(all, workers, [&](int64_t s) { run_block(w, shape, local[s], dims, k, false); });
      Hessian h = c.hessians[static_cast<size_t>(l) * 4 + static_cast<size_t>(k)];
      h.h = std::move(local[0].sums[static_cast<size_t>(k)]);
      for (int64_t s = 1; s < slices; ++s) { // slice order: the same bits for any thread count
        const auto &sum = local[s].sums[static_cast<size_t>(k)];
        for (size_t i = 0; i < h.h.size(); ++i) h.h[i] += sum[i];
      }
      for (auto &[index, slice] : local) slice.sums.clear();
      mirror_lower(h.h, h.dim);
      for (double &v : h.h) v /= static_cast<double>(h.count);
      for (auto &[name, values] : update(h)) {
        torch::Tensor &field = linear_field(w, name);
        if (static_cast<int64_t>(values.size()) != field.numel())
          fail(NWC_E_INTERNAL, "sequential calibration: " + name + " replaced with " +
                                   std::to_string(values.size()) + " values, expected " +
                                   std::to_string(field.numel()));
        field = torch::from_blob(values.data(), field.sizes(), torch::kFloat32).clone();
      }
    }
    // The next block sees this block's outputs with every replaced linear.
    in_rounds(all, workers,
              [&](int64_t s) { run_block(w, shape, local[s], dims, kNoInputs, true); });
  }
  return c;
}

Calibration calibrate(const Model &model, const std::vector<int32_t> &stream,
                      const CalibrationSettings &settings) {
  std::vector<Hessian> hessians;
  Calibration c = calibrate_layers(model, stream, settings,
                                   [&](Hessian &&h) { hessians.push_back(std::move(h)); });
  c.hessians = std::move(hessians);
  return c;
}

std::string model_fingerprint(const Model &model) {
  XXH64_state_t *st = XXH64_createState();
  XXH64_reset(st, 0);
  for (const auto &t : model.tensors) {
    XXH64_update(st, t.info.name.data(), t.info.name.size() + 1);
    XXH64_update(st, t.info.shape.data(), t.info.shape.size() * sizeof(int64_t));
    std::vector<float> v = t.load();
    XXH64_update(st, v.data(), v.size() * sizeof(float));
  }
  uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return hex64(h);
}

namespace {

nlohmann::json calibration_metadata(const Calibration &c) {
  nlohmann::json meta = {{"model_hash", c.model_hash},
                         {"text_hash", c.text_hash},
                         {"tokens", c.tokens},
                         {"seq_len", c.seq_len},
                         {"inputs", nlohmann::json::object()}};
  for (const auto &h : c.hessians)
    meta["inputs"][h.input] = {{"linears", h.linears}, {"count", h.count}, {"dim", h.dim}};
  return meta;
}

std::vector<TensorInfo> calibration_tensors(const Calibration &c) {
  std::vector<TensorInfo> infos;
  for (const auto &h : c.hessians)
    infos.push_back(TensorInfo{"hessian." + h.input, DType::F32, {h.dim, h.dim}});
  return infos;
}

void write_hessian(SafetensorsWriter &w, const Hessian &h) {
  std::vector<float> f(h.h.begin(), h.h.end());
  w.write("hessian." + h.input, f.data());
}

} // namespace

void save_calibration(const Calibration &c, const std::filesystem::path &path) {
  SafetensorsWriter w(path, calibration_tensors(c),
                      {{"nwc.calibration", calibration_metadata(c).dump()}});
  for (const auto &h : c.hessians) write_hessian(w, h);
  w.commit();
}

Calibration calibrate_to_file(const Model &model, const std::vector<int32_t> &stream,
                              const CalibrationSettings &settings, const std::string &model_hash,
                              const std::string &text_hash, const std::filesystem::path &path,
                              Job *job, const std::function<void(const Hessian &)> &on_hessian) {
  Calibration plan = calibration_plan(model.arch, static_cast<int64_t>(stream.size()), settings);
  plan.model_hash = model_hash;
  plan.text_hash = text_hash;
  std::unique_ptr<SafetensorsWriter> w;
  if (!job || job->rank() == 0)
    w = std::make_unique<SafetensorsWriter>(
        path, calibration_tensors(plan),
        std::map<std::string, std::string>{{"nwc.calibration", calibration_metadata(plan).dump()}});
  calibrate_layers(
      model, stream, settings,
      [&](Hessian &&h) {
        if (on_hessian) on_hessian(h);
        write_hessian(*w, h);
      },
      job);
  if (w) w->commit();
  return plan;
}

CalibrationFile open_calibration(const std::filesystem::path &path) {
  CalibrationFile f;
  f.file = read_safetensors(path);
  const std::string p = path.string();
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(
        f.file.metadata.at("__metadata__").at("nwc.calibration").get<std::string>());
  } catch (const std::exception &) {
    fail(NWC_E_CORRUPT_STREAM, p + ": not an nwc calibration file (no nwc.calibration metadata)");
  }
  Calibration &c = f.info;
  try {
    c.model_hash = meta.at("model_hash").get<std::string>();
    c.text_hash = meta.at("text_hash").get<std::string>();
    c.tokens = meta.at("tokens").get<int64_t>();
    c.seq_len = meta.at("seq_len").get<int64_t>();
    for (auto it = meta.at("inputs").begin(); it != meta.at("inputs").end(); ++it) {
      Hessian h;
      h.input = it.key();
      h.linears = it.value().at("linears").get<std::vector<std::string>>();
      h.count = it.value().at("count").get<int64_t>();
      h.dim = it.value().at("dim").get<int64_t>();
      const ModelTensor *t = f.file.find("hessian." + h.input);
      if (!t || t->info.shape != std::vector<int64_t>{h.dim, h.dim})
        fail(NWC_E_CORRUPT_STREAM, p + ": missing or misshapen tensor hessian." + h.input);
      c.hessians.push_back(std::move(h));
    }
  } catch (const nlohmann::json::exception &e) {
    fail(NWC_E_CORRUPT_STREAM, p + ": malformed nwc.calibration metadata: " + e.what());
  }
  return f;
}

Calibration load_calibration(const std::filesystem::path &path) {
  CalibrationFile f = open_calibration(path);
  for (Hessian &h : f.info.hessians) {
    std::vector<float> v = f.file.find("hessian." + h.input)->load();
    h.h.assign(v.begin(), v.end());
  }
  return std::move(f.info);
}

std::map<std::string, HessianRef> hessians_by_linear(const CalibrationFile &f) {
  std::map<std::string, HessianRef> out;
  for (const Hessian &h : f.info.hessians) {
    const ModelTensor *t = f.file.find("hessian." + h.input);
    // The loader keeps the mapped file alive: settings may outlive the CalibrationFile.
    HessianRef ref(static_cast<uint64_t>(h.dim) * static_cast<uint64_t>(h.dim),
                   [load = t->load, keep = f.file.keepalive] {
                     return std::make_shared<const std::vector<float>>(load());
                   });
    for (const auto &l : h.linears) out[l] = ref;
  }
  return out;
}

} // namespace nwc::runtime
