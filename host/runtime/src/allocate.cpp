#include "nwc/runtime/allocate.hpp"

#include "kl.hpp"
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
    const int64_t positions = static_cast<int64_t>(lp.size()) / ref.vocab;
    add_kl(total, ref.log_probs.data() + first * static_cast<size_t>(ref.vocab), lp.data(),
           positions, ref.vocab);
  });
  return total / static_cast<double>(ref.windows * ref.seq_len);
}

std::string codec_of(const host::StageChain &chain, const std::string &key) {
  const host::OptionValue *v = chain[host::Slot::Transform].options.find(key);
  return v ? std::get<std::string>(v->value) : std::string();
}

// The candidates as rules over the base chain: one per codec file of `codecs` (the base transform
// with that codec), then the [[allocate.candidate]]s.
std::vector<host::OverrideRule> candidate_rules(const host::Pipeline &pipeline,
                                                const host::Registry &registry) {
  std::vector<host::OverrideRule> rules;
  for (const auto &codec : pipeline.allocate.codecs) {
    host::OverrideRule rule;
    host::StageSpec tf = pipeline.base[host::Slot::Transform];
    tf.options.set(
        host::OptionValue{host::codec_path_option(pipeline, registry)->key, NWC_OPT_PATH, codec});
    rule.stages[static_cast<size_t>(host::Slot::Transform)] = std::move(tf);
    rules.push_back(std::move(rule));
  }
  rules.insert(rules.end(), pipeline.allocate.candidates.begin(),
               pipeline.allocate.candidates.end());
  return rules;
}

// Each candidate in words: a codec file's name, or the options a candidate changes
// ("quantizer.bits = 3"); the pipeline's own chain first.
std::vector<std::string> candidate_labels(const host::Pipeline &pipeline,
                                          const host::Registry &registry,
                                          const std::vector<host::OverrideRule> &rules) {
  const nwc_option_spec *spec = host::codec_path_option(pipeline, registry);
  const std::string key = spec ? spec->key : "";
  auto label = [&](const host::StageChain &chain, const host::StageChain &base) {
    const std::string codec = key.empty() ? "" : codec_of(chain, key);
    std::string words;
    if (!codec.empty() && codec != codec_of(base, key))
      words = std::filesystem::path(codec).filename().string();
    for (size_t i = 0; i < host::kSlotCount; ++i) {
      const host::StageSpec &a = chain.stages[i], &b = base.stages[i];
      std::string more;
      if (a.plugin != b.plugin) more = std::string(host::kSlotNames[i]) + " = " + a.plugin;
      for (const auto &v : a.options.items()) {
        if (i == static_cast<size_t>(host::Slot::Transform) && v.key == key) continue;
        const host::OptionValue *was = b.options.find(v.key);
        if (a.plugin == b.plugin && was && was->to_json() == v.to_json()) continue;
        more += (more.empty() ? "" : ", ") + std::string(host::kSlotNames[i]) + "." + v.key +
                " = " + v.to_json().dump();
      }
      if (!more.empty()) words += (words.empty() ? "" : ", ") + more;
    }
    return words;
  };
  std::vector<std::string> labels;
  const std::string own = key.empty() ? "" : codec_of(pipeline.base, key);
  labels.push_back(own.empty() ? "the pipeline's chain"
                               : std::filesystem::path(own).filename().string());
  for (const auto &rule : rules) {
    host::StageChain chain = pipeline.base;
    host::merge_stages(chain, rule);
    labels.push_back(label(chain, pipeline.base));
  }
  return labels;
}

