// file.cpp — read-only memory maps and write-to-temporary-then-rename output files.
#include "nwc/formats/file.hpp"

#include "nwc/cpp/error.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace nwc {

namespace fs = std::filesystem;

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// Registry of live temporary files, readable from a signal handler: fixed storage, no locks, no
// allocation. A slot is 0 = free, 1 = being filled or emptied, 2 = holds a path to unlink.
constexpr int kSlots = 64;
std::atomic<int> g_slot_state[kSlots];
char g_slot_path[kSlots][PATH_MAX];
static_assert(std::atomic<int>::is_always_lock_free, "signal-safe registry needs lock-free ints");

void register_temporary(const std::string &path) {
  if (path.size() >= PATH_MAX) return; // cannot be registered; the destructor still removes it
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (g_slot_state[i].compare_exchange_strong(expected, 1)) {
      std::memcpy(g_slot_path[i], path.c_str(), path.size() + 1);
      g_slot_state[i].store(2);
      return;
    }
  }
  // More than kSlots files open at once: the extra ones are only removed by their destructors.
}

void unregister_temporary(const std::string &path) {
  for (int i = 0; i < kSlots; ++i) {
    if (g_slot_state[i].load() != 2 || std::strcmp(g_slot_path[i], path.c_str()) != 0) continue;
    int expected = 2;
    if (g_slot_state[i].compare_exchange_strong(expected, 1)) {
      g_slot_path[i][0] = '\0';
      g_slot_state[i].store(0);
      return;
    }
  }
}

std::atomic<uint64_t> g_temp_counter{0};

// Serializes creating temporaries with removing stale ones, so that this process never mistakes a
// temporary of its own that is being created (not yet locked) for a stale one.
std::mutex g_create_mutex;

// This machine's name as it goes into temporary names: letters, digits, '-' and '.' only.
const std::string &host_tag() {
  static const std::string tag = [] {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || !name[0]) return std::string("unknown-host");
    std::string t(name);
    for (char &c : t)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.'))
        c = '_';
    return t;
  }();
  return tag;
}

// The temporary of target `name` in its directory: ".NAME.tmp.HOST.PID.N". The host and the pid
// say who writes it; the writer also holds an exclusive flock() on it while it lives.
std::string temporary_name(const std::string &name, uint64_t counter) {
  return "." + name + ".tmp." + host_tag() + "." + std::to_string(::getpid()) + "." +
         std::to_string(counter);
}

bool all_digits(const std::string &s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// Whether `entry` of a directory is a temporary of target `name` that its writer left behind: it
// names this host and a process that no longer runs (or this process, which holds every live
// temporary of its own locked), and nobody holds its lock. Anything else (another host's
// temporary, an unrelated name, a live writer, a lock that cannot be tested) is not stale.
bool is_stale_temporary(const fs::path &entry, const std::string &name) {
  const std::string file = entry.filename().string(), prefix = "." + name + ".tmp.";
  if (file.size() <= prefix.size() || file.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string rest = file.substr(prefix.size()); // HOST.PID.N
  const size_t last = rest.rfind('.');
  if (last == std::string::npos || last == 0) return false;
  const size_t mid = rest.rfind('.', last - 1);
  if (mid == std::string::npos) return false;
  const std::string host = rest.substr(0, mid), pid_text = rest.substr(mid + 1, last - mid - 1);
  if (host != host_tag() || !all_digits(pid_text) || !all_digits(rest.substr(last + 1)) ||
      pid_text.size() > 9)
    return false;
  const auto pid = static_cast<pid_t>(std::stol(pid_text));
  if (pid <= 0) return false;
  if (pid != ::getpid() && (::kill(pid, 0) == 0 || errno != ESRCH)) return false; // alive
  const int fd = ::open(entry.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool unlocked = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd); // releases the lock just taken
  return unlocked;
}

// Removes the temporaries of target `name` in `dir` that crashed or killed writers left behind
// (a writer that exits normally, throws or gets SIGINT/SIGTERM removes its own).
void remove_stale_temporaries(const fs::path &dir, const std::string &name) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_stale_temporary(it->path(), name)) ::unlink(it->path().c_str());
}

} // namespace

