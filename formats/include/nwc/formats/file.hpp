// nwc/formats/file.hpp — read-only memory maps and atomic output files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace nwc {

// A read-only memory map of a whole file. Errors (missing, unreadable, a directory) throw
// nwc::Error naming the path.
class MappedFile {
public:
  explicit MappedFile(const std::filesystem::path &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path &path() const { return path_; }
  // Drops this process's resident copy of the whole pages inside [begin, begin + len) (they stay
  // in the page cache and are mapped again if read): after reading a model tensor by tensor the
  // resident set would otherwise grow to the whole file.
  void release(const uint8_t *begin, size_t len) const noexcept;

private:
  std::filesystem::path path_;
  const uint8_t *data_ = nullptr;
  size_t size_ = 0;
};

// Writes to a temporary file in the target's directory and renames it into place on commit().
// If the object is destroyed without commit() (an error, an exception), the temporary file is
// removed and the target is left untouched. Also removed by remove_pending_temporaries() (called
// from a signal handler path by the CLI).
//
// The temporary is ".NAME.tmp.HOST.PID.N" (the writer's host name and process id), locked with
// flock() while it is written. A process that dies without cleaning up (a crash in a plugin,
// abort(), SIGKILL) leaves it behind; the next AtomicFile for the same target removes the
// temporaries of that target which name this host and a process that no longer runs, and which
// nobody holds locked.
class AtomicFile {
public:
  explicit AtomicFile(const std::filesystem::path &target);
  ~AtomicFile();
  AtomicFile(const AtomicFile &) = delete;
  AtomicFile &operator=(const AtomicFile &) = delete;

  void write(const void *data, size_t len); // appends; throws nwc::Error on I/O failure
  void write_at(uint64_t offset, const void *data, size_t len); // overwrite already written bytes
  uint64_t size() const { return size_; }
  void commit(); // flush, fsync, rename over the target
  const std::filesystem::path &target() const { return target_; }
  const std::filesystem::path &temporary() const { return temp_; }

private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// A file this process creates for its own use (an intermediate calibration): registered before
// it is written, removed when the object is destroyed and by remove_pending_temporaries().
class ScratchFile {
public:
  explicit ScratchFile(std::filesystem::path path);
  ~ScratchFile();
  ScratchFile(const ScratchFile &) = delete;
  ScratchFile &operator=(const ScratchFile &) = delete;
  const std::filesystem::path &path() const { return path_; }

private:
  std::filesystem::path path_;
};

// Unlinks every temporary file of live AtomicFile and ScratchFile objects. Async-signal-safe.
void remove_pending_temporaries() noexcept;

} // namespace nwc
