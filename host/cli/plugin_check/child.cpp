// The hidden child command of `nwc plugins check`: one plugin, every step of its kind.
#include "check_steps.hpp"
#include "plugin_check.hpp"

#include "nwc/host/options.hpp"
#include "nwc/host/registry.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace nwc::cli {

namespace po = boost::program_options;
using nlohmann::json;
using namespace nwc::host;

void check::report(const std::string &event, const std::string &step, const std::string &msg) {
  std::string line = event + " " + step;
  if (!msg.empty()) {
    std::string m = msg;
    std::replace(m.begin(), m.end(), '\n', ' ');
    line += "\t" + m;
  }
  line += "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

namespace {

using check::report;
using check::step;
using check::StepFailed;

// --set KEY=VALUE for a plugin's schema; keys it does not have are for other plugins.
OptionValues options_for(const Plugin &p, const std::vector<std::string> &sets) {
  return options_from_assignments(sets, p.options.data(), static_cast<uint32_t>(p.options.size()),
                                  "--set for " + p.id, /*skip_unknown=*/true);
}

struct ChildArgs {
  std::vector<std::string> plugin_paths, sets;
  std::string id;
  bool no_default = false, list = false, quiet = false;
};

ChildArgs parse_child_args(const std::vector<std::string> &args) {
  ChildArgs a;
  po::options_description d;
  d.add_options()("id", po::value(&a.id))("plugin-path", po::value(&a.plugin_paths)->composing())(
      "no-default-plugin-path", po::bool_switch(&a.no_default))(
      "set", po::value(&a.sets)->composing())("list", po::bool_switch(&a.list))("quiet,q", "");
  po::positional_options_description pos;
  pos.add("id", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
  po::notify(vm);
  a.quiet = vm.count("quiet") > 0;
  return a;
}

// The "load" step: scans the search path and finds the plugin (nullptr with --list).
bool load(Registry &reg, const ChildArgs &a, const Plugin *&p) {
  std::vector<std::filesystem::path> cli(a.plugin_paths.begin(), a.plugin_paths.end());
  return step("load", [&] {
    reg.scan(Registry::search_path(cli, !a.no_default));
    if (a.list) return std::string();
    p = reg.find(a.id);
    if (!p) {
      std::vector<std::string> ids;
      for (const auto &q : reg.plugins()) ids.push_back(q->id);
      const std::string hint = did_you_mean(a.id, ids);
      throw StepFailed("plugin " + a.id + " is not installed" +
                       (hint.empty() ? "" : " (did you mean " + hint + "?)"));
    }
    report("info", "kind", kind_name(p->kind));
    report("info", "version", p->version);
    report("info", "library", p->library_path.string());
    return std::string(p->library_path.filename());
  });
}

bool check_kind(const Plugin &p, const Instance &inst) {
  switch (p.kind) {
  case NWC_KIND_CHUNKER:
    return check::check_chunker(inst);
  case NWC_KIND_TRANSFORM:
    return check::check_transform(inst);
  case NWC_KIND_QUANTIZER:
    return check::check_quantizer(inst);
  case NWC_KIND_ENTROPY_CODER:
    return check::check_entropy(inst);
  case NWC_KIND_COMPENSATOR:
    return check::check_compensator(inst);
  case NWC_KIND_ROTATION:
    return check::check_rotation(inst);
  default:
    report("fail", "kind", "unknown kind " + std::to_string(p.kind));
    return false;
  }
}

} // namespace

int plugin_check_child(const std::vector<std::string> &args) {
  const ChildArgs a = parse_child_args(args);
  set_log_level(a.quiet ? NWC_LOG_ERROR : NWC_LOG_WARNING);
  Registry reg;
  const Plugin *p = nullptr;
  bool ok = load(reg, a, p);
  if (a.list) {
    for (const auto &q : reg.plugins()) report("info", "id", q->id);
    return ok ? 0 : 1;
  }
  if (!ok) return 1;
  std::unique_ptr<Instance> inst;
  ok = step("create", [&] {
    OptionValues opts = options_for(*p, a.sets);
    for (const auto &s : p->options)
      if ((s.flags & NWC_OPTF_REQUIRED) && !opts.find(s.key))
        throw StepFailed(std::string("needs option ") + s.key + " (pass --set " + s.key +
                         "=VALUE)");
    inst = reg.create(p->id, opts);
    return std::string("default options") + (opts.empty() ? "" : " and --set");
  });
  if (!ok) return 1;
  ok = check_kind(*p, *inst);
  ok &= step("destroy", [&] {
    inst.reset();
    return std::string();
  });
  return ok ? 0 : 1;
}

} // namespace nwc::cli