MappedFile::MappedFile(const fs::path &path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) fail(NWC_E_IO, path.string() + ": no such file or directory");
    fail(NWC_E_IO, path.string() + ": cannot open for reading: " + errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(NWC_E_IO, path.string() + ": cannot stat: " + errno_text(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(NWC_E_IO, path.string() + ": is a directory (expected a file)");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(NWC_E_IO, path.string() + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void *p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(NWC_E_IO,
           path.string() + ": cannot map " + std::to_string(size_) + " bytes: " + errno_text(err));
    }
    data_ = static_cast<const uint8_t *>(p);
  }
  ::close(fd); // the mapping stays valid without the descriptor
}

void MappedFile::release(const uint8_t *begin, size_t len) const noexcept {
  if (!data_ || begin < data_ || len > size_ || begin > data_ + (size_ - len)) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + len) / page * page;
  if (last > first) // read-only private pages never written: dropping them loses nothing
    ::madvise(reinterpret_cast<void *>(first), last - first, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t *>(data_), size_);
}

AtomicFile::AtomicFile(const fs::path &target) : target_(target) {
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  if (target.filename().empty())
    fail(NWC_E_IO, target.string() + ": not a file name (expected a path to an output file)");
  temp_ = target.parent_path() / temporary_name(target.filename().string(), g_temp_counter++);
  std::lock_guard<std::mutex> lock(g_create_mutex);
  remove_stale_temporaries(dir, target.filename().string());
  // Registered before it exists, so that a signal arriving right after open() still removes it
  // (unlinking a name that does not exist yet is harmless).
  register_temporary(temp_.string());
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    unregister_temporary(temp_.string());
    fail(NWC_E_IO, target.string() + ": cannot create a temporary file in " + dir.string() + ": " +
                       errno_text(err));
  }
  // Held until the file is closed or this process ends, however it ends: what tells a later run
  // that the temporary is not stale. Where locks are not supported the pid alone decides.
  ::flock(fd_, LOCK_EX | LOCK_NB);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
  unregister_temporary(temp_.string());
}

void AtomicFile::write(const void *data, size_t len) {
  if (fd_ < 0) fail(NWC_E_IO, target_.string() + ": write after commit");
  const auto *p = static_cast<const uint8_t *>(data);
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::write(fd_, p + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      fail(NWC_E_IO, target_.string() + ": write failed after " + std::to_string(size_ + done) +
                         " bytes: " + errno_text(err));
    }
    done += static_cast<size_t>(n);
  }
  size_ += len;
}

void AtomicFile::write_at(uint64_t offset, const void *data, size_t len) {
  if (fd_ < 0) fail(NWC_E_IO, target_.string() + ": write after commit");
  if (offset > size_ || len > size_ - offset)
    fail(NWC_E_INVALID_ARG, target_.string() + ": write_at [" + std::to_string(offset) + ", +" +
                                std::to_string(len) + ") goes past the " + std::to_string(size_) +
                                " bytes written so far");
  const auto *p = static_cast<const uint8_t *>(data);
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd_, p + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      fail(NWC_E_IO, target_.string() + ": write at offset " + std::to_string(offset + done) +
                         " failed: " + errno_text(err));
    }
    done += static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (committed_) return;
  if (fd_ < 0) fail(NWC_E_IO, target_.string() + ": commit on a closed file");
  if (::fsync(fd_) != 0) {
    const int err = errno;
    fail(NWC_E_IO, target_.string() + ": fsync failed: " + errno_text(err));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    fail(NWC_E_IO, target_.string() + ": close failed: " + errno_text(err));
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    fail(NWC_E_IO,
         target_.string() + ": cannot rename the temporary file into place: " + errno_text(err));
  }
  committed_ = true;
  unregister_temporary(temp_.string());
  // Make the rename durable; failure here does not undo the (already visible) result.
  fs::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

ScratchFile::ScratchFile(std::filesystem::path path) : path_(std::move(path)) {
  register_temporary(path_.string());
}

ScratchFile::~ScratchFile() {
  unregister_temporary(path_.string());
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

void remove_pending_temporaries() noexcept {
  for (int i = 0; i < kSlots; ++i)
    if (g_slot_state[i].load() == 2) ::unlink(g_slot_path[i]);
}

} // namespace nwc