// The unit a tensor is allocated in: itself, its decoder block ("model.layers.3.*": the name up to
// its first number) or its kind (that number as '*'). Names without a number stay alone.
std::string unit_name(const std::string &tensor, host::AllocateGroup group) {
  if (group == host::AllocateGroup::Tensor) return tensor;
  size_t pos = 0;
  while (pos < tensor.size()) { // a dot-separated component made of digits only
    const size_t end = std::min(tensor.find('.', pos), tensor.size());
    if (end > pos && std::all_of(tensor.begin() + static_cast<std::ptrdiff_t>(pos),
                                 tensor.begin() + static_cast<std::ptrdiff_t>(end),
                                 [](char ch) { return ch >= '0' && ch <= '9'; })) {
      if (group == host::AllocateGroup::Block) return tensor.substr(0, end) + ".*";
      return tensor.substr(0, pos) + "*" + tensor.substr(end);
    }
    pos = end + 1;
  }
  return tensor;
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

void check_allocate_inputs(const Model &model, const host::Pipeline &pipeline,
                           const host::Registry &registry) {
  const host::AllocateConfig &cfg = pipeline.allocate;
  const std::string where = cfg.where.empty() ? pipeline.file.string() : cfg.where;
  if (!cfg.codecs.empty() && !host::codec_path_option(pipeline, registry))
    fail(NWC_E_INVALID_ARG, where + ": allocate.codecs needs a [transform] that names one codec "
                                    "file (nwc.transform.neural's codec); it chooses among codec "
                                    "files");
  for (const auto &c : cfg.codecs)
    if (!std::filesystem::is_regular_file(c))
      fail(NWC_E_INVALID_ARG, where + ": allocate.codecs: no such codec file " + c);
  if (model.arch.max_seq_len > 0 && cfg.seq_len > model.arch.max_seq_len)
    fail(NWC_E_INVALID_ARG, where + ": allocate.seq_len = " + std::to_string(cfg.seq_len) +
                                " exceeds the model's context of " +
                                std::to_string(model.arch.max_seq_len) + " tokens");
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
  check_allocate_inputs(model, pipeline, registry);
  Allocation out;
  const std::vector<host::OverrideRule> rules = candidate_rules(pipeline, registry);
  out.candidates = candidate_labels(pipeline, registry, rules);

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

  // The pipeline as it is (candidate 0) and once per candidate, its rule merged over the base
  // chain so that the file's [[override]]s still apply over it: a slot that an override sets for
  // a tensor keeps the override's options, and a candidate that then changes nothing in a
  // tensor's chain is not an option for it.
  std::vector<host::Pipeline> pipelines{pipeline};
  pipelines[0].blockft.enabled = false;
  pipelines[0].allocate.enabled = false;
  for (const auto &rule : rules) {
    host::Pipeline p = pipelines[0];
    host::merge_stages(p.base, rule);
    pipelines.push_back(std::move(p));
  }

  // Each candidate codes the model once; every unit (a tensor or a group) whose chain it changes
  // gets its bits and its KL, measured before the next candidate is coded (one decoded model at a
  // time in memory).
  const fs::path tmp = scratch.string() + ".allocate.tmp";
  const ScratchFile remove_tmp(tmp); // also when a candidate fails
  host::CompressSettings s = settings;
  s.progress = {};
  s.embed_resources = false; // a copy of each candidate's codec would count as its header share
  // Fine-tuning moves no codes, but it stores row gains where the chunker keeps no row scales
  // (GPTQ's groups, for one): their bits count as fine-tuning will write them.
  s.unit_row_gains = pipeline.blockft.enabled;
  std::map<std::string, size_t> unit_index; // unit name -> position in out.tensors
  double weights = 0;
  for (size_t c = 0; c < pipelines.size(); ++c) {
    if (log) log("[allocate] coding with " + out.candidates[c]);
    host::compress_model(model, pipelines[c], registry, tmp, s);
    const ContainerReader reader(tmp);
    const Model coded = host::open_container_model(tmp, registry, settings.threads);
    // Its streams and its share of the container's header and manifest, as `nwc bench` counts
    // the bits of the coded linears.
    std::map<std::string, double> bits;
    for (const auto &t : reader.manifest().tensors) {
      if (t.storage != "pipeline") continue;
      bits[t.name] = 8.0 * container_tensor_bytes(reader.manifest(), reader.file_size(), t);
      if (c > 0) continue;
      const auto [it, added] = unit_index.emplace(unit_name(t.name, cfg.group), out.tensors.size());
      if (added) out.tensors.push_back({it->first, {}, 0, {}, {}, {}, 0});
      out.tensors[it->second].members.push_back(t.name);
      out.tensors[it->second].weights += t.numel();
      weights += static_cast<double>(t.numel());
    }
    std::vector<size_t> measured; // units for which candidate c is an option
    for (size_t u = 0; u < out.tensors.size(); ++u) {
      TensorAllocation &a = out.tensors[u];
      bool option = c == 0;
      for (size_t m = 0; m < a.members.size() && !option; ++m)
        option = pipelines[c].chain_for(a.members[m])->to_json() !=
                 pipelines[0].chain_for(a.members[m])->to_json();
      if (!option) continue;
      double b = 0;
      for (const auto &m : a.members) {
        const auto hit = bits.find(m);
        if (hit == bits.end())
          fail(NWC_E_INVALID_ARG, where + ": candidate " + out.candidates[c] + " does not code " +
                                      m + ", which the pipeline codes");
        b += hit->second;
      }
      a.options.push_back(c);
      a.bits.push_back(b);
      measured.push_back(u);
    }
    // Models with one unit replaced are built in the calling thread (LlamaModel sets LibTorch's
    // thread count) and evaluated side by side, one LibTorch thread each, a batch at a time.
    for (size_t first = 0; first < measured.size(); first += threads) {
      const size_t n = std::min<size_t>(threads, measured.size() - first);
      std::vector<std::unique_ptr<LlamaModel>> models;
      for (size_t k = 0; k < n; ++k) {
        std::map<std::string, std::vector<float>> replaced;
        for (const auto &m : out.tensors[measured[first + k]].members)
          replaced[m] = coded.find(m)->load();
        models.push_back(
            std::make_unique<LlamaModel>(with_replaced_tensors(model, std::move(replaced)), 1));
      }
      std::vector<double> kl(n);
      parallel_for(static_cast<int64_t>(n), threads, [&](int64_t k) {
        kl[static_cast<size_t>(k)] = mean_kl(ref, *models[static_cast<size_t>(k)]);
      });
      for (size_t k = 0; k < n; ++k) out.tensors[measured[first + k]].kl.push_back(kl[k]);
    }
  }
  if (out.tensors.empty()) fail(NWC_E_INVALID_ARG, where + ": [allocate] found no coded tensor");
  if (std::all_of(out.tensors.begin(), out.tensors.end(),
                  [](const TensorAllocation &a) { return a.options.size() == 1; }))
    fail(NWC_E_INVALID_ARG, where + ": no candidate of [allocate] changes the chain of a tensor "
                                    "it could move (every one is pinned by an [[override]])");

  std::vector<std::vector<AllocationOption>> options;
  for (const auto &a : out.tensors) {
    options.emplace_back();
    for (size_t o = 0; o < a.options.size(); ++o) options.back().push_back({a.bits[o], a.kl[o]});
  }
  double fewest = 0;
  for (const auto &a : out.tensors) fewest += *std::min_element(a.bits.begin(), a.bits.end());
  if (fewest > cfg.target_bpw * weights) {
    std::ostringstream msg;
    msg << where << ": [allocate] target_bpw = " << cfg.target_bpw
        << " is below the fewest bits the candidates reach (" << fewest / weights
        << " bits per coded weight)";
    fail(NWC_E_INVALID_ARG, msg.str());
  }
  const std::vector<size_t> chosen = choose_allocation(options, cfg.target_bpw * weights);

  // The choice as [[override]] rules before the file's own, so that the file's rules apply over
  // them exactly as they did over the candidate's pipeline when it was measured.
  out.pipeline = pipeline;
  std::vector<host::OverrideRule> moved;
  double total = 0;
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    TensorAllocation &a = out.tensors[i];
    a.chosen = chosen[i];
    total += a.bits[a.chosen];
    if (a.chosen == 0) continue;
    host::OverrideRule rule = rules[a.options[a.chosen] - 1];
    rule.match = a.members;
    rule.where = where;
    moved.push_back(std::move(rule));
  }
  out.pipeline.overrides.insert(out.pipeline.overrides.begin(), moved.begin(), moved.end());
  out.bits_per_weight = total / weights;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

} // namespace nwc::runtime
