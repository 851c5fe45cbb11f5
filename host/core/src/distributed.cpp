#include "nwc/host/distributed.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#ifdef NWC_WITH_MPI
#include <mpi.h>
#endif

namespace nwc::host {

namespace {

// The number of processes mpirun (Open MPI, or a PMI-based launcher) started, 0 when none did.
int launched_size() {
  for (const char *var : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (const char *v = std::getenv(var); v && *v) return std::atoi(v);
  return 0;
}

#ifdef NWC_WITH_MPI
constexpr uint64_t kChunk = 1ull << 30; // bytes per MPI call: counts are ints

void check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail(NWC_E_IO, std::string("MPI ") + what + ": " + std::string(text, static_cast<size_t>(len)));
}

class MpiJob final : public Job {
public:
  MpiJob() {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "init");
    // Only one thread at a time talks to MPI (the main thread); worker threads never do.
    if (provided < MPI_THREAD_SERIALIZED)
      fail(NWC_E_INVALID_ARG, "MPI: the library does not support MPI_THREAD_SERIALIZED");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void send(int to, const void *data, uint64_t len) override {
    check(MPI_Send(&len, 1, MPI_UINT64_T, to, 0, MPI_COMM_WORLD), "send");
    send_bytes(to, static_cast<const uint8_t *>(data), len);
  }
  std::vector<uint8_t> receive(int from) override {
    uint64_t len = 0;
    check(MPI_Recv(&len, 1, MPI_UINT64_T, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "receive");
    std::vector<uint8_t> data(static_cast<size_t>(len));
    receive_bytes(from, data.data(), len);
    return data;
  }
  void receive_into(int from, void *data, uint64_t len) override {
    uint64_t got = 0;
    check(MPI_Recv(&got, 1, MPI_UINT64_T, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "receive");
    if (got != len)
      fail(NWC_E_INTERNAL, "MPI: rank " + std::to_string(from) + " sent " + std::to_string(got) +
                               " bytes, expected " + std::to_string(len));
    receive_bytes(from, static_cast<uint8_t *>(data), len);
  }
  void broadcast(std::vector<uint8_t> &data, int root) override {
    uint64_t len = data.size();
    check(MPI_Bcast(&len, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "broadcast");
    data.resize(static_cast<size_t>(len));
    for (uint64_t at = 0; at < len; at += kChunk)
      check(MPI_Bcast(data.data() + at, static_cast<int>(std::min(kChunk, len - at)), MPI_BYTE,
                      root, MPI_COMM_WORLD),
            "broadcast");
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

private:
  void send_bytes(int to, const uint8_t *p, uint64_t len) {
    for (uint64_t at = 0; at < len; at += kChunk)
      check(MPI_Send(p + at, static_cast<int>(std::min(kChunk, len - at)), MPI_BYTE, to, 0,
                     MPI_COMM_WORLD),
            "send");
  }
  void receive_bytes(int from, uint8_t *p, uint64_t len) {
    for (uint64_t at = 0; at < len; at += kChunk)
      check(MPI_Recv(p + at, static_cast<int>(std::min(kChunk, len - at)), MPI_BYTE, from, 0,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE),
            "receive");
  }
  int rank_ = 0, size_ = 1;
};
#endif

struct JobState {
  bool decided = false;
  std::unique_ptr<Job> job;
};

JobState &state() {
  static JobState s;
  return s;
}

} // namespace

bool mpi_built_in() {
#ifdef NWC_WITH_MPI
  return true;
#else
  return false;
#endif
}

Job *current_job() {
  JobState &s = state();
  if (s.decided) return s.job.get();
  s.decided = true;
  if (launched_size() <= 1) return nullptr;
#ifdef NWC_WITH_MPI
  s.job = std::make_unique<MpiJob>();
  return s.job.get();
#else
  fail(NWC_E_INVALID_ARG, "started by mpirun with " + std::to_string(launched_size()) +
                              " processes, but this nwc was built without MPI (configure with "
                              "-DNWC_MPI=ON and libopenmpi-dev installed)");
#endif
}

void finish_job() {
#ifdef NWC_WITH_MPI
  JobState &s = state();
  if (s.job) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
#endif
}

} // namespace nwc::host
