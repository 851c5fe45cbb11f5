// nwc/host/options.hpp — option values owned by the host, handed to plugins as nwc_options.
#pragma once

#include "nwc/options.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

namespace nwc::host {

// One option value as the host holds it. The variant alternative matches the option type:
// BOOL/INT -> int64_t, FLOAT -> double, STRING/ENUM/PATH -> std::string, lists -> vectors.
struct OptionValue {
  std::string key;
  uint32_t type = 0; // NWC_OPT_*
  std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>> value;

  nlohmann::json to_json() const;
};

// An ordered set of option values that can be viewed as a C nwc_options array.
//
// The C view is rebuilt by every change (set, copy) and only read by c_options(), so one
// OptionValues may be handed to create() from several threads at once (the decoder's workers
// instantiate stages from a shared stage configuration).
class OptionValues {
public:
  OptionValues() { rebuild_c_view(); }
  OptionValues(const OptionValues &other) : items_(other.items_) { rebuild_c_view(); }
  OptionValues &operator=(const OptionValues &other) {
    items_ = other.items_;
    rebuild_c_view();
    return *this;
  }

  void set(OptionValue v); // replaces a value with the same key
  const OptionValue *find(const std::string &key) const;
  const std::vector<OptionValue> &items() const { return items_; }
  bool empty() const { return items_.empty(); }

  // A C view of the values; valid until this object changes or dies. Does not modify the object:
  // safe to call from several threads while nobody changes it.
  const nwc_options *c_options() const { return &c_options_; }

  // {"key": value, ...} with JSON numbers/strings/arrays.
  nlohmann::json to_json() const;
  // Rebuilds values from JSON written by to_json() using the schema for the types.
  static OptionValues from_json(const nlohmann::json &j, const nwc_option_spec *specs,
                                uint32_t spec_count, const std::string &context);

private:
  void rebuild_c_view();

  std::vector<OptionValue> items_;
  std::vector<nwc_option> c_items_;
  nwc_options c_options_{};
};

// KEY=VALUE texts from a command line (`--set`, `--latent-quantizer-option`) as values for a
// schema: the value as JSON where it parses (numbers, true/false, lists), else the text; string,
// enum and path options always take the text. A key the schema lacks is an error naming `context`
// and the schema's keys, or skipped with skip_unknown (assignments meant for several plugins).
OptionValues options_from_assignments(const std::vector<std::string> &assignments,
                                      const nwc_option_spec *specs, uint32_t spec_count,
                                      const std::string &context, bool skip_unknown = false);

// Converts a C value (e.g. a schema default or a plugin's resolved option) to a host value.
OptionValue option_from_c(const char *key, const nwc_value &v);
// "int", "float", "bool", "string", "enum", "int list", "float list", "path"
const char *option_type_name(uint32_t type);
// Value of a C option as JSON (for printing schemas and resolved options).
nlohmann::json c_value_to_json(const nwc_value &v);

} // namespace nwc::host
