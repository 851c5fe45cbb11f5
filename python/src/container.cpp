// container.cpp — nwc._nwc.Container: a .nwc file opened for reading. Metadata from the manifest,
// per-tensor records, and tensors decoded on request into float32 NumPy arrays with the GIL
// released. close() unmaps the file; it waits for decodes in progress on other threads.
#include "bindings.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/threads.hpp"

#include <atomic>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <thread>

namespace nwc::python {

namespace {

using nlohmann::json;

class ContainerHandle {
public:
  ContainerHandle(RegistryPtr registry, const std::string &path, unsigned threads)
      : registry_(std::move(registry)), path_(path), threads_(threads) {
    reader_ = std::make_unique<ContainerReader>(path);
    decoder_ = std::make_unique<host::ContainerDecoder>(*reader_, *registry_);
  }

  const std::string &path() const { return path_; }
  bool closed() const {
    std::shared_lock lock(mu_);
    return !reader_;
  }

  // Drops the decoder and the reader (the mapped file). Waits for decodes in progress.
  void close() {
    std::unique_lock lock(mu_);
    decoder_.reset();
    reader_.reset();
  }

  // Runs f(reader, decoder) while the container stays open.
  template <class F> auto with_open(F &&f) const {
    std::shared_lock lock(mu_);
    if (!reader_) fail(NWC_E_INVALID_ARG, path_ + ": the container is closed");
    return f(*reader_, *decoder_);
  }

  const TensorRecord &record(const ContainerReader &reader, const std::string &name) const {
    const TensorRecord *t = reader.find(name);
    if (!t) fail(NWC_E_INVALID_ARG, path_ + ": no tensor named " + name);
    return *t;
  }

