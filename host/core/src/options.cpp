#include "nwc/host/options.hpp"

#include "nwc/cpp/error.hpp"

namespace nwc::host {

const char *option_type_name(uint32_t type) {
  switch (type) {
  case NWC_OPT_BOOL:
    return "bool";
  case NWC_OPT_INT:
    return "int";
  case NWC_OPT_FLOAT:
    return "float";
  case NWC_OPT_STRING:
    return "string";
  case NWC_OPT_ENUM:
    return "enum";
  case NWC_OPT_INT_LIST:
    return "int list";
  case NWC_OPT_FLOAT_LIST:
    return "float list";
  case NWC_OPT_PATH:
    return "path";
  default:
    return "unknown";
  }
}

nlohmann::json c_value_to_json(const nwc_value &v) {
  switch (v.type) {
  case NWC_OPT_BOOL:
    return v.u.i != 0;
  case NWC_OPT_INT:
    return v.u.i;
  case NWC_OPT_FLOAT:
    return v.u.f;
  case NWC_OPT_STRING:
  case NWC_OPT_ENUM:
  case NWC_OPT_PATH:
    return v.u.s ? std::string(v.u.s) : std::string();
  case NWC_OPT_INT_LIST: {
    auto a = nlohmann::json::array();
    for (uint32_t i = 0; i < v.count; ++i) a.push_back(v.u.il[i]);
    return a;
  }
  case NWC_OPT_FLOAT_LIST: {
    auto a = nlohmann::json::array();
    for (uint32_t i = 0; i < v.count; ++i) a.push_back(v.u.fl[i]);
    return a;
  }
  default:
    return nullptr;
  }
}

OptionValue option_from_c(const char *key, const nwc_value &v) {
  OptionValue o;
  o.key = key ? key : "";
  o.type = v.type;
  switch (v.type) {
  case NWC_OPT_BOOL:
  case NWC_OPT_INT:
    o.value = v.u.i;
    break;
  case NWC_OPT_FLOAT:
    o.value = v.u.f;
    break;
  case NWC_OPT_STRING:
  case NWC_OPT_ENUM:
  case NWC_OPT_PATH:
    o.value = std::string(v.u.s ? v.u.s : "");
    break;
  case NWC_OPT_INT_LIST:
    o.value = std::vector<int64_t>(v.u.il, v.u.il + v.count);
    break;
  case NWC_OPT_FLOAT_LIST:
    o.value = std::vector<double>(v.u.fl, v.u.fl + v.count);
    break;
  default:
    fail(NWC_E_INVALID_OPTION, "option '" + o.key + "' has an unknown type");
  }
  return o;
}

nlohmann::json OptionValue::to_json() const {
  if (type == NWC_OPT_BOOL) return std::get<int64_t>(value) != 0;
  return std::visit([](const auto &x) { return nlohmann::json(x); }, value);
}

void OptionValues::set(OptionValue v) {
  bool replaced = false;
  for (auto &item : items_)
    if (item.key == v.key) {
      item = std::move(v);
      replaced = true;
      break;
    }
  if (!replaced) items_.push_back(std::move(v));
  rebuild_c_view();
}

const OptionValue *OptionValues::find(const std::string &key) const {
  for (auto &item : items_)
    if (item.key == key) return &item;
  return nullptr;
}

void OptionValues::rebuild_c_view() {
  c_items_.clear();
  for (const auto &item : items_) {
    nwc_option o{};
    o.key = item.key.c_str();
    o.value.type = item.type;
    if (auto *i = std::get_if<int64_t>(&item.value))
      o.value.u.i = *i;
    else if (auto *f = std::get_if<double>(&item.value))
      o.value.u.f = *f;
    else if (auto *s = std::get_if<std::string>(&item.value))
      o.value.u.s = s->c_str();
    else if (auto *il = std::get_if<std::vector<int64_t>>(&item.value)) {
      o.value.u.il = il->data();
      o.value.count = static_cast<uint32_t>(il->size());
    } else if (auto *fl = std::get_if<std::vector<double>>(&item.value)) {
      o.value.u.fl = fl->data();
      o.value.count = static_cast<uint32_t>(fl->size());
    }
    c_items_.push_back(o);
  }
  c_options_.struct_size = sizeof(nwc_options);
  c_options_.count = static_cast<uint32_t>(c_items_.size());
  c_options_.items = c_items_.data();
}

nlohmann::json OptionValues::to_json() const {
  auto j = nlohmann::json::object();
  for (const auto &item : items_) j[item.key] = item.to_json();
  return j;
}

OptionValues options_from_assignments(const std::vector<std::string> &assignments,
                                      const nwc_option_spec *specs, uint32_t spec_count,
                                      const std::string &context, bool skip_unknown) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto &assignment : assignments) {
    const auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
      fail(NWC_E_INVALID_OPTION,
           context + ": '" + assignment + "' is not an assignment; expected KEY=VALUE");
    const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
    const nwc_option_spec *spec = nullptr;
    for (uint32_t i = 0; i < spec_count; ++i)
      if (key == specs[i].key) spec = &specs[i];
    if (!spec) {
      if (skip_unknown) continue;
      std::string known;
      for (uint32_t i = 0; i < spec_count; ++i)
        known += (i ? ", " : "") + std::string(specs[i].key);
      fail(NWC_E_INVALID_OPTION, context + ": no option '" + key +
                                     "' (its options: " + (known.empty() ? "none" : known) + ")");
    }
    nlohmann::json v = nlohmann::json::parse(text, nullptr, false);
    if (v.is_discarded() || spec->type == NWC_OPT_STRING || spec->type == NWC_OPT_ENUM ||
        spec->type == NWC_OPT_PATH)
      v = text;
    j[key] = std::move(v);
  }
  return OptionValues::from_json(j, specs, spec_count, context);
}

