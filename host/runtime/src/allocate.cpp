#include "nwc/runtime/allocate.hpp"

#include "llama_block.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/target_rate.hpp"
#include "nwc/runtime/awq.hpp"
#include "nwc/runtime/llama.hpp"
#include "parallel_for.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <queue>
#include <sstream>

namespace nwc::runtime {

namespace {

// The lower convex hull of a tensor's options from its fewest bits on: option indices with
// strictly more bits and strictly less cost, each step's cost drop per bit no steeper than the
// one before (so that walking a hull step by step is what a Lagrangian solution does).
std::vector<size_t> lower_hull(const std::vector<AllocationOption> &options) {
  std::vector<size_t> order(options.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (options[a].bits != options[b].bits) return options[a].bits < options[b].bits;
    if (options[a].cost != options[b].cost) return options[a].cost < options[b].cost;
    return a < b;
  });
  std::vector<size_t> hull;
  for (size_t i : order) {
    if (!hull.empty() && options[i].cost >= options[hull.back()].cost) continue; // dominated
    while (hull.size() >= 2) {
      const auto &a = options[hull[hull.size() - 2]], &b = options[hull.back()], &c = options[i];
      // b lies on or above the segment a-c: the step a -> c is at least as steep per bit.
      if ((b.cost - a.cost) * (c.bits - a.bits) >= (c.cost - a.cost) * (b.bits - a.bits))
        hull.pop_back();
      else
        break;
    }
    hull.push_back(i);
  }
  return hull;
}

// Log-probabilities of rows of logits, in place.
void log_softmax_rows(std::vector<float> &x, int64_t vocab) {
  for (size_t r = 0; r + static_cast<size_t>(vocab) <= x.size(); r += static_cast<size_t>(vocab)) {
    float *row = x.data() + r;
    const float top = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - top);
    const float log_z = top + static_cast<float>(std::log(sum));
    for (int64_t v = 0; v < vocab; ++v) row[v] -= log_z;
  }
}

// The windows the sensitivities are measured on, and the original model's log-probabilities there.
struct Reference {
  std::vector<int32_t> tokens; // windows x seq_len
  int64_t windows = 0, seq_len = 0, vocab = 0;
  std::vector<float> log_probs; // [windows, seq_len, vocab]
};

constexpr int64_t kWindowsPerPass = 8;

// Log-probabilities of `llama` on the reference windows, a pass of windows at a time, handed to
// `use` with the index of the pass's first position.
void for_each_pass(const LlamaModel &llama, const Reference &ref,
                   const std::function<void(const std::vector<float> &, size_t)> &use) {
  for (int64_t w = 0; w < ref.windows; w += kWindowsPerPass) {
    const int64_t n = std::min(kWindowsPerPass, ref.windows - w);
    std::vector<int32_t> ids(ref.tokens.begin() + w * ref.seq_len,
                             ref.tokens.begin() + (w + n) * ref.seq_len);
    std::vector<float> lp = llama.logits(ids, n, ref.seq_len);
    log_softmax_rows(lp, ref.vocab);
    use(lp, static_cast<size_t>(w * ref.seq_len));
  }
}

// Mean over positions of KL(original || candidate), nats per token; the candidate's
// log-probabilities are held one pass at a time.
double mean_kl(const Reference &ref, const LlamaModel &candidate) {
  double total = 0;
  for_each_pass(candidate, ref, [&](const std::vector<float> &lp, size_t first) {
    const size_t positions = lp.size() / static_cast<size_t>(ref.vocab);
    for (size_t p = 0; p < positions; ++p) {
      const float *a = ref.log_probs.data() + (first + p) * ref.vocab,
                  *b = lp.data() + p * ref.vocab;
      double kl = 0;
      for (int64_t v = 0; v < ref.vocab; ++v)
        kl += std::exp(static_cast<double>(a[v])) * (static_cast<double>(a[v]) - b[v]);
      total += kl;
    }
  });
  return total / static_cast<double>(ref.windows * ref.seq_len);
}

std::string codec_of(const host::StageChain &chain, const std::string &key) {
  const host::OptionValue *v = chain[host::Slot::Transform].options.find(key);
  return v ? std::get<std::string>(v->value) : std::string();
}

} // namespace

