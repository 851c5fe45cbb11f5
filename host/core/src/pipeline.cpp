#include "nwc/host/pipeline.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/host/defaults.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

namespace nwc::host {

namespace {

// Collects context for messages: "file:line:column: ".
struct Where {
  std::string file;
  std::string at(const toml::source_region &r) const {
    return file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
  }
};

[[noreturn]] void bad(const std::string &where, const std::string &msg) {
  fail(NWC_E_INVALID_OPTION, where + ": " + msg);
}

const char *toml_type_name(const toml::node &n) {
  switch (n.type()) {
  case toml::node_type::string:
    return "string";
  case toml::node_type::integer:
    return "int";
  case toml::node_type::floating_point:
    return "float";
  case toml::node_type::boolean:
    return "bool";
  case toml::node_type::array:
    return "array";
  case toml::node_type::table:
    return "table";
  default:
    return "date/time";
  }
}

std::string resolve_path(const std::string &value, const std::filesystem::path &file) {
  std::filesystem::path p(value);
  if (p.is_absolute() || value.empty()) return value;
  return (file.parent_path() / p).lexically_normal().string();
}

// Converts a TOML value to an option value of the spec's type.
// `key` names the value in messages ("quantizer.bits"); the option keeps the spec's key.
OptionValue convert(const toml::node &n, const nwc_option_spec &spec, const std::string &where,
                    const std::string &key, const std::filesystem::path &file) {
  OptionValue v;
  v.key = spec.key;
  v.type = spec.type;
  auto expected = [&](const char *what) {
    bad(where, key + ": expected " + std::string(what) + ", got " + toml_type_name(n));
  };
  switch (spec.type) {
  case NWC_OPT_BOOL:
    if (!n.is_boolean()) expected("a bool");
    v.value = static_cast<int64_t>(n.as_boolean()->get());
    break;
  case NWC_OPT_INT:
    if (!n.is_integer()) expected("an int");
    v.value = n.as_integer()->get();
    break;
  case NWC_OPT_FLOAT:
    if (n.is_integer())
      v.value = static_cast<double>(n.as_integer()->get());
    else if (n.is_floating_point())
      v.value = n.as_floating_point()->get();
    else
      expected("a number");
    break;
  case NWC_OPT_STRING:
  case NWC_OPT_ENUM:
    if (!n.is_string()) expected("a string");
    v.value = n.as_string()->get();
    break;
  case NWC_OPT_PATH:
    if (!n.is_string()) expected("a path string");
    v.value = resolve_path(n.as_string()->get(), file);
    break;
  case NWC_OPT_INT_LIST: {
    if (!n.is_array()) expected("an array of ints");
    std::vector<int64_t> l;
    for (auto &e : *n.as_array()) {
      if (!e.is_integer()) expected("an array of ints");
      l.push_back(e.as_integer()->get());
    }
    v.value = std::move(l);
    break;
  }
  case NWC_OPT_FLOAT_LIST: {
    if (!n.is_array()) expected("an array of numbers");
    std::vector<double> l;
    for (auto &e : *n.as_array()) {
      if (e.is_integer())
        l.push_back(static_cast<double>(e.as_integer()->get()));
      else if (e.is_floating_point())
        l.push_back(e.as_floating_point()->get());
      else
        expected("an array of numbers");
    }
    v.value = std::move(l);
    break;
  }
  default:
    bad(where, key + ": option has an unsupported type");
  }
  return v;
}

std::vector<std::string> string_list(const toml::node &n, const std::string &where,
                                     const std::string &key) {
  std::vector<std::string> out;
  if (n.is_string()) {
    out.push_back(n.as_string()->get());
    return out;
  }
  if (!n.is_array()) bad(where, key + ": expected a string or an array of strings");
  for (auto &e : *n.as_array()) {
    if (!e.is_string()) bad(where, key + ": expected an array of strings");
    out.push_back(e.as_string()->get());
  }
  return out;
}

// Reads one stage table ({plugin = "...", options...}); when `base` is given, the plugin may be
// omitted and options are merged over base's.
StageSpec read_stage(const toml::table &t, Slot slot, const Registry &reg, const Where &w,
                     const StageSpec *base, const std::filesystem::path &file) {
  const char *slot_name = kSlotNames[static_cast<size_t>(slot)];
  StageSpec spec;
  if (base) spec = *base;
  if (auto *p = t.get("plugin")) {
    if (!p->is_string())
      bad(w.at(p->source()), std::string(slot_name) + ".plugin: expected a string");
    std::string id = p->as_string()->get();
    if (base && id != base->plugin) spec.options = OptionValues(); // options belong to a plugin
    spec.plugin = id;
  }
  if (spec.plugin.empty())
    bad(w.at(t.source()), std::string("[") + slot_name + "] needs plugin = \"<id>\"");
  const Plugin *plugin = reg.find(spec.plugin);
  const std::string plugin_where = w.at(t.get("plugin") ? t.get("plugin")->source() : t.source());
  if (!plugin) {
    std::vector<std::string> ids;
    for (const auto &q : reg.plugins()) ids.push_back(q->id);
    std::string hint = did_you_mean(spec.plugin, ids);
    bad(plugin_where, std::string(slot_name) + ".plugin: unknown plugin id '" + spec.plugin + "'" +
                          (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                          "; see `nwc plugins list`");
  }
  if (plugin->kind != slot_kind(slot))
    bad(plugin_where, std::string(slot_name) + ".plugin: " + spec.plugin + " is " +
                          kind_in_words(plugin->kind) + ", not " + kind_in_words(slot_kind(slot)));
  for (auto &&[k, node] : t) {
    std::string key(k.str());
    if (key == "plugin") continue;
    std::string where = w.at(k.source());
    const nwc_option_spec *os = plugin->option(key);
    if (!os) {
      std::string hint = did_you_mean(key, plugin->option_keys());
      bad(where, std::string(slot_name) + "." + key + ": unknown option of " + spec.plugin +
                     (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
    }
    spec.options.set(convert(node, *os, where, std::string(slot_name) + "." + key, file));
    // Range, choices: checked per key so that the message points at it.
    OptionValues one;
    one.set(*spec.options.find(key));
    std::string why = validate_options(*plugin, one);
    if (!why.empty() && why.find("is required") == std::string::npos)
      bad(where, std::string(slot_name) + "." + key + ": " + why);
  }
  return spec;
}

void check_keys(const toml::table &t, const std::vector<std::string> &allowed, const Where &w,
                const std::string &table) {
  for (auto &&[k, node] : t) {
    std::string key(k.str());
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string hint = did_you_mean(key, allowed);
    bad(w.at(k.source()), table + "." + key + ": unknown key" +
                              (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
  }
}

} // namespace

uint32_t slot_kind(Slot s) {
  switch (s) {
  case Slot::Chunker:
    return NWC_KIND_CHUNKER;
  case Slot::Transform:
    return NWC_KIND_TRANSFORM;
  case Slot::Quantizer:
    return NWC_KIND_QUANTIZER;
  case Slot::Entropy:
    return NWC_KIND_ENTROPY_CODER;
  case Slot::Compensator:
    return NWC_KIND_COMPENSATOR;
  case Slot::Rotation:
    return NWC_KIND_ROTATION;
  }
  return 0;
}

nlohmann::json StageChain::to_json() const {
  auto j = nlohmann::json::object();
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].plugin.empty()) continue;
    j[kSlotNames[i]] = {{"plugin", stages[i].plugin}, {"options", stages[i].options.to_json()}};
  }
  return j;
}

bool glob_match(const std::string &pattern, const std::string &name) {
  // Iterative matcher with backtracking to the last '*': linear in practice, no recursion.
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string validate_chain(const StageChain &chain, const Registry &registry) {
  for (size_t i = 0; i < chain.stages.size(); ++i) {
    const auto &s = chain.stages[i];
    auto slot = static_cast<Slot>(i);
    if (s.plugin.empty()) {
      if (slot == Slot::Transform || slot == Slot::Compensator || slot == Slot::Rotation) continue;
      return std::string("[") + kSlotNames[i] + "] is required";
    }
    const Plugin *p = registry.find(s.plugin);
    if (!p) return std::string(kSlotNames[i]) + ": plugin " + s.plugin + " is not installed";
    if (p->kind != slot_kind(slot))
      return std::string(kSlotNames[i]) + ": " + s.plugin + " is " + kind_in_words(p->kind);
    std::string why = validate_options(*p, s.options);
    if (!why.empty()) return std::string(kSlotNames[i]) + ": " + why;
  }
  return {};
}

void merge_stages(StageChain &chain, const OverrideRule &rule) {
  for (size_t i = 0; i < rule.stages.size(); ++i) {
    if (!rule.stages[i]) continue;
    const StageSpec &o = *rule.stages[i];
    if (o.plugin != chain.stages[i].plugin)
      chain.stages[i] = o;
    else
      for (const auto &v : o.options.items()) chain.stages[i].options.set(v);
  }
}

std::optional<StageChain> Pipeline::chain_for(const std::string &tensor_name) const {
  bool selected = false;
  for (const auto &pat : select) selected = selected || glob_match(pat, tensor_name);
  for (const auto &pat : exclude)
    if (glob_match(pat, tensor_name)) selected = false;
  StageChain chain = base;
  for (const auto &rule : overrides) {
    bool hit = false;
    for (const auto &pat : rule.match) hit = hit || glob_match(pat, tensor_name);
    if (!hit) continue;
    if (rule.skip) {
      selected = false;
      continue;
    }
    selected = true; // an override names tensors explicitly: they are coded
    merge_stages(chain, rule);
  }
  if (!selected) return std::nullopt;
  if (registry) {
    std::string why = validate_chain(chain, *registry);
    if (!why.empty())
      fail(NWC_E_INVALID_OPTION, file.string() + ": tensor " + tensor_name + ": " + why);
  }
  return chain;
}

bool Pipeline::levels_for(const std::string &tensor_name) const {
  bool on = levels.enabled;
  for (const auto &rule : overrides) {
    if (!rule.levels) continue;
    for (const auto &pat : rule.match)
      if (glob_match(pat, tensor_name)) {
        on = levels.enabled && *rule.levels;
        break;
      }
  }
  return on;
}

Pipeline load_pipeline(const std::filesystem::path &file, const Registry &registry) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(NWC_E_IO, file.string() + ": cannot read pipeline file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_pipeline(ss.str(), file, registry);
}

namespace {

// [pipeline]: name, method, select, exclude, unselected, stream_columns.
void read_pipeline_table(const toml::node &p, const Where &w, Pipeline &pl) {
  if (!p.is_table()) bad(w.at(p.source()), "pipeline: expected a table");
  const auto &t = *p.as_table();
  check_keys(t, {"name", "method", "select", "exclude", "unselected", "stream_columns"}, w,
             "pipeline");
  if (auto *n = t.get("name")) {
    if (!n->is_string()) bad(w.at(n->source()), "pipeline.name: expected a string");
    pl.name = n->as_string()->get();
  }
  if (auto *n = t.get("method")) {
    if (!n->is_string()) bad(w.at(n->source()), "pipeline.method: expected a string");
    pl.method = n->as_string()->get();
  }
  if (auto *n = t.get("select")) pl.select = string_list(*n, w.at(n->source()), "pipeline.select");
  if (auto *n = t.get("exclude"))
    pl.exclude = string_list(*n, w.at(n->source()), "pipeline.exclude");
  if (auto *n = t.get("unselected")) {
    const std::string v = n->is_string() ? n->as_string()->get() : "";
    if (v != "raw" && v != "zstd" && v != "zstd-f16")
      bad(w.at(n->source()), "pipeline.unselected: expected \"raw\", \"zstd\" or \"zstd-f16\"");
    pl.unselected = v;
  }
  if (auto *n = t.get("stream_columns")) {
    const auto v = n->value<int64_t>();
    if (!n->is_integer() || !v || *v < 0 || *v > (int64_t{1} << 24))
      bad(w.at(n->source()), "pipeline.stream_columns: expected an integer in [0, 16777216]");
    pl.stream_columns = *v;
  }
}

// [calibration]: mode ("original" | "sequential"), text (a path relative to the pipeline file),
// tokens, seq_len.
void read_calibration_table(const toml::node &c, const Where &w, Pipeline &pl) {
  if (!c.is_table()) bad(w.at(c.source()), "calibration: expected a table");
  const auto &t = *c.as_table();
  check_keys(t, {"mode", "text", "tokens", "seq_len"}, w, "calibration");
  if (auto *n = t.get("mode")) {
    const auto v = n->value<std::string>();
    if (!n->is_string() || (*v != "original" && *v != "sequential"))
      bad(w.at(n->source()), "calibration.mode: expected \"original\" or \"sequential\"");
    pl.calibration_mode =
        *v == "sequential" ? CalibrationMode::Sequential : CalibrationMode::Original;
  }
  if (auto *n = t.get("text")) {
    if (!n->is_string()) bad(w.at(n->source()), "calibration.text: expected a path string");
    pl.calibration["text"] = resolve_path(n->as_string()->get(), pl.file);
  }
  for (const char *k : {"tokens", "seq_len"})
    if (auto *n = t.get(k)) {
      if (!n->is_integer() || n->as_integer()->get() <= 0)
        bad(w.at(n->source()), std::string("calibration.") + k + ": expected a positive int");
      pl.calibration[k] = n->as_integer()->get();
    }
}

// [levels]: source = "hessian", fractions (1 to 15 numbers in [0, 1] adding up to at most 1).
void read_levels_table(const toml::node &lv, const Where &w, Pipeline &pl) {
  if (!lv.is_table()) bad(w.at(lv.source()), "levels: expected a table");
  const auto &t = *lv.as_table();
  check_keys(t, {"source", "fractions"}, w, "levels");
  pl.levels.enabled = true;
  pl.levels.where = w.at(lv.source());
  pl.levels.fractions = {0.001, 0.01, 0.1};
  if (auto *n = t.get("source"))
    if (!n->is_string() || n->as_string()->get() != "hessian")
      bad(w.at(n->source()), "levels.source: expected \"hessian\"");
  auto *n = t.get("fractions");
  if (!n) return;
  if (!n->is_array() || n->as_array()->empty() || n->as_array()->size() > 15)
    bad(w.at(n->source()), "levels.fractions: expected 1 to 15 numbers in [0, 1]");
  pl.levels.fractions.clear();
  double total = 0;
  for (auto &e : *n->as_array()) {
    double v = e.is_integer()          ? static_cast<double>(e.as_integer()->get())
               : e.is_floating_point() ? e.as_floating_point()->get()
                                       : -1.0;
    if (!(v >= 0 && v <= 1)) bad(w.at(e.source()), "levels.fractions: expected numbers in [0, 1]");
    total += v;
    pl.levels.fractions.push_back(v);
  }
  if (total > 1.0) bad(w.at(n->source()), "levels.fractions: the fractions add up to more than 1");
}

// [importance]: source = "hessian" (the only source; the key may be left out).
void read_importance_table(const toml::node &im, const Where &w, Pipeline &pl) {
  if (!im.is_table()) bad(w.at(im.source()), "importance: expected a table");
  const auto &t = *im.as_table();
  check_keys(t, {"source"}, w, "importance");
  pl.importance.enabled = true;
  pl.importance.where = w.at(im.source());
  if (auto *n = t.get("source"))
    if (!n->is_string() || n->as_string()->get() != "hessian")
      bad(w.at(n->source()), "importance.source: expected \"hessian\"");
}

// [blockft]: epochs, lr, batch, sequences, validation, seq_len, inputs, e2e_epochs, e2e_lr,
// e2e_sequences, e2e_embeddings, seed.
void read_blockft_table(const toml::node &bf, const Where &w, Pipeline &pl) {
  if (!bf.is_table()) bad(w.at(bf.source()), "blockft: expected a table");
  const auto &t = *bf.as_table();
  check_keys(t,
             {"epochs", "lr", "batch", "sequences", "validation", "seq_len", "inputs", "e2e_epochs",
              "e2e_lr", "e2e_sequences", "e2e_embeddings", "seed"},
             w, "blockft");
  pl.blockft.enabled = true;
  for (auto [key, target] : {std::pair<const char *, int64_t *>{"epochs", &pl.blockft.epochs},
                             {"batch", &pl.blockft.batch},
                             {"sequences", &pl.blockft.sequences},
                             {"validation", &pl.blockft.validation},
                             {"seq_len", &pl.blockft.seq_len},
                             {"e2e_epochs", &pl.blockft.e2e_epochs},
                             {"e2e_sequences", &pl.blockft.e2e_sequences},
                             {"seed", &pl.blockft.seed}})
    if (auto *n = t.get(key)) {
      const bool zero_ok = std::string(key) == "epochs" || std::string(key) == "e2e_epochs" ||
                           std::string(key) == "seed";
      if (!n->is_integer() || n->as_integer()->get() < (zero_ok ? 0 : 1) ||
          n->as_integer()->get() > 1000000)
        bad(w.at(n->source()),
            std::string("blockft.") + key +
                (zero_ok ? ": expected a non-negative int" : ": expected a positive int"));
      *target = n->as_integer()->get();
    }
  for (auto [key, target] :
       {std::pair<const char *, double *>{"lr", &pl.blockft.lr}, {"e2e_lr", &pl.blockft.e2e_lr}})
    if (auto *n = t.get(key)) {
      double v = n->is_floating_point() ? n->as_floating_point()->get()
                 : n->is_integer()      ? static_cast<double>(n->as_integer()->get())
                                        : -1.0;
      if (!(v > 0 && v < 1))
        bad(w.at(n->source()), std::string("blockft.") + key + ": expected a number in (0, 1)");
      *target = v;
    }
  if (auto *n = t.get("inputs")) {
    const std::string v = n->is_string() ? n->as_string()->get() : "";
    if (v != "original" && v != "coded")
      bad(w.at(n->source()), "blockft.inputs: expected \"original\" or \"coded\"");
    pl.blockft.coded_inputs = v == "coded";
  }
  if (auto *n = t.get("e2e_embeddings")) {
    if (!n->is_boolean()) bad(w.at(n->source()), "blockft.e2e_embeddings: expected true or false");
    pl.blockft.e2e_embeddings = n->as_boolean()->get();
    if (pl.blockft.e2e_embeddings && pl.blockft.e2e_epochs == 0)
      bad(w.at(n->source()), "blockft.e2e_embeddings: needs e2e_epochs > 0 (the stage that trains "
                             "them)");
  }
}

// [allocate]: codecs (paths, relative to the pipeline file), group, target_bpw, tokens, seq_len;
// its [[allocate.candidate]] tables are read with the overrides (read_allocate_candidates), over
// the base chain. With codecs, the base transform must name a codec file (checked by the
// allocation, nwc/runtime/allocate.hpp).
void read_allocate_table(const toml::node &al, const Where &w, Pipeline &pl) {
  if (!al.is_table()) bad(w.at(al.source()), "allocate: expected a table");
  const auto &t = *al.as_table();
  check_keys(t, {"codecs", "candidate", "group", "target_bpw", "tokens", "seq_len"}, w, "allocate");
  AllocateConfig &c = pl.allocate;
  c.enabled = true;
  c.where = w.at(al.source());
  auto *codecs = t.get("codecs");
  if (!codecs && !t.get("candidate"))
    bad(c.where, "allocate: needs codecs = [\"<codec file>\", ...] or [[allocate.candidate]] "
                 "tables (the choices besides the pipeline's own chain)");
  if (codecs) {
    for (const auto &name : string_list(*codecs, w.at(codecs->source()), "allocate.codecs"))
      c.codecs.push_back(resolve_path(name, pl.file));
    if (c.codecs.empty())
      bad(w.at(codecs->source()), "allocate.codecs: expected at least one codec file");
  }
  if (auto *g = t.get("group")) {
    const std::string v = g->is_string() ? g->as_string()->get() : "";
    if (v == "tensor")
      c.group = AllocateGroup::Tensor;
    else if (v == "block")
      c.group = AllocateGroup::Block;
    else if (v == "kind")
      c.group = AllocateGroup::Kind;
    else
      bad(w.at(g->source()), "allocate.group: expected \"tensor\", \"block\" or \"kind\"");
  }
  auto *target = t.get("target_bpw");
  const double v = !target                       ? -1.0
                   : target->is_floating_point() ? target->as_floating_point()->get()
                   : target->is_integer()        ? static_cast<double>(target->as_integer()->get())
                                                 : -1.0;
  if (!(v > 0 && v <= 64))
    bad(target ? w.at(target->source()) : c.where,
        "allocate.target_bpw: expected bits per coded weight in (0, 64]");
  c.target_bpw = v;
  for (auto [key, out] :
       {std::pair<const char *, int64_t *>{"tokens", &c.tokens}, {"seq_len", &c.seq_len}})
    if (auto *n = t.get(key)) {
      if (!n->is_integer() || n->as_integer()->get() < 2 || n->as_integer()->get() > 100000000)
        bad(w.at(n->source()),
            std::string("allocate.") + key + ": expected an int in [2, 100000000]");
      *out = n->as_integer()->get();
    }
  if (c.tokens < c.seq_len)
    bad(c.where, "allocate.tokens: expected at least seq_len (" + std::to_string(c.seq_len) +
                     ") tokens, one window");
}

// [awq]: bits, group, grid, duo_scaling, clip, max_shrink, clip_grid, clip_tokens; bits and group
// are remembered as given (the base chain supplies them otherwise, default_awq_grid).
void read_awq_table(const toml::node &aw, const Where &w, Pipeline &pl, bool &bits_given,
                    bool &group_given) {
  if (!aw.is_table()) bad(w.at(aw.source()), "awq: expected a table");
  const auto &t = *aw.as_table();
  check_keys(
      t, {"bits", "group", "grid", "duo_scaling", "clip", "max_shrink", "clip_grid", "clip_tokens"},
      w, "awq");
  AwqConfig &c = pl.awq;
  c.enabled = true;
  c.where = w.at(aw.source());
  struct IntKey {
    const char *key;
    int64_t *target, lo, hi;
  };
  for (const IntKey &k :
       {IntKey{"bits", &c.bits, 1, 8}, IntKey{"group", &c.group, 1, 1 << 24},
        IntKey{"grid", &c.grid, 1, 1000}, IntKey{"clip_grid", &c.clip_grid, 1, 1000},
        IntKey{"clip_tokens", &c.clip_tokens, 1, int64_t{1} << 30}})
    if (auto *n = t.get(k.key)) {
      const auto v = n->value<int64_t>();
      if (!n->is_integer() || *v < k.lo || *v > k.hi)
        bad(w.at(n->source()), std::string("awq.") + k.key + ": expected an integer in [" +
                                   std::to_string(k.lo) + ", " + std::to_string(k.hi) + "]");
      *k.target = *v;
    }
  for (auto [key, target] :
       {std::pair<const char *, bool *>{"duo_scaling", &c.duo_scaling}, {"clip", &c.clip}})
    if (auto *n = t.get(key)) {
      if (!n->is_boolean()) bad(w.at(n->source()), std::string("awq.") + key + ": expected a bool");
      *target = n->as_boolean()->get();
    }
  if (auto *n = t.get("max_shrink")) {
    const double v = n->is_floating_point() ? n->as_floating_point()->get()
                     : n->is_integer()      ? static_cast<double>(n->as_integer()->get())
                                            : -1.0;
    if (!(v >= 0 && v < 1)) bad(w.at(n->source()), "awq.max_shrink: expected a number in [0, 1)");
    c.max_shrink = v;
  }
  bits_given = t.get("bits") != nullptr;
  group_given = t.get("group") != nullptr;
}

// An int option of a base stage when that stage is `plugin`: as set, or the schema default.
std::optional<int64_t> base_int_option(const Pipeline &pl, const Registry &registry, Slot slot,
                                       const char *plugin, const char *key) {
  const StageSpec &st = pl.base[slot];
  if (st.plugin != plugin) return std::nullopt;
  if (const OptionValue *v = st.options.find(key))
    if (const auto *i = std::get_if<int64_t>(&v->value)) return *i;
  const Plugin *p = registry.find(plugin);
  const nwc_option_spec *spec = p ? p->option(key) : nullptr;
  if (!spec || spec->type != NWC_OPT_INT) return std::nullopt;
  const OptionValue d = option_from_c(key, spec->default_value);
  if (const auto *i = std::get_if<int64_t>(&d.value)) return *i;
  return std::nullopt;
}

// [awq] without bits or group: the coder's, when the base chain is nwc.quant.uniform /
// nwc.chunk.group.
void default_awq_grid(Pipeline &pl, const Registry &registry, bool bits_given, bool group_given) {
  if (!bits_given)
    if (auto b = base_int_option(pl, registry, Slot::Quantizer, "nwc.quant.uniform", "bits"))
      pl.awq.bits = std::clamp<int64_t>(*b, 1, 8);
  if (!group_given)
    if (auto g = base_int_option(pl, registry, Slot::Chunker, "nwc.chunk.group", "group"))
      pl.awq.group = *g > 0 ? *g : int64_t{1} << 24; // 0: whole rows, one (shorter) group each
}

// The base chain: one table per slot ([chunker] ... [compensator]), checked to be complete unless
// the pipeline codes nothing.
void read_base_chain(const toml::table &root, const Where &w, const Registry &registry,
                     Pipeline &pl) {
  const std::filesystem::path &file = pl.file;
  for (size_t i = 0; i < kSlotNames.size(); ++i) {
    auto *n = root.get(kSlotNames[i]);
    if (!n) continue;
    if (!n->is_table()) bad(w.at(n->source()), std::string(kSlotNames[i]) + ": expected a table");
    pl.base.stages[i] =
        read_stage(*n->as_table(), static_cast<Slot>(i), registry, w, nullptr, file);
    if (static_cast<Slot>(i) == Slot::Rotation) pl.rotation_where = w.at(n->source());
  }
  if (pl.base[Slot::Compensator].plugin.empty() && registry.find(kDefaultCompensator))
    pl.base[Slot::Compensator].plugin = kDefaultCompensator;
  // A pipeline that selects nothing (select = []) stores every tensor the `unselected` way and
  // needs no stages.
  const bool codes_nothing = pl.select.empty() && !root.get("override");
  for (Slot s : {Slot::Chunker, Slot::Quantizer, Slot::Entropy})
    if (!codes_nothing && pl.base[s].plugin.empty())
      bad(file.string(), std::string("missing [") + kSlotNames[static_cast<size_t>(s)] +
                             "] table (every pipeline needs a chunker, a quantizer and an entropy "
                             "coder)");
  // Required options without defaults must be set in the base chain.
  std::string why = codes_nothing ? "" : validate_chain(pl.base, registry);
  if (!why.empty()) bad(file.string(), why);
}

// The per-slot tables of an [[override]] or an [[allocate.candidate]], merged over the base chain
// (which must stay valid).
void read_rule_stages(const toml::table &t, const Where &w, const Registry &registry,
                      const Pipeline &pl, const std::string &table, OverrideRule &rule) {
  for (size_t i = 0; i < kSlotNames.size(); ++i) {
    auto *n = t.get(kSlotNames[i]);
    if (!n) continue;
    if (!n->is_table()) bad(w.at(n->source()), table + "." + kSlotNames[i] + ": expected a table");
    const StageSpec *base = pl.base.stages[i].plugin.empty() ? nullptr : &pl.base.stages[i];
    rule.stages[i] = read_stage(*n->as_table(), static_cast<Slot>(i), registry, w, base, pl.file);
  }
  StageChain merged = pl.base;
  merge_stages(merged, rule);
  std::string err = validate_chain(merged, registry);
  if (!err.empty()) bad(rule.where, table + ": " + err);
}

// One [[override]] table: match, skip, levels, per-slot tables.
OverrideRule read_override(const toml::table &t, const Where &w, const Registry &registry,
                           const Pipeline &pl) {
  OverrideRule rule;
  rule.where = w.at(t.source());
  std::vector<std::string> allowed{"match", "skip", "levels"};
  for (auto *s : kSlotNames) allowed.emplace_back(s);
  check_keys(t, allowed, w, "override");
  auto *m = t.get("match");
  if (!m) bad(rule.where, "override: needs match = \"<pattern>\"");
  rule.match = string_list(*m, w.at(m->source()), "override.match");
  if (auto *s = t.get("skip")) {
    if (!s->is_boolean()) bad(w.at(s->source()), "override.skip: expected a bool");
    rule.skip = s->as_boolean()->get();
  }
  if (auto *lv = t.get("levels")) {
    if (!lv->is_boolean()) bad(w.at(lv->source()), "override.levels: expected a bool");
    if (!pl.levels.enabled)
      bad(w.at(lv->source()), "override.levels: the pipeline has no [levels] table");
    rule.levels = lv->as_boolean()->get();
  }
  read_rule_stages(t, w, registry, pl, "override", rule);
  return rule;
}

// [[allocate.candidate]] tables: per-slot options only, each changing the chain somewhere.
void read_allocate_candidates(const toml::table &al, const Where &w, const Registry &registry,
                              Pipeline &pl) {
  auto *c = al.get("candidate");
  if (!c) return;
  if (!c->is_array_of_tables())
    bad(w.at(c->source()), "allocate.candidate: expected [[allocate.candidate]] tables");
  for (auto &elem : *c->as_array()) {
    const toml::table &t = *elem.as_table();
    OverrideRule rule;
    rule.where = w.at(t.source());
    check_keys(t, std::vector<std::string>(kSlotNames.begin(), kSlotNames.end()), w,
               "allocate.candidate");
    read_rule_stages(t, w, registry, pl, "allocate.candidate", rule);
    StageChain merged = pl.base;
    merge_stages(merged, rule);
    if (merged.to_json() == pl.base.to_json())
      bad(rule.where, "allocate.candidate: changes nothing in the pipeline's chain; expected "
                      "stage options such as quantizer = { bits = 3 }");
    pl.allocate.candidates.push_back(std::move(rule));
  }
}

// A rotation codes the matrix in another basis: per-column quality levels (ranked by the Hessian's
// diagonal, which the rotation flattens) and block fine-tuning (row scales of the rotated matrix
// are not row scales of the original) would be wrong with it, so they are refused.
void check_rotation_combinations(const toml::table &root, const Where &w, Pipeline &pl) {
  for (const auto *rules : {&pl.overrides, &pl.allocate.candidates}) // a candidate may rotate too
    for (const auto &rule : *rules) {
      const auto &r = rule.stages[static_cast<size_t>(Slot::Rotation)];
      if (r && !r->plugin.empty() && pl.rotation_where.empty()) pl.rotation_where = rule.where;
    }
  if (pl.rotation_where.empty()) return;
  for (const char *table : {"levels", "blockft"})
    if (auto *n = root.get(table))
      bad(w.at(n->source()), std::string("[") + table + "] cannot be combined with [rotation] (" +
                                 pl.rotation_where +
                                 "): the rotation codes the matrix in another basis, where " +
                                 (std::string(table) == "levels"
                                      ? "the Hessian's diagonal no longer ranks input columns"
                                      : "row scales are not row scales of the original"));
}

} // namespace

std::string toml_without_comments(const std::string &text) {
  std::string out, line;
  enum class In { Code, Basic, Literal, MultiBasic, MultiLiteral } in = In::Code;
  auto at = [&](size_t i, const char *s) { return text.compare(i, std::strlen(s), s) == 0; };
  auto end_line = [&] { // outside strings: drop trailing blanks, then the line if nothing is left
    const size_t keep = line.find_last_not_of(" \t\r");
    if (keep != std::string::npos) out += line.substr(0, keep + 1) + '\n';
    line.clear();
  };
  size_t i = 0;
  // At three closing quotes q: copies them and up to two more, which belong to the string
  // ("""a""""" is a""), and leaves the string.
  auto close_multiline = [&](char q) {
    if (text.compare(i, 3, std::string(3, q)) != 0) return false;
    size_t n = 3;
    while (n < 5 && i + n < text.size() && text[i + n] == q) ++n;
    line.append(text, i, n);
    i += n - 1;
    in = In::Code;
    return true;
  };
  for (; i < text.size(); ++i) {
    const char c = text[i];
    switch (in) {
    case In::Code:
      if (c == '#') { // a comment runs to the end of the line
        while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
        continue;
      }
      if (c == '\n') {
        end_line();
        continue;
      }
      if (at(i, "\"\"\"") || at(i, "'''")) {
        in = c == '"' ? In::MultiBasic : In::MultiLiteral;
        line.append(text, i, 3);
        i += 2;
        continue;
      }
      if (c == '"') in = In::Basic;
      if (c == '\'') in = In::Literal;
      break;
    case In::Basic:
    case In::MultiBasic:
      if (c == '\\' && i + 1 < text.size()) { // an escape: the next character is not a quote
        line += c;
        line += text[++i];
        continue;
      }
      if (in == In::Basic && (c == '"' || c == '\n')) in = In::Code;
      if (in == In::MultiBasic && close_multiline('"')) continue;
      break;
    case In::Literal:
    case In::MultiLiteral:
      if (in == In::Literal && (c == '\'' || c == '\n')) in = In::Code;
      if (in == In::MultiLiteral && close_multiline('\'')) continue;
      break;
    }
    line += c;
    if (c == '\n' && (in == In::MultiBasic || in == In::MultiLiteral)) out += line, line.clear();
  }
  end_line();
  try { // never record a different pipeline: keep the text when the two documents differ
    if (toml::parse(out) == toml::parse(text)) return out;
  } catch (const toml::parse_error &) {
  }
  return text;
}

Pipeline parse_pipeline(const std::string &text, const std::filesystem::path &file,
                        const Registry &registry) {
  Where w{file.string()};
  toml::table root;
  try {
    root = toml::parse(text, file.string());
  } catch (const toml::parse_error &e) {
    bad(w.at(e.source()), std::string("invalid TOML: ") + std::string(e.description()));
  }
  Pipeline pl;
  pl.file = file;
  pl.text = text;
  pl.registry = &registry;
  pl.name = file.stem().string();
  pl.select = {"*_proj.weight"};

  check_keys(root,
             {"pipeline", "calibration", "levels", "importance", "blockft", "allocate", "awq",
              "chunker", "transform", "quantizer", "entropy", "compensator", "rotation",
              "override"},
             w, "(top level)");
  if (auto *p = root.get("pipeline")) read_pipeline_table(*p, w, pl);
  if (auto *c = root.get("calibration")) read_calibration_table(*c, w, pl);
  if (auto *lv = root.get("levels")) read_levels_table(*lv, w, pl);
  if (auto *im = root.get("importance")) read_importance_table(*im, w, pl);
  if (auto *bf = root.get("blockft")) read_blockft_table(*bf, w, pl);
  if (auto *al = root.get("allocate")) read_allocate_table(*al, w, pl);
  bool awq_bits = false, awq_group = false;
  if (auto *aw = root.get("awq")) read_awq_table(*aw, w, pl, awq_bits, awq_group);
  read_base_chain(root, w, registry, pl);
  if (pl.awq.enabled) default_awq_grid(pl, registry, awq_bits, awq_group);
  if (auto *o = root.get("override")) {
    if (!o->is_array_of_tables()) bad(w.at(o->source()), "override: expected [[override]] tables");
    for (auto &elem : *o->as_array())
      pl.overrides.push_back(read_override(*elem.as_table(), w, registry, pl));
  }
  if (pl.allocate.enabled)
    read_allocate_candidates(*root.get("allocate")->as_table(), w, registry, pl);
  check_rotation_combinations(root, w, pl);
  if (pl.allocate.enabled && pl.calibration_mode == CalibrationMode::Sequential)
    bad(pl.allocate.where,
        "[allocate] cannot be combined with [calibration] mode = "
        "\"sequential\": it codes every tensor on the original model's Hessians");
  if (pl.method.empty()) pl.method = pl.name;
  return pl;
}

} // namespace nwc::host