  unsigned threads(std::optional<unsigned> given) const { return given ? *given : threads_; }
  const host::Registry &registry() const { return *registry_; }

private:
  RegistryPtr registry_;
  std::string path_;
  unsigned threads_;
  mutable std::shared_mutex mu_;
  std::unique_ptr<ContainerReader> reader_;
  std::unique_ptr<host::ContainerDecoder> decoder_;
};

// Decodes the tensors `records` into `out`: the tensors spread over the threads (each decoded on
// one), or, with fewer tensors than threads, one after another with all threads on each tensor's
// blocks. The error reported is that of the first failing tensor in the given order.
void decode_tensors(const host::ContainerDecoder &decoder,
                    const std::vector<const TensorRecord *> &records, unsigned threads,
                    std::vector<std::vector<float>> &out) {
  const size_t n = records.size();
  out.resize(n);
  const unsigned workers = host::resolve_threads(threads);
  if (n < workers) {
    for (size_t i = 0; i < n; ++i) out[i] = decoder.decode_tensor(*records[i], workers);
    return;
  }
  std::atomic<size_t> next{0};
  std::mutex mu;
  size_t failed = n;
  std::exception_ptr error;
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      try {
        out[i] = decoder.decode_tensor(*records[i], 1);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (i < failed) {
          failed = i;
          error = std::current_exception();
        }
        next = n;
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (auto &t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

json layout_json(const ContainerLayout &l) {
  return {{"format_version", l.format_version},
          {"file_size", l.file_size},
          {"header_bytes", l.header_bytes},
          {"tensor_stream_bytes", l.tensor_stream_bytes},
          {"unreferenced_bytes", l.unreferenced_bytes},
          {"manifest_offset", l.manifest_offset},
          {"manifest_bytes", l.manifest_bytes},
          {"manifest_body_bytes", l.manifest_body_bytes},
          {"footer_bytes", l.footer_bytes},
          {"checksums", l.checksums}};
}

json manifest_json(const ContainerReader &reader) {
  const ContainerManifest &m = reader.manifest();
  json configs = json::array();
  for (const auto &c : m.stage_configs) {
    json stages = json::array();
    for (const auto &s : c.stages)
      stages.push_back({{"slot", s.slot},
                        {"plugin", s.plugin_id},
                        {"version", s.plugin_version},
                        {"stream_version", s.stream_version},
                        {"options", s.options}});
    configs.push_back(stages);
  }
  return {{"architecture", m.architecture},
          {"pipeline_name", m.pipeline_name},
          {"pipeline_text", m.pipeline_text},
          {"source_model", m.source_model},
          {"source_format", m.source_format},
          {"stage_configs", configs},
          {"extra", m.extra},
          {"layout", layout_json(reader.layout())}};
}

} // namespace

void bind_container(py::module_ &m) {
  using TensorRow = std::tuple<std::string, std::vector<int64_t>, std::string, std::string, int32_t,
                               size_t, uint64_t, uint64_t, double>;
  py::class_<ContainerHandle, std::shared_ptr<ContainerHandle>>(m, "Container",
                                                                "A .nwc container opened.")
      .def(py::init([](const std::shared_ptr<host::Registry> &reg, const std::string &path,
                       unsigned threads) {
             py::gil_scoped_release release;
             return std::make_shared<ContainerHandle>(reg, path, threads);
           }),
           py::arg("registry"), py::arg("path"), py::arg("threads") = 0)
      .def_property_readonly("path", &ContainerHandle::path)
      .def_property_readonly("closed", &ContainerHandle::closed)
      .def("close",
           [](ContainerHandle &h) {
             py::gil_scoped_release release; // a decode on another thread may hold the file
             h.close();
           })
      .def("manifest_json",
           [](const ContainerHandle &h) {
             return h.with_open([](const ContainerReader &r, const host::ContainerDecoder &) {
               return manifest_json(r).dump();
             });
           })
      .def(
          "tensors",
          [](const ContainerHandle &h) {
            return h.with_open([](const ContainerReader &r, const host::ContainerDecoder &) {
              std::vector<TensorRow> rows;
              const ContainerManifest &man = r.manifest();
              for (const auto &t : man.tensors)
                rows.emplace_back(t.name, t.shape, std::string(dtype_name(t.dtype)), t.storage,
                                  t.stage_config, t.blocks.size(), t.stream_bytes(), t.numel(),
                                  container_tensor_bytes(man, r.file_size(), t));
              return rows;
            });
          },
          "Per tensor: name, shape, dtype, storage, stage configuration, blocks, stream bytes, "
          "elements, bytes attributed (streams plus a share of header, manifest and footer).")
      .def(
          "decode",
          [](const ContainerHandle &h, const std::string &name, std::optional<unsigned> threads) {
            std::vector<int64_t> shape;
            std::vector<float> values;
            {
              py::gil_scoped_release release;
              values = h.with_open([&](const ContainerReader &r, const host::ContainerDecoder &d) {
                const TensorRecord &t = h.record(r, name);
                shape = t.shape;
                return d.decode_tensor(t, h.threads(threads));
              });
            }
            return to_numpy(std::move(values), shape);
          },
          py::arg("name"), py::arg("threads") = py::none(),
          "One tensor as float32, its blocks decoded on `threads` threads (None: the "
          "container's count), the GIL released.")
      .def(
          "decode_many",
          [](const ContainerHandle &h, const std::vector<std::string> &names,
             std::optional<unsigned> threads) {
            std::vector<std::vector<int64_t>> shapes;
            std::vector<std::vector<float>> values;
            {
              py::gil_scoped_release release;
              h.with_open([&](const ContainerReader &r, const host::ContainerDecoder &d) {
                std::vector<const TensorRecord *> records;
                for (const auto &n : names) {
                  records.push_back(&h.record(r, n));
                  shapes.push_back(records.back()->shape);
                }
                decode_tensors(d, records, h.threads(threads), values);
                return 0;
              });
            }
            py::list out;
            for (size_t i = 0; i < values.size(); ++i)
              out.append(to_numpy(std::move(values[i]), shapes[i]));
            return out;
          },
          py::arg("names"), py::arg("threads") = py::none(),
          "Several tensors as float32 arrays, decoded in parallel, the GIL released.")
      .def(
          "decompress",
          [](const ContainerHandle &h, const std::string &out, const std::string &dtype,
             std::optional<unsigned> threads) {
            DType d;
            if (!dtype_from_name(dtype, d) ||
                (d != DType::F32 && d != DType::F16 && d != DType::BF16))
              fail(NWC_E_INVALID_ARG, "dtype: expected F32, F16 or BF16, got '" + dtype + "'");
            py::gil_scoped_release release;
            h.with_open([&](const ContainerReader &r, const host::ContainerDecoder &) {
              host::decompress_to_safetensors(r.path(), out, h.registry(), d, h.threads(threads));
              return 0;
            });
          },
          py::arg("out"), py::arg("dtype") = "F32", py::arg("threads") = py::none(),
          "`nwc decompress`: every tensor into a safetensors file, the GIL released.")
      .def(
          "decode_block",
          [](const ContainerHandle &h, const std::string &name, size_t block) {
            std::vector<int64_t> shape;
            std::vector<float> values;
            {
              py::gil_scoped_release release;
              values = h.with_open([&](const ContainerReader &r, const host::ContainerDecoder &d) {
                const TensorRecord &t = h.record(r, name);
                std::vector<float> v = d.decode_block(t, block);
                const int64_t width = t.blocks[block].col_end - t.blocks[block].col_begin;
                shape = {static_cast<int64_t>(v.size()) / width, width};
                return v;
              });
            }
            return to_numpy(std::move(values), shape);
          },
          py::arg("name"), py::arg("block"),
          "Column block `block` of a pipeline-coded tensor: rows x block columns.");
}

} // namespace nwc::python
