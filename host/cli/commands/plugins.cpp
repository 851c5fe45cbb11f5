// nwc plugins list / nwc plugins show ID [--markdown] / nwc plugins show --all --markdown
// [--output-dir DIR]. (`plugins check` is plugins_check.cpp.)
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/host/options.hpp"
#include "nwc/host/plugin_docs.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>

namespace nwc::cli {

namespace {

using host::Plugin;
using host::Registry;

// "bits (int, default 4, 2..8)"
std::string option_line(const nwc_option_spec &s) {
  json o = host::option_schema_json(s);
  std::string line = std::string(s.key) + " (" + host::option_type_name(s.type);
  if (o.contains("default")) line += ", default " + o["default"].dump();
  if (o.contains("range"))
    line += ", " + fmt(s.min, s.min == std::floor(s.min) ? 0 : 3) + ".." +
            fmt(s.max, s.max == std::floor(s.max) ? 0 : 3);
  if (o.contains("choices")) {
    std::string ch;
    for (auto &x : o["choices"]) ch += (ch.empty() ? "" : "|") + x.get<std::string>();
    line += ", " + ch;
  }
  if (s.unit) line += std::string(", ") + s.unit;
  line += ")";
  return line;
}

// The installed plugin `id`, or an error that suggests the closest installed id.
const Plugin &installed_plugin(const Registry &reg, const std::string &id) {
  if (const Plugin *p = reg.find(id)) return *p;
  std::vector<std::string> ids;
  for (const auto &q : reg.plugins()) ids.push_back(q->id);
  std::string hint = host::did_you_mean(id, ids);
  throw Error(NWC_E_INVALID_ARG, "plugin " + id + " is not installed" +
                                     (hint.empty() ? "" : " (did you mean " + hint + "?)"));
}

// The arguments of `plugins list` and `plugins show`: one option set, as it always was (list
// ignores the options of show).
struct PluginsArgs {
  Common c;
  std::string id;
  bool markdown = false, all = false;
  std::string output_dir;
};

PluginsArgs parse_plugins_args(const Command &self, const Args &args) {
  PluginsArgs a;
  po::options_description d(self.title());
  d.add_options()("id", po::value(&a.id), "plugin id (for show)");
  d.add_options()("markdown", po::bool_switch(&a.markdown),
                  "show: the plugin's reference page in Markdown")(
      "all", po::bool_switch(&a.all), "show --markdown: every installed plugin")(
      "output-dir", po::value(&a.output_dir),
      "show --all --markdown: write <id>.md per plugin and README.md (index) here");
  add_common(d, a.c);
  parse(args, d, {"id"}, self.usage);
  return a;
}

// Plugins in pipeline order: chunkers, transforms, quantizers, entropy coders, then the rest.
std::vector<const Plugin *> plugins_in_pipeline_order(const Registry &reg) {
  auto rank = [](uint32_t kind) {
    switch (kind) {
    case NWC_KIND_CHUNKER:
      return 0;
    case NWC_KIND_TRANSFORM:
      return 1;
    case NWC_KIND_QUANTIZER:
      return 2;
    case NWC_KIND_ENTROPY_CODER:
      return 3;
    default:
      return 4;
    }
  };
  std::vector<const Plugin *> plugins;
  for (const auto &p : reg.plugins()) plugins.push_back(p.get());
  std::sort(plugins.begin(), plugins.end(), [&](const Plugin *a, const Plugin *b) {
    return std::make_pair(rank(a->kind), a->id) < std::make_pair(rank(b->kind), b->id);
  });
  return plugins;
}

// `plugins show ID --markdown` and `plugins show --all --markdown [--output-dir DIR]`: reference
// pages generated from the descriptors (nwc/host/plugin_docs.hpp), plugins in pipeline order.
int show_markdown(const Registry &reg, const PluginsArgs &a) {
  if (!a.markdown)
    throw UsageError("plugins show: --all and --output-dir need --markdown (for every plugin as "
                     "text or JSON use `nwc plugins list [--json]`)");
  if (a.c.json) throw UsageError("plugins show: --markdown and --json are exclusive");
  if (a.all == !a.id.empty())
    throw UsageError("plugins show --markdown: give either a plugin id or --all");
  if (!a.output_dir.empty() && !a.all) throw UsageError("plugins show: --output-dir needs --all");
  if (!a.all) {
    std::cout << host::plugin_markdown(installed_plugin(reg, a.id));
    return 0;
  }
  const std::vector<const Plugin *> plugins = plugins_in_pipeline_order(reg);
  if (a.output_dir.empty()) {
    std::cout << host::plugins_index_markdown(plugins);
    for (const Plugin *p : plugins) std::cout << "\n" << host::plugin_markdown(*p);
    return 0;
  }
  std::filesystem::path dir(a.output_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(NWC_E_IO, dir.string() + ": cannot create directory: " + ec.message());
  auto write_page = [&](const std::string &name, const std::string &text) {
    AtomicFile f(dir / name);
    f.write(text.data(), text.size());
    f.commit();
  };
  write_page("README.md", host::plugins_index_markdown(plugins));
  for (const Plugin *p : plugins)
    write_page(host::plugin_markdown_file(*p), host::plugin_markdown(*p));
  if (!a.c.quiet)
    std::cout << "wrote " << plugins.size() + 1 << " pages to " << dir.string() << "\n";
  return 0;
}

} // namespace

int cmd_plugins_list(const Command &self, const Args &args) {
  const PluginsArgs a = parse_plugins_args(self, args);
  Registry reg = load_registry(a.c);
  if (a.c.json) {
    json j = {{"plugins", json::array()}, {"problems", json::array()}};
    for (const auto &p : reg.plugins()) j["plugins"].push_back(host::plugin_json(*p));
    for (const auto &dgn : reg.diagnostics())
      j["problems"].push_back({{"path", dgn.path.string()}, {"message", dgn.message}});
    print_json(j);
    return 0;
  }
  size_t id_width = 20;
  for (const auto &p : reg.plugins()) id_width = std::max(id_width, p->id.size());
  for (const auto &p : reg.plugins()) {
    std::cout << std::left << std::setw(static_cast<int>(id_width + 2)) << p->id << std::setw(13)
              << host::kind_name(p->kind) << std::setw(8) << p->version
              << p->library_path.filename().string() << "\n";
    for (const auto &s : p->options) std::cout << "    " << option_line(s) << "\n";
  }
  if (reg.plugins().empty())
    std::cout << "no plugins found (searched --plugin-path, NWC_PLUGIN_PATH and "
                 "<prefix>/lib/nwc/plugins)\n";
  return 0;
}

int cmd_plugins_show(const Command &self, const Args &args) {
  const PluginsArgs a = parse_plugins_args(self, args);
  Registry reg = load_registry(a.c);
  if (a.markdown || a.all || !a.output_dir.empty()) return show_markdown(reg, a);
  if (a.id.empty())
    throw UsageError("plugins show: missing plugin id (usage: nwc plugins show ID)");
  const Plugin &p = installed_plugin(reg, a.id);
  if (a.c.json) {
    print_json(host::plugin_json(p));
    return 0;
  }
  std::cout << p.id << " " << p.version << " (" << host::kind_name(p.kind) << ", stream version "
            << p.stream_version << ")\n  " << p.library_path.string() << "\n\n"
            << p.description << "\n\noptions:\n";
  if (p.options.empty()) std::cout << "  (none)\n";
  for (const auto &s : p.options)
    std::cout << "  " << option_line(s) << "\n      " << (s.doc ? s.doc : "") << "\n";
  return 0;
}

} // namespace nwc::cli