OptionValues OptionValues::from_json(const nlohmann::json &j, const nwc_option_spec *specs,
                                     uint32_t spec_count, const std::string &context) {
  if (!j.is_object()) fail(NWC_E_CORRUPT_STREAM, context + ": options are not a JSON object");
  OptionValues out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const nwc_option_spec *spec = nullptr;
    for (uint32_t i = 0; i < spec_count; ++i)
      if (it.key() == specs[i].key) spec = &specs[i];
    if (!spec)
      fail(NWC_E_VERSION,
           context + ": option '" + it.key() +
               "' is not known to the installed plugin (written by a newer version?)");
    OptionValue v;
    v.key = it.key();
    v.type = spec->type;
    const auto &x = it.value();
    auto bad = [&] {
      fail(NWC_E_CORRUPT_STREAM,
           context + ": option '" + it.key() + "' should be a " + option_type_name(spec->type));
    };
    switch (spec->type) {
    case NWC_OPT_BOOL:
      if (!x.is_boolean()) bad();
      v.value = static_cast<int64_t>(x.get<bool>());
      break;
    case NWC_OPT_INT:
      if (!x.is_number_integer()) bad();
      v.value = x.get<int64_t>();
      break;
    case NWC_OPT_FLOAT:
      if (!x.is_number()) bad();
      v.value = x.get<double>();
      break;
    case NWC_OPT_STRING:
    case NWC_OPT_ENUM:
    case NWC_OPT_PATH:
      if (!x.is_string()) bad();
      v.value = x.get<std::string>();
      break;
    case NWC_OPT_INT_LIST: {
      if (!x.is_array()) bad();
      std::vector<int64_t> l;
      for (auto &e : x) {
        if (!e.is_number_integer()) bad();
        l.push_back(e.get<int64_t>());
      }
      v.value = std::move(l);
      break;
    }
    case NWC_OPT_FLOAT_LIST: {
      if (!x.is_array()) bad();
      std::vector<double> l;
      for (auto &e : x) {
        if (!e.is_number()) bad();
        l.push_back(e.get<double>());
      }
      v.value = std::move(l);
      break;
    }
    default:
      bad();
    }
    out.set(std::move(v));
  }
  return out;
}

} // namespace nwc::host
