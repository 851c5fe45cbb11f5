// decompress.cpp — a container opened as a Model that decodes on demand, and decompression of a
// whole container to a safetensors file.
#include "nwc/host/decode.hpp"

#include "nwc/formats/safetensors.hpp"
#include "stages.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

namespace nwc::host {

using detail::as_matrix;

Model open_container_model(const std::filesystem::path &path, const Registry &registry,
                           unsigned threads) {
  struct State {
    ContainerReader reader;
    std::unique_ptr<ContainerDecoder> decoder;
    explicit State(const std::filesystem::path &p) : reader(p) {}
  };
  auto state = std::make_shared<State>(path);
  state->decoder = std::make_unique<ContainerDecoder>(state->reader, registry);
  Model m;
  m.format = "nwc";
  m.path = path;
  m.arch = Architecture::from_json(state->reader.manifest().architecture);
  for (const auto &t : state->reader.manifest().tensors) {
    ModelTensor mt;
    mt.info.name = t.name;
    mt.info.dtype = t.dtype;
    mt.info.shape = t.shape;
    const TensorRecord *rec = &t;
    State *s = state.get();
    mt.load = [s, rec, threads] { return s->decoder->decode_tensor(*rec, threads); };
    m.tensors.push_back(std::move(mt));
  }
  m.keepalive = state;
  return m;
}

void decompress_to_safetensors(const std::filesystem::path &in, const std::filesystem::path &out,
                               const Registry &registry, DType dtype, unsigned threads,
                               const ProgressFn &progress) {
  ContainerReader reader(in);
  ContainerDecoder decoder(reader, registry);
  const Architecture arch = Architecture::from_json(reader.manifest().architecture);
  const std::vector<TensorRecord> &tensors = reader.manifest().tensors;
  std::vector<TensorInfo> infos;
  for (const auto &t : tensors) infos.push_back(TensorInfo{t.name, dtype, t.shape});
  std::map<std::string, std::string> meta{{"format", "pt"},
                                          {"nwc.architecture", arch.to_json().dump()},
                                          {"nwc.source", in.filename().string()}};
  SafetensorsWriter writer(out, infos, meta);

  // Work units in model order: the column blocks of a pipeline tensor with several blocks, else
  // the whole tensor. Worker threads take units in order, so blocks of one tensor and tensors with
  // a single unit (raw, zstd, one block) decode in parallel; the calling thread writes the tensors
  // in model order as they complete. At most `window` tensors are in memory (decoding, decoded or
  // being written). The error reported is the one of the first failing unit in model order.
  struct TensorJob {
    const TensorRecord *t = nullptr;
    size_t units = 1, done = 0; // done: guarded by mu
    std::vector<float> values;
    std::once_flag alloc;
  };
  std::vector<std::unique_ptr<TensorJob>> jobs;
  for (const auto &t : tensors) {
    auto j = std::make_unique<TensorJob>();
    j->t = &t;
    if (t.storage == "pipeline" && t.blocks.size() > 1) j->units = t.blocks.size();
    jobs.push_back(std::move(j));
  }
  const unsigned workers = resolve_threads(threads);
  const size_t window = workers + 1;
  std::mutex mu;
  std::vector<std::vector<float>> spare; // buffers of written tensors, reused (no fresh pages)
  std::condition_variable work_cv, done_cv;
  size_t next_job = 0, next_unit = 0, written = 0;
  bool stop = false;
  std::pair<size_t, size_t> failed{jobs.size(), 0};
  std::exception_ptr error;
  auto record = [&](size_t job, size_t unit, std::exception_ptr e) { // with mu held
    if (std::make_pair(job, unit) < failed) {
      failed = {job, unit};
      error = std::move(e);
    }
    stop = true;
    work_cv.notify_all();
    done_cv.notify_all();
  };
  auto work = [&] {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      work_cv.wait(lock,
                   [&] { return stop || next_job >= jobs.size() || next_job < written + window; });
      if (stop || next_job >= jobs.size()) return;
      const size_t ji = next_job, u = next_unit;
      TensorJob &j = *jobs[ji];
      if (++next_unit == j.units) {
        ++next_job;
        next_unit = 0;
      }
      lock.unlock();
      try {
        const TensorRecord &t = *j.t;
        if (j.units == 1) {
          j.values = decoder.decode_tensor(t, 1);
        } else {
          std::vector<float> block = decoder.decode_block(t, u);
          const BlockRecord &br = t.blocks[u];
          const int64_t w = br.col_end - br.col_begin;
          const int64_t cols = as_matrix(t.shape).second;
          std::call_once(j.alloc, [&] {
            const auto n = static_cast<size_t>(t.numel());
            {
              std::lock_guard<std::mutex> guard(mu);
              for (auto &b : spare)
                if (b.capacity() >= n) {
                  j.values = std::move(b);
                  std::swap(b, spare.back());
                  spare.pop_back();
                  break;
                }
            }
            if (j.values.capacity() < n) j.values = tensor_buffer(n);
            j.values.resize(n); // every block overwrites its columns
          });
          for (int64_t r = 0; r * w < static_cast<int64_t>(block.size()); ++r)
            std::copy_n(block.data() + r * w, w, j.values.data() + r * cols + br.col_begin);
        }
        lock.lock();
        if (++j.done == j.units) done_cv.notify_all();
      } catch (...) {
        lock.lock();
        record(ji, u, std::current_exception());
      }
    }
  };
  std::vector<std::thread> pool;
  auto join = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto &th : pool) th.join();
    pool.clear();
  };
  try {
    for (unsigned i = 0; i < workers; ++i) pool.emplace_back(work);
    for (size_t i = 0; i < jobs.size(); ++i) {
      std::vector<float> values;
      {
        std::unique_lock<std::mutex> lock(mu);
        done_cv.wait(lock, [&] { return stop || jobs[i]->done == jobs[i]->units; });
        if (stop) break;
        values = std::move(jobs[i]->values);
      }
      writer.write(tensors[i].name, values.data());
      {
        std::lock_guard<std::mutex> lock(mu);
        written = i + 1;
        // One spare at most: memory stays about (window + 1) x the largest tensor.
        if (spare.empty() && values.capacity() > 0) spare.push_back(std::move(values));
      }
      work_cv.notify_all();
      if (progress) progress(i + 1, tensors.size(), tensors[i].name);
    }
  } catch (...) {
    join();
    throw;
  }
  join();
  if (error) std::rethrow_exception(error);
  writer.commit();
}

} // namespace nwc::host
