// nwc/host/registry.hpp — finds plugin libraries, loads them with Boost.DLL, and creates instances.
//
// Discovery order (first hit wins; later duplicates of an id are warned about and ignored):
//   1. --plugin-path directories, 2. NWC_PLUGIN_PATH (':'-separated), 3. <exe>/../lib/nwc/plugins.
// Plugins are the files named nwc-<name>.so. A library that cannot be used (no entry symbol,
// foreign ABI major, init failure, bad descriptor) is reported with its path and reason and
// skipped; the scan goes on. So are a named directory that does not exist (only the
// install-relative one may be absent) and other shared libraries in a plugin directory. Reports
// are warnings through the host log and are kept as diagnostics().
#pragma once

#include "nwc/host/options.hpp"
#include "nwc/nwc.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace nwc::host {

class Library; // a loaded plugin library; lives while any plugin or instance from it lives

// The kind's name: "chunker", "transform", "quantizer", "entropy", "compensator".
const char *kind_name(uint32_t kind);
// The kind in a sentence: "a chunker", ..., "an entropy coder".
std::string kind_in_words(uint32_t kind);
// The interface id a kind must serve ("nwc.chunker/1", ...).
const char *kind_interface(uint32_t kind);

struct Plugin {
  std::string id;
  std::string version;
  std::string name;
  std::string description;
  uint32_t kind = 0;
  uint32_t flags = 0;
  uint32_t stream_version = 0;
  uint32_t abi_version = 0; // the descriptor's: NWC_ABI_VERSION the plugin was built against
  std::vector<nwc_option_spec> options; // pointers into the library's static data
  std::filesystem::path library_path;
  std::shared_ptr<Library> library;
  const nwc_plugin_vtable *vtable = nullptr;

  const nwc_option_spec *option(const std::string &key) const;
  std::vector<std::string> option_keys() const;
};

// A live plugin instance. Destroying it calls the plugin's destroy(); it keeps its library loaded.
class Instance {
public:
  Instance(const Plugin &plugin, nwc_instance *raw);
  ~Instance();
  Instance(const Instance &) = delete;
  Instance &operator=(const Instance &) = delete;

  const Plugin &plugin() const { return plugin_; }
  nwc_instance *raw() const { return raw_; }
  // The kind's interface; throws if the plugin does not serve it.
  const void *interface(const char *interface_id) const;
  template <class T> const T &interface_as(const char *interface_id) const {
    const T *t = static_cast<const T *>(interface(interface_id));
    return *t;
  }
  // Throws nwc::Error "plugin ID: WHAT failed: <last_error> (<status name>)" unless st == NWC_OK.
  void check(nwc_status st, const char *what) const;
  // The plugin's resolved options (defaults filled in).
  OptionValues resolved_options() const;

private:
  Plugin plugin_; // a copy: keeps the library alive
  nwc_instance *raw_;
};

struct Diagnostic {
  std::filesystem::path path;
  std::string message;
};

class Registry {
public:
  Registry();
  ~Registry();
  Registry(Registry &&) noexcept;
  Registry &operator=(Registry &&) noexcept;

  // The directories searched, in order: cli_paths, NWC_PLUGIN_PATH, <exe dir>/../lib/nwc/plugins.
  static std::vector<std::filesystem::path>
  search_path(const std::vector<std::filesystem::path> &cli_paths, bool default_paths = true);

  // <exe dir>/../lib/nwc/plugins (empty when the executable's location is unknown).
  static std::filesystem::path install_dir();

  // Loads every nwc-*.so in each directory (in name order). A directory that does not exist
  // (other than install_dir()), and other shared libraries in it, are reported and skipped.
  void scan(const std::vector<std::filesystem::path> &dirs);
  // Loads one library; problems are recorded as diagnostics, never thrown.
  void load_library(const std::filesystem::path &file);

  const Plugin *find(const std::string &id) const;
  const std::vector<std::unique_ptr<Plugin>> &plugins() const { return plugins_; }
  // Broken libraries, duplicate ids, missing directories and non-plugin libraries met during
  // scans.
  const std::vector<Diagnostic> &diagnostics() const { return diagnostics_; }

  // Creates an instance of plugin id with the given options, validated against its schema first
  // (see validate_options). Throws nwc::Error naming the plugin and the reason.
  std::unique_ptr<Instance> create(const std::string &id, const OptionValues &options) const;

  // The host callbacks given to plugins.
  const nwc_host *host() const;

private:
  // The nwc-*.so files of a directory, in name order; other shared libraries are reported.
  std::vector<std::filesystem::path> plugin_files(const std::filesystem::path &dir);
  // A diagnostic for path, also logged as a warning ("PATH: MSG; skipped").
  void report(const std::filesystem::path &path, const std::string &msg);

  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::vector<Diagnostic> diagnostics_;
};

// Checks option values against a plugin's schema: known keys, types, bounds, enum choices,
// required keys. Returns an empty string when valid, else a one-line reason naming the key.
std::string validate_options(const Plugin &plugin, const OptionValues &options);

// Edit distance based suggestion: the candidate closest to word, or "" if none is close.
std::string did_you_mean(const std::string &word, const std::vector<std::string> &candidates);

// Host log sink: messages from plugins and the host go here. Default prints to stderr with a
// level prefix; --quiet raises the threshold.
void set_log_level(int32_t min_level);
void log_message(int32_t level, const std::string &msg);

} // namespace nwc::host