std::vector<size_t> choose_allocation(const std::vector<std::vector<AllocationOption>> &tensors,
                                      double budget_bits) {
  std::vector<std::vector<size_t>> hulls;
  std::vector<size_t> step(tensors.size(), 0), chosen(tensors.size());
  double total = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    if (tensors[t].empty()) fail(NWC_E_INVALID_ARG, "allocation: a tensor has no options");
    for (const auto &o : tensors[t])
      if (!std::isfinite(o.bits) || !std::isfinite(o.cost) || o.bits < 0)
        fail(NWC_E_INVALID_ARG, "allocation: an option's bits or cost is not a finite number");
    hulls.push_back(lower_hull(tensors[t]));
    chosen[t] = hulls[t][0];
    total += tensors[t][chosen[t]].bits;
  }
  if (total > budget_bits + 1e-12 * std::fabs(budget_bits))
    fail(NWC_E_INVALID_ARG, "allocation: the fewest bits of every tensor (" +
                                std::to_string(total) + ") exceed the budget (" +
                                std::to_string(budget_bits) + ")");
  // Next hull step of each tensor, steepest cost drop per bit first (ties: lower tensor index).
  using Step = std::pair<double, size_t>; // (cost change per bit, tensor)
  auto later = [](const Step &a, const Step &b) {
    return a.first != b.first ? a.first > b.first : a.second > b.second;
  };
  std::priority_queue<Step, std::vector<Step>, decltype(later)> queue(later);
  auto push_next = [&](size_t t) {
    if (step[t] + 1 >= hulls[t].size()) return;
    const auto &a = tensors[t][hulls[t][step[t]]], &b = tensors[t][hulls[t][step[t] + 1]];
    queue.push({(b.cost - a.cost) / (b.bits - a.bits), t});
  };
  for (size_t t = 0; t < tensors.size(); ++t) push_next(t);
  while (!queue.empty()) {
    const size_t t = queue.top().second;
    queue.pop();
    const double more = tensors[t][hulls[t][step[t] + 1]].bits - tensors[t][chosen[t]].bits;
    // (A relative slack of 1e-12 for the order in which the sum was taken.)
    if (total + more > budget_bits + 1e-12 * std::fabs(budget_bits))
      continue; // this tensor's later steps cost more still
    total += more;
    chosen[t] = hulls[t][++step[t]];
    push_next(t);
  }
  return chosen;
}

std::vector<std::string> check_allocate_inputs(const Model &model, const host::Pipeline &pipeline,
                                               const host::Registry &registry) {
  const host::AllocateConfig &cfg = pipeline.allocate;
  const std::string where = cfg.where.empty() ? pipeline.file.string() : cfg.where;
  const nwc_option_spec *spec = host::codec_path_option(pipeline, registry);
  if (!spec)
    fail(NWC_E_INVALID_ARG, where + ": [allocate] needs a [transform] that names one codec file "
                                    "(nwc.transform.neural's codec); it chooses among codec files");
  std::vector<std::string> codecs{codec_of(pipeline.base, spec->key)};
  for (const auto &c : cfg.codecs) {
    if (!std::filesystem::is_regular_file(c))
      fail(NWC_E_INVALID_ARG, where + ": allocate.codecs: no such codec file " + c);
    if (std::find(codecs.begin(), codecs.end(), c) == codecs.end()) codecs.push_back(c);
  }
  if (model.arch.max_seq_len > 0 && cfg.seq_len > model.arch.max_seq_len)
    fail(NWC_E_INVALID_ARG, where + ": allocate.seq_len = " + std::to_string(cfg.seq_len) +
                                " exceeds the model's context of " +
                                std::to_string(model.arch.max_seq_len) + " tokens");
  return codecs;
}

