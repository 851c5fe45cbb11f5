// nwc plugins check ID... | --all [--set KEY=VALUE]... [--timeout S]: each plugin checked in a
// child process of its own (plugin_check/), each step reported as pass or fail.
#include "commands/commands.hpp"
#include "common.hpp"
#include "plugin_check/plugin_check.hpp"

#include "nwc/cpp/error.hpp"

#include <cstdlib>
#include <iostream>

namespace nwc::cli {

namespace {

struct CheckArgs {
  std::vector<std::string> ids, plugin_paths, sets;
  bool all = false, json_out = false, quiet = false, no_default = false;
  double timeout = 300;
};

// Its own options: --threads is accepted and ignored, --quiet only silences warnings.
CheckArgs parse_check_args(const Command &self, const Args &args) {
  CheckArgs a;
  po::options_description d(self.title());
  d.add_options()("id", po::value(&a.ids)->composing(), "plugin ids to check")(
      "all", po::bool_switch(&a.all), "check every installed plugin")(
      "set", po::value(&a.sets)->composing(),
      "KEY=VALUE option for the plugins that have KEY (repeatable), e.g. codec=FILE.nwcc")(
      "timeout", po::value(&a.timeout)->default_value(300),
      "seconds one plugin's check may take (0 = no limit)")(
      "plugin-path", po::value(&a.plugin_paths)->composing(),
      "directory to search for plugins first (repeatable)")(
      "no-default-plugin-path", po::bool_switch(&a.no_default),
      "search only --plugin-path and NWC_PLUGIN_PATH")("json", po::bool_switch(&a.json_out),
                                                       "machine-readable JSON on stdout")(
      "quiet,q", po::bool_switch(&a.quiet),
      "no warnings")("threads", po::value<unsigned>(),
                     "ignored (checks are single-threaded)")("help,h", "show this help");
  po::positional_options_description pos;
  pos.add("id", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << self.usage << "\n\n" << d << "\n";
      std::exit(0);
    }
    po::notify(vm);
    if (a.ids.empty() == !a.all)
      throw po::error(a.all ? "give plugin ids or --all, not both" : "missing plugin id");
    for (const auto &s : a.sets)
      if (s.find('=') == std::string::npos || s.front() == '=')
        throw po::error("--set " + s + ": expected KEY=VALUE");
  } catch (const po::error &e) {
    throw UsageError("plugins check: " + std::string(e.what()) +
                     " (usage: " + std::string(self.usage) + ")");
  }
  return a;
}

void print_result(const CheckResult &r) {
  std::cout << r.id;
  if (!r.kind.empty()) std::cout << " (" << r.kind << " " << r.version << ")";
  std::cout << ": " << (r.passed ? "ok" : "FAILED") << "\n";
  for (const auto &s : r.steps)
    std::cout << "  " << (s.result == "pass" ? "pass" : "FAIL") << "  " << s.name
              << (s.message.empty() ? "" : ": " + s.message) << "\n";
  std::cout.flush();
}

json results_json(const std::vector<CheckResult> &results, bool passed) {
  json j = {{"passed", passed}, {"plugins", json::array()}};
  for (const auto &r : results) {
    json steps = json::array();
    for (const auto &s : r.steps)
      steps.push_back({{"step", s.name}, {"result", s.result}, {"message", s.message}});
    j["plugins"].push_back({{"id", r.id},
                            {"kind", r.kind},
                            {"version", r.version},
                            {"library", r.library},
                            {"passed", r.passed},
                            {"error", r.passed ? json(nullptr) : json(r.failure)},
                            {"steps", steps}});
  }
  return j;
}

} // namespace

int cmd_plugins_check(const Command &self, const Args &args) {
  CheckArgs a = parse_check_args(self, args);
  std::vector<std::string> child_args;
  for (const auto &p : a.plugin_paths) child_args.insert(child_args.end(), {"--plugin-path", p});
  if (a.no_default) child_args.push_back("--no-default-plugin-path");
  if (a.quiet || a.json_out) child_args.push_back("--quiet");
  for (const auto &s : a.sets) child_args.insert(child_args.end(), {"--set", s});
  if (a.all) {
    std::vector<std::string> list_args = child_args;
    list_args.push_back("--list");
    CheckResult l = run_plugin_check("", list_args, a.timeout);
    if (!l.passed)
      throw Error(NWC_E_INVALID_ARG,
                  "plugins check --all: cannot list the installed plugins (" + l.failure + ")");
    a.ids = l.ids;
  }
  std::vector<CheckResult> results;
  size_t passed = 0;
  for (const auto &id : a.ids) {
    results.push_back(run_plugin_check(id, child_args, a.timeout));
    passed += results.back().passed;
    if (!a.json_out) print_result(results.back());
  }
  if (a.json_out)
    print_json(results_json(results, passed == results.size()));
  else
    std::cout << passed << " of " << results.size() << " plugin" << (results.size() == 1 ? "" : "s")
              << " passed\n";
  for (const auto &r : results)
    if (!r.passed) std::cerr << "nwc: error: " << r.failure << "\n";
  return passed == results.size() ? 0 : 1;
}

int cmd_plugin_check_child(const Command &, const Args &args) {
  return plugin_check_child(args);
}

} // namespace nwc::cli
