#include "nwc/host/registry.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <atomic>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <set>

namespace nwc::host {

namespace {

std::atomic<int32_t> g_log_level{NWC_LOG_INFO};
std::mutex g_log_mutex;
// While a create() runs on this thread, the plugin's error messages are collected here so that
// the exception can say why (create failures have no instance to ask for last_error).
thread_local std::string *t_create_errors = nullptr;

void host_log(const nwc_host *, int32_t level, const char *msg) {
  if (t_create_errors && level >= NWC_LOG_ERROR) {
    *t_create_errors += (t_create_errors->empty() ? "" : "; ") + std::string(msg ? msg : "");
    return;
  }
  log_message(level, msg ? msg : "");
}
void host_progress(const nwc_host *, uint64_t, uint64_t, const char *) {}
void *host_alloc(const nwc_host *, size_t size) {
  return std::malloc(size);
}
void host_free(const nwc_host *, void *p) {
  std::free(p);
}

const nwc_host g_host{sizeof(nwc_host), NWC_ABI_VERSION, nullptr,  host_log,
                      host_progress,    host_alloc,      host_free};

constexpr uint32_t kMaxPluginsPerModule = 1024;
constexpr uint32_t kMaxOptions = 256;

bool valid_id(const char *id) {
  if (!id || !*id) return false;
  size_t n = std::strlen(id);
  if (n > 128 || std::strchr(id, '.') == nullptr) return false;
  for (size_t i = 0; i < n; ++i) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// A shared library by its name: "*.so" or a versioned "*.so.N".
bool is_shared_library(const std::string &name) {
  const bool so = name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0;
  return so || name.find(".so.") != std::string::npos;
}

std::string check_spec(const nwc_option_spec &s) {
  if (!s.key || !*s.key) return "an option has no key";
  if (s.type < NWC_OPT_BOOL || s.type > NWC_OPT_PATH)
    return std::string("option '") + s.key + "' has an unknown type";
  if (s.type == NWC_OPT_ENUM && (s.choice_count == 0 || !s.choices))
    return std::string("enum option '") + s.key + "' has no choices";
  return {};
}

} // namespace

class Library {
public:
  Library(boost::dll::shared_library lib, const nwc_module *module)
      : lib_(std::move(lib)), module_(module) {}
  ~Library() {
    if (module_ && module_->deinit) module_->deinit();
  }
  const nwc_module *module() const { return module_; }

private:
  boost::dll::shared_library lib_;
  const nwc_module *module_;
};

void set_log_level(int32_t min_level) {
  g_log_level = min_level;
}

void log_message(int32_t level, const std::string &msg) {
  if (level < g_log_level.load()) return;
  const char *prefix = level >= NWC_LOG_ERROR     ? "error: "
                       : level == NWC_LOG_WARNING ? "warning: "
                       : level == NWC_LOG_DEBUG   ? "debug: "
                                                  : "";
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::cerr << "nwc: " << prefix << msg << '\n';
}

const char *kind_name(uint32_t kind) {
  switch (kind) {
  case NWC_KIND_CHUNKER:
    return "chunker";
  case NWC_KIND_TRANSFORM:
    return "transform";
  case NWC_KIND_QUANTIZER:
    return "quantizer";
  case NWC_KIND_ENTROPY_CODER:
    return "entropy";
  case NWC_KIND_COMPENSATOR:
    return "compensator";
  case NWC_KIND_ROTATION:
    return "rotation";
  default:
    return "unknown";
  }
}

std::string kind_in_words(uint32_t kind) {
  if (kind == NWC_KIND_ENTROPY_CODER) return "an entropy coder";
  return std::string("a ") + kind_name(kind);
}

const char *kind_interface(uint32_t kind) {
  switch (kind) {
  case NWC_KIND_CHUNKER:
    return NWC_CHUNKER_INTERFACE;
  case NWC_KIND_TRANSFORM:
    return NWC_TRANSFORM_INTERFACE;
  case NWC_KIND_QUANTIZER:
    return NWC_QUANTIZER_INTERFACE;
  case NWC_KIND_ENTROPY_CODER:
    return NWC_ENTROPY_INTERFACE;
  case NWC_KIND_COMPENSATOR:
    return NWC_COMPENSATOR_INTERFACE;
  case NWC_KIND_ROTATION:
    return NWC_ROTATION_INTERFACE;
  default:
    return "";
  }
}

const nwc_option_spec *Plugin::option(const std::string &key) const {
  for (const auto &s : options)
    if (key == s.key) return &s;
  return nullptr;
}

std::vector<std::string> Plugin::option_keys() const {
  std::vector<std::string> keys;
  for (const auto &s : options) keys.emplace_back(s.key);
  return keys;
}

// ---- Instance ----------------------------------------------------------------------------------

Instance::Instance(const Plugin &plugin, nwc_instance *raw) : plugin_(plugin), raw_(raw) {}

Instance::~Instance() {
  if (raw_) plugin_.vtable->destroy(raw_);
}

const void *Instance::interface(const char *interface_id) const {
  const void *iface = plugin_.vtable->get_interface(raw_, interface_id);
  if (!iface)
    fail(NWC_E_VERSION, "plugin " + plugin_.id + " does not provide interface " + interface_id);
  // Every interface struct starts with its struct_size; an older, shorter one is refused here
  // rather than read past its end.
  uint32_t size = *static_cast<const uint32_t *>(iface);
  if (size < 2 * sizeof(uint32_t) + sizeof(void *))
    fail(NWC_E_VERSION, "plugin " + plugin_.id + ": interface " + interface_id + " is truncated");
  return iface;
}

void Instance::check(nwc_status st, const char *what) const {
  if (st == NWC_OK) return;
  const char *msg = plugin_.vtable->last_error(raw_);
  std::string reason = msg && *msg ? msg : "no message";
  fail(st, "plugin " + plugin_.id + ": " + what + " failed: " + reason + " (" +
               nwc_status_name(st) + ")");
}

OptionValues Instance::resolved_options() const {
  nwc_options opts{};
  check(plugin_.vtable->get_options(raw_, &opts), "get_options");
  OptionValues out;
  for (uint32_t i = 0; i < opts.count; ++i)
    out.set(option_from_c(opts.items[i].key, opts.items[i].value));
  return out;
}

// ---- Registry ----------------------------------------------------------------------------------

Registry::Registry() = default;
Registry::~Registry() = default;
Registry::Registry(Registry &&) noexcept = default;
Registry &Registry::operator=(Registry &&) noexcept = default;

const nwc_host *Registry::host() const {
  return &g_host;
}

std::filesystem::path Registry::install_dir() {
  boost::system::error_code ec;
  auto exe = boost::dll::program_location(ec);
  if (ec) return {};
  return std::filesystem::path(exe.parent_path().string()) / ".." / "lib" / "nwc" / "plugins";
}

std::vector<std::filesystem::path>
Registry::search_path(const std::vector<std::filesystem::path> &cli_paths, bool default_paths) {
  std::vector<std::filesystem::path> dirs(cli_paths.begin(), cli_paths.end());
  if (const char *env = std::getenv("NWC_PLUGIN_PATH")) {
    std::string s(env);
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) dirs.emplace_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
  const char *only = std::getenv("NWC_PLUGIN_PATH_ONLY");
  if (default_paths && !(only && std::string(only) == "1")) {
    std::filesystem::path dir = install_dir();
    if (!dir.empty()) dirs.push_back(std::move(dir));
  }
  return dirs;
}

void Registry::scan(const std::vector<std::filesystem::path> &dirs) {
  const std::filesystem::path optional = install_dir();
  std::set<std::filesystem::path> scanned; // canonical: one directory named twice is read once
  for (const auto &dir : dirs) {
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec)) {
      const auto canonical = std::filesystem::canonical(dir, ec);
      if (!ec && !scanned.insert(canonical).second) continue;
    }
    if (!std::filesystem::is_directory(dir, ec)) {
      // The install-relative directory is there only when plugins are installed; a directory
      // someone named (--plugin-path, NWC_PLUGIN_PATH) that is not there is worth a warning.
      if (dir == optional) continue;
      std::error_code ec2;
      report(dir, std::filesystem::exists(dir, ec2) ? "plugin path entry is not a directory"
                                                    : "plugin directory does not exist");
      continue;
    }
    for (const auto &f : plugin_files(dir)) load_library(f);
  }
}

