// nwc/host/distributed.hpp — the processes of one job started with `mpirun -np N nwc ...`.
//
// Rank 0 writes every output file; the other ranks compute their share (calibration windows,
// tensors) and send it to rank 0 in an order fixed by the job's size, so the output bytes are
// the same as a single process writes. Built with -DNWC_MPI=ON over Open MPI; without it, a
// process started by mpirun refuses to run rather than have N copies write the same file.
#pragma once

#include <cstdint>
#include <vector>

namespace nwc::host {

class Job {
public:
  virtual ~Job() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Messages of any length (MPI's int counts are handled inside). Each send is matched by exactly
  // one receive on the other side, in order.
  virtual void send(int to, const void *data, uint64_t len) = 0;
  virtual std::vector<uint8_t> receive(int from) = 0;
  // Receives a message of exactly `len` bytes (a mismatch is an error naming both lengths).
  virtual void receive_into(int from, void *data, uint64_t len) = 0;
  // Rank `root`'s bytes end up in every rank's `data`.
  virtual void broadcast(std::vector<uint8_t> &data, int root) = 0;
  virtual void barrier() = 0;
  // Ends every process of the job with this exit code: after an error on one rank the others
  // would otherwise wait for messages that never come.
  [[noreturn]] virtual void abort(int code) = 0;
};

// The job this process belongs to: an MPI job when started by mpirun with more than one process,
// nullptr for a single process (then everything runs locally). The first call initialises MPI.
// Throws nwc::Error when started by mpirun but built without MPI.
Job *current_job();

// Whether this build can run as an MPI job (configured with -DNWC_MPI=ON).
bool mpi_built_in();

// Ends MPI (at the end of main, after every collective call). No-op without a job.
void finish_job();

} // namespace nwc::host