Allocation allocate_by_sensitivity(const Model &model, const host::Pipeline &pipeline,
                                   const host::Registry &registry,
                                   const host::CompressSettings &settings,
                                   const std::vector<int32_t> &calib_tokens,
                                   const std::filesystem::path &scratch,
                                   const std::function<void(const std::string &)> &log) {
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  const host::AllocateConfig &cfg = pipeline.allocate;
  const std::string where = cfg.where.empty() ? pipeline.file.string() : cfg.where;
  Allocation out;
  out.codecs = check_allocate_inputs(model, pipeline, registry);
  const std::string key = host::codec_path_option(pipeline, registry)->key;

  Reference ref;
  ref.seq_len = cfg.seq_len;
  ref.vocab = model.arch.vocab_size;
  ref.windows =
      std::min<int64_t>(cfg.tokens, static_cast<int64_t>(calib_tokens.size())) / cfg.seq_len;
  if (ref.windows < 1)
    fail(NWC_E_INVALID_ARG,
         where + ": the calibration text has " + std::to_string(calib_tokens.size()) +
             " tokens; [allocate] needs at least seq_len = " + std::to_string(cfg.seq_len));
  ref.tokens.assign(calib_tokens.begin(), calib_tokens.begin() + ref.windows * ref.seq_len);
  const unsigned threads = host::resolve_threads(settings.threads);
  // LlamaModel sets LibTorch's and OpenBLAS's thread counts for the process: what runs after the
  // allocation (fine-tuning) gets the count it had before.
  struct RestoreThreads {
    unsigned n;
    ~RestoreThreads() { llama::configure_threads(n); }
  } restore{static_cast<unsigned>(torch::get_num_threads())};
  {
    LlamaModel original(model, 1);
    ref.log_probs.reserve(static_cast<size_t>(ref.windows * ref.seq_len * ref.vocab));
    for_each_pass(original, ref, [&](const std::vector<float> &lp, size_t) {
      ref.log_probs.insert(ref.log_probs.end(), lp.begin(), lp.end());
    });
  }

  // Every candidate codec on every tensor the base codec would code; other tensors keep their
  // chains and count with the bits they have.
  std::map<std::string, size_t> index; // tensor -> position in out.tensors
  double fixed_bits = 0, weights = 0;
  const fs::path tmp = scratch.string() + ".allocate.tmp";
  const ScratchFile remove_tmp(tmp); // also when a candidate fails
  host::CompressSettings s = settings;
  s.progress = {};
  s.embed_resources = false; // a copy of each candidate's codec would count as its header share
  std::vector<host::Pipeline> candidates;
  for (const auto &codec : out.codecs) {
    host::Pipeline p = pipeline;
    p.blockft.enabled = false;
    p.allocate.enabled = false;
    p.base[host::Slot::Transform].options.set(host::OptionValue{key, NWC_OPT_PATH, codec});
    candidates.push_back(std::move(p));
  }
  // A tensor can move when every candidate pipeline codes it with that candidate's codec: not
  // when an [[override]] of the file names its codec (even the base one).
  auto movable = [&](const std::string &name) {
    for (size_t c = 0; c < candidates.size(); ++c)
      if (codec_of(*candidates[c].chain_for(name), key) != out.codecs[c]) return false;
    return true;
  };
  for (size_t c = 0; c < out.codecs.size(); ++c) {
    const host::Pipeline &p = candidates[c];
    if (log) log("[allocate] coding with " + fs::path(out.codecs[c]).filename().string());
    host::compress_model(model, p, registry, tmp, s);
    const ContainerReader reader(tmp);
    const Model decoded = host::open_container_model(tmp, registry, settings.threads);
    std::vector<std::string> measured; // tensors whose KL at this codec is to be measured
    for (const auto &t : reader.manifest().tensors) {
      if (t.storage != "pipeline") continue;
      // Its streams and its share of the container's header and manifest, as `nwc bench` counts
      // the bits of the coded linears.
      const double t_bits = 8.0 * container_tensor_bytes(reader.manifest(), reader.file_size(), t);
      if (c == 0) weights += static_cast<double>(t.numel());
      if (!movable(t.name)) {
        if (c == 0) fixed_bits += t_bits;
        continue;
      }
      if (c == 0) {
        index[t.name] = out.tensors.size();
        out.tensors.push_back({t.name, out.codecs[0], t.numel(), {}, {}, 0});
      }
      out.tensors[index.at(t.name)].bits.push_back(t_bits);
      measured.push_back(t.name);
    }
    // Models with one tensor replaced are built in the calling thread (LlamaModel sets LibTorch's
    // thread count) and evaluated side by side, one LibTorch thread each, a batch at a time.
    for (size_t first = 0; first < measured.size(); first += threads) {
      const size_t n = std::min<size_t>(threads, measured.size() - first);
      std::vector<std::unique_ptr<LlamaModel>> models;
      for (size_t k = 0; k < n; ++k) {
        const std::string &name = measured[first + k];
        models.push_back(std::make_unique<LlamaModel>(
            with_replaced_tensors(model, {{name, decoded.find(name)->load()}}), 1));
      }
      std::vector<double> kl(n);
      parallel_for(static_cast<int64_t>(n), threads, [&](int64_t k) {
        kl[static_cast<size_t>(k)] = mean_kl(ref, *models[static_cast<size_t>(k)]);
      });
      for (size_t k = 0; k < n; ++k) out.tensors[index.at(measured[first + k])].kl.push_back(kl[k]);
    }
  }
  if (out.tensors.empty())
    fail(NWC_E_INVALID_ARG,
         where + ": [allocate] found no tensor coded with the base codec " + out.codecs[0]);

  std::vector<std::vector<AllocationOption>> options;
  for (const auto &a : out.tensors) {
    options.emplace_back();
    for (size_t c = 0; c < a.bits.size(); ++c) options.back().push_back({a.bits[c], a.kl[c]});
  }
  double fewest = fixed_bits;
  for (const auto &a : out.tensors) fewest += *std::min_element(a.bits.begin(), a.bits.end());
  if (fewest > cfg.target_bpw * weights) {
    std::ostringstream msg;
    msg << where << ": [allocate] target_bpw = " << cfg.target_bpw
        << " is below the fewest bits the candidate codecs reach (" << fewest / weights
        << " bits per coded weight)";
    fail(NWC_E_INVALID_ARG, msg.str());
  }
  const std::vector<size_t> chosen =
      choose_allocation(options, cfg.target_bpw * weights - fixed_bits);

  out.pipeline = pipeline;
  double bits = fixed_bits;
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    TensorAllocation &a = out.tensors[i];
    a.chosen = chosen[i];
    a.codec = out.codecs[a.chosen];
    bits += a.bits[a.chosen];
    if (a.chosen == 0) continue;
    host::OverrideRule rule;
    rule.match = {a.tensor};
    rule.where = where;
    host::StageSpec tf; // the codec alone, merged over whatever else applies to the tensor
    tf.plugin = pipeline.base[host::Slot::Transform].plugin;
    tf.options.set(host::OptionValue{key, NWC_OPT_PATH, a.codec});
    rule.stages[static_cast<size_t>(host::Slot::Transform)] = tf;
    out.pipeline.overrides.push_back(std::move(rule));
  }
  out.bits_per_weight = bits / weights;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

} // namespace nwc::runtime