std::vector<std::filesystem::path> Registry::plugin_files(const std::filesystem::path &dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (auto &e : std::filesystem::directory_iterator(dir, ec)) {
    auto name = e.path().filename().string();
    if (name.rfind("nwc-", 0) == 0 && e.path().extension() == ".so")
      files.push_back(e.path());
    else if (is_shared_library(name))
      report(e.path(), "shared library not named nwc-<name>.so, so not a plugin");
  }
  if (ec) report(dir, "cannot list the plugin directory: " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

void Registry::report(const std::filesystem::path &path, const std::string &msg) {
  diagnostics_.push_back({path, msg});
  log_message(NWC_LOG_WARNING, path.string() + ": " + msg + "; skipped");
}

void Registry::load_library(const std::filesystem::path &file) {
  auto report = [&](const std::string &msg) { this->report(file, msg); };
  boost::dll::shared_library lib;
  try {
    lib.load(boost::dll::fs::path(file.string()),
             boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local);
  } catch (const std::exception &e) {
    report(std::string("cannot load library: ") + e.what());
    return;
  }
  if (!lib.has(NWC_MODULE_ENTRY_SYMBOL)) {
    report("no nwc_module_entry symbol (not an nwc plugin)");
    return;
  }
  auto entry = lib.get<const nwc_module *(uint32_t)>(NWC_MODULE_ENTRY_SYMBOL);
  const nwc_module *mod = entry(NWC_ABI_VERSION);
  if (!mod) {
    report("nwc_module_entry refused host ABI " + std::to_string(NWC_ABI_VERSION_MAJOR) + "." +
           std::to_string(NWC_ABI_VERSION_MINOR));
    return;
  }
  if (NWC_ABI_MAJOR(mod->abi_version) != NWC_ABI_VERSION_MAJOR) {
    report("built for ABI " + std::to_string(NWC_ABI_MAJOR(mod->abi_version)) + "." +
           std::to_string(NWC_ABI_MINOR(mod->abi_version)) + ", this host speaks ABI " +
           std::to_string(NWC_ABI_VERSION_MAJOR) + ".x");
    return;
  }
  if (mod->struct_size < sizeof(nwc_module) || !mod->init || !mod->deinit || !mod->plugin_count ||
      !mod->descriptor || !mod->vtable) {
    report("module table is incomplete");
    return;
  }
  if (mod->init(&g_host) != NWC_OK) {
    report("module init failed");
    return;
  }
  auto library = std::make_shared<Library>(std::move(lib), mod);
  uint32_t count = mod->plugin_count();
  if (count > kMaxPluginsPerModule) {
    report("module declares " + std::to_string(count) + " plugins (limit " +
           std::to_string(kMaxPluginsPerModule) + ")");
    return;
  }
  for (uint32_t i = 0; i < count; ++i) {
    const nwc_plugin_descriptor *d = mod->descriptor(i);
    const nwc_plugin_vtable *vt = mod->vtable(i);
    std::string where = "plugin #" + std::to_string(i);
    if (!d || d->struct_size < sizeof(nwc_plugin_descriptor)) {
      report(where + ": missing or truncated descriptor");
      continue;
    }
    if (!valid_id(d->id)) {
      report(where + ": invalid id (expected reverse-DNS like 'org.example.quant.x')");
      continue;
    }
    where = "plugin " + std::string(d->id);
    if (NWC_ABI_MAJOR(d->abi_version) != NWC_ABI_VERSION_MAJOR) {
      report(where + ": built for ABI major " + std::to_string(NWC_ABI_MAJOR(d->abi_version)));
      continue;
    }
    if (d->kind < NWC_KIND_CHUNKER || d->kind > NWC_KIND_ROTATION) {
      report(where + ": unknown kind " + std::to_string(d->kind));
      continue;
    }
    if (!vt || vt->struct_size < sizeof(nwc_plugin_vtable) || !vt->create || !vt->destroy ||
        !vt->get_options || !vt->get_interface || !vt->last_error) {
      report(where + ": vtable is missing or incomplete");
      continue;
    }
    if (d->option_count > kMaxOptions || (d->option_count > 0 && !d->options)) {
      report(where + ": bad option table");
      continue;
    }
    std::string bad;
    for (uint32_t k = 0; k < d->option_count && bad.empty(); ++k) bad = check_spec(d->options[k]);
    if (!bad.empty()) {
      report(where + ": " + bad);
      continue;
    }
    if (const Plugin *existing = find(d->id)) {
      std::string msg = "duplicate plugin id " + std::string(d->id) + " (already loaded from " +
                        existing->library_path.string() + "); ignored";
      diagnostics_.push_back({file, msg});
      log_message(NWC_LOG_WARNING, file.string() + ": " + msg);
      continue;
    }
    auto p = std::make_unique<Plugin>();
    p->id = d->id;
    p->version = d->version ? d->version : "0.0.0";
    p->name = d->name ? d->name : d->id;
    p->description = d->description ? d->description : "";
    p->kind = d->kind;
    p->flags = d->flags;
    p->stream_version = d->stream_version;
    p->abi_version = d->abi_version;
    p->options.assign(d->options, d->options + d->option_count);
    p->library_path = file;
    p->library = library;
    p->vtable = vt;
    plugins_.push_back(std::move(p));
  }
}

const Plugin *Registry::find(const std::string &id) const {
  for (const auto &p : plugins_)
    if (p->id == id) return p.get();
  return nullptr;
}

std::unique_ptr<Instance> Registry::create(const std::string &id,
                                           const OptionValues &options) const {
  const Plugin *p = find(id);
  if (!p) {
    std::vector<std::string> ids;
    for (const auto &q : plugins_) ids.push_back(q->id);
    std::string hint = did_you_mean(id, ids);
    fail(NWC_E_INVALID_ARG, "plugin " + id + " is not installed" +
                                (hint.empty() ? "" : " (did you mean " + hint + "?)") +
                                "; see `nwc plugins list`");
  }
  std::string why = validate_options(*p, options);
  if (!why.empty()) fail(NWC_E_INVALID_OPTION, "plugin " + id + ": " + why);
  nwc_instance *raw = nullptr;
  std::string errors;
  t_create_errors = &errors;
  nwc_status st = p->vtable->create(&g_host, options.c_options(), &raw);
  t_create_errors = nullptr;
  if (st != NWC_OK || !raw)
    fail(st != NWC_OK ? st : NWC_E_INTERNAL, "plugin " + id + ": create failed (" +
                                                 nwc_status_name(st) + ")" +
                                                 (errors.empty() ? "" : ": " + errors));
  auto inst = std::make_unique<Instance>(*p, raw);
  inst->interface(kind_interface(p->kind)); // refuse plugins that lack their kind's interface
  return inst;
}

// ---- validation helpers ------------------------------------------------------------------------

std::string validate_options(const Plugin &plugin, const OptionValues &options) {
  for (const auto &v : options.items()) {
    const nwc_option_spec *s = plugin.option(v.key);
    if (!s) {
      std::string hint = did_you_mean(v.key, plugin.option_keys());
      return "unknown option '" + v.key + "'" +
             (hint.empty() ? "" : " (did you mean '" + hint + "'?)");
    }
    if (s->type != v.type)
      return "option '" + v.key + "' must be " + option_type_name(s->type) + ", got " +
             option_type_name(v.type);
    auto out_of_range = [&](double x) { return s->min <= s->max && (x < s->min || x > s->max); };
    auto range = [&] {
      auto fmt = [](double x) {
        std::string t = std::to_string(x);
        t.erase(t.find_last_not_of('0') + 1);
        if (!t.empty() && t.back() == '.') t.pop_back();
        return t;
      };
      return "[" + fmt(s->min) + ", " + fmt(s->max) + "]";
    };
    if (s->type == NWC_OPT_INT && out_of_range(static_cast<double>(std::get<int64_t>(v.value))))
      return "option '" + v.key + "' = " + std::to_string(std::get<int64_t>(v.value)) +
             " is out of range " + range();
    if (s->type == NWC_OPT_FLOAT && out_of_range(std::get<double>(v.value)))
      return "option '" + v.key + "' = " + std::to_string(std::get<double>(v.value)) +
             " is out of range " + range();
    if (s->type == NWC_OPT_INT_LIST)
      for (auto x : std::get<std::vector<int64_t>>(v.value))
        if (out_of_range(static_cast<double>(x)))
          return "option '" + v.key + "' has element " + std::to_string(x) + " out of range " +
                 range();
    if (s->type == NWC_OPT_FLOAT_LIST)
      for (auto x : std::get<std::vector<double>>(v.value))
        if (out_of_range(x))
          return "option '" + v.key + "' has element " + std::to_string(x) + " out of range " +
                 range();
    if (s->type == NWC_OPT_ENUM) {
      const auto &str = std::get<std::string>(v.value);
      std::vector<std::string> choices(s->choices, s->choices + s->choice_count);
      if (std::find(choices.begin(), choices.end(), str) == choices.end()) {
        std::string list;
        for (auto &c : choices) list += (list.empty() ? "\"" : ", \"") + c + "\"";
        return "option '" + v.key + "' = \"" + str + "\" is not one of " + list;
      }
    }
  }
  for (const auto &s : plugin.options)
    if ((s.flags & NWC_OPTF_REQUIRED) && !options.find(s.key))
      return std::string("option '") + s.key + "' is required";
  return {};
}

std::string did_you_mean(const std::string &word, const std::vector<std::string> &candidates) {
  auto distance = [](const std::string &a, const std::string &b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= b.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto &c : candidates) {
    size_t d = distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

} // namespace nwc::host
