// registry.cpp — plugin discovery and pipelines: nwc._nwc.Registry (the installed plugins, their
// option schemas and reference pages) and nwc._nwc.Pipeline (a TOML pipeline parsed and validated
// against a registry, with the CLI's file:line:column errors).
#include "bindings.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/host/options.hpp"
#include "nwc/host/plugin_docs.hpp"

#include <nlohmann/json.hpp>

namespace nwc::python {

namespace {

using nlohmann::json;

// host::plugin_json plus what the Python layer shows: the interface and the reference page.
json python_plugin_json(const host::Plugin &p) {
  json j = host::plugin_json(p);
  j["interface"] = host::kind_interface(p.kind);
  j["markdown"] = host::plugin_markdown(p);
  return j;
}

const host::Plugin &installed(const host::Registry &reg, const std::string &id) {
  if (const host::Plugin *p = reg.find(id)) return *p;
  std::vector<std::string> ids;
  for (const auto &q : reg.plugins()) ids.push_back(q->id);
  const std::string hint = host::did_you_mean(id, ids);
  fail(NWC_E_INVALID_ARG, "plugin " + id + " is not installed" +
                              (hint.empty() ? "" : " (did you mean " + hint + "?)"));
}

// Everything a pipeline file says, after validation, as JSON (the Python layer's Pipeline.config).
json pipeline_json(const host::Pipeline &pl) {
  auto rule_stages = [](const host::OverrideRule &r) {
    json stages = json::object();
    for (size_t s = 0; s < host::kSlotCount; ++s)
      if (r.stages[s])
        stages[host::kSlotNames[s]] = {{"plugin", r.stages[s]->plugin},
                                       {"options", r.stages[s]->options.to_json()}};
    return stages;
  };
  json overrides = json::array();
  for (const auto &r : pl.overrides)
    overrides.push_back(
        {{"match", r.match}, {"skip", r.skip}, {"stages", rule_stages(r)}, {"where", r.where}});
  json candidates = json::array();
  for (const auto &r : pl.allocate.candidates)
    candidates.push_back({{"stages", rule_stages(r)}, {"where", r.where}});
  const char *group = pl.allocate.group == host::AllocateGroup::Block  ? "block"
                      : pl.allocate.group == host::AllocateGroup::Kind ? "kind"
                                                                       : "tensor";
  json base = pl.base.to_json();
  return {
      {"name", pl.name},
      {"method", pl.method},
      {"file", pl.file.string()},
      {"select", pl.select},
      {"exclude", pl.exclude},
      {"unselected", pl.unselected},
      {"stream_columns", pl.stream_columns},
      {"stages", base},
      {"overrides", overrides},
      {"calibration", pl.calibration},
      {"calibration_mode",
       pl.calibration_mode == host::CalibrationMode::Sequential ? "sequential" : "original"},
      {"levels", pl.levels.enabled ? json{{"fractions", pl.levels.fractions}} : json(nullptr)},
      {"importance", pl.importance.enabled},
      {"blockft", pl.blockft.enabled ? json{{"epochs", pl.blockft.epochs},
                                            {"lr", pl.blockft.lr},
                                            {"batch", pl.blockft.batch},
                                            {"sequences", pl.blockft.sequences},
                                            {"validation", pl.blockft.validation},
                                            {"seq_len", pl.blockft.seq_len}}
                                     : json(nullptr)},
      {"awq", pl.awq.enabled},
      {"allocate", pl.allocate.enabled ? json{{"codecs", pl.allocate.codecs},
                                              {"candidates", candidates},
                                              {"group", group},
                                              {"target_bpw", pl.allocate.target_bpw},
                                              {"tokens", pl.allocate.tokens},
                                              {"seq_len", pl.allocate.seq_len}}
                                       : json(nullptr)},
      {"rotation", !pl.rotation_where.empty()},
  };
}

} // namespace

void bind_registry(py::module_ &m) {
  m.def(
      "search_path",
      [](const std::vector<std::string> &dirs) {
        std::vector<std::string> out;
        for (const auto &p :
             host::Registry::search_path({dirs.begin(), dirs.end()}, /*default_paths=*/false))
          out.push_back(p.string());
        return out;
      },
      py::arg("dirs"),
      "The given directories followed by those of NWC_PLUGIN_PATH (':'-separated).");
  m.def(
      "set_log_level", [](int32_t level) { host::set_log_level(level); }, py::arg("level"),
      "Messages of the host and plugins below this level (0 debug, 1 info, 2 warning, 3 error) "
      "are not printed to stderr.");

  py::class_<host::Registry, std::shared_ptr<host::Registry>>(
      m, "Registry", "The plugins found in a list of directories (nwc::host::Registry).")
      .def(py::init([](const std::vector<std::string> &dirs) {
             auto reg = std::make_shared<host::Registry>();
             py::gil_scoped_release release;
             reg->scan({dirs.begin(), dirs.end()});
             return reg;
           }),
           py::arg("dirs"))
      .def(
          "plugins_json",
          [](const host::Registry &reg) {
            json out = json::array();
            for (const auto &p : reg.plugins()) out.push_back(python_plugin_json(*p));
            return out.dump();
          },
          "Every plugin as JSON: `nwc plugins list --json` plus interface and markdown.")
      .def(
          "plugin_json",
          [](const host::Registry &reg, const std::string &id) {
            return python_plugin_json(installed(reg, id)).dump();
          },
          py::arg("id"))
      .def("index_markdown",
           [](const host::Registry &reg) {
             std::vector<const host::Plugin *> plugins;
             for (const auto &p : reg.plugins()) plugins.push_back(p.get());
             return host::plugins_index_markdown(plugins);
           })
      .def("diagnostics", [](const host::Registry &reg) {
        std::vector<std::pair<std::string, std::string>> out;
        for (const auto &d : reg.diagnostics()) out.emplace_back(d.path.string(), d.message);
        return out;
      });

  py::class_<PipelineHandle, std::shared_ptr<PipelineHandle>>(
      m, "Pipeline", "A pipeline file parsed and validated against the installed plugins.")
      .def_static(
          "load",
          [](const std::shared_ptr<host::Registry> &reg, const std::string &path) {
            auto h = std::make_shared<PipelineHandle>();
            h->registry = reg;
            h->pipeline = host::load_pipeline(path, *reg);
            return h;
          },
          py::arg("registry"), py::arg("path"))
      .def_static(
          "parse",
          [](const std::shared_ptr<host::Registry> &reg, const std::string &text,
             const std::string &file) {
            auto h = std::make_shared<PipelineHandle>();
            h->registry = reg;
            h->pipeline = host::parse_pipeline(text, file, *reg);
            return h;
          },
          py::arg("registry"), py::arg("text"), py::arg("file"))
      .def_property_readonly("text", [](const PipelineHandle &h) { return h.pipeline.text; })
      .def("config_json", [](const PipelineHandle &h) { return pipeline_json(h.pipeline).dump(); })
      .def(
          "chain_for_json",
          [](const PipelineHandle &h, const std::string &tensor) -> py::object {
            const auto chain = h.pipeline.chain_for(tensor);
            if (!chain) return py::none();
            return py::str(chain->to_json().dump());
          },
          py::arg("tensor"));
}

} // namespace nwc::python
