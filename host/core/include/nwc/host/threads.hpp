// nwc/host/threads.hpp — what the compression driver and the container decoder share about their
// worker threads: how many to start, and the progress report called as tensors finish.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace nwc::host {

// Reports "done of total" after each tensor; name is the tensor just finished.
using ProgressFn = std::function<void(size_t done, size_t total, const std::string &name)>;

unsigned resolve_threads(unsigned threads); // 0 -> hardware concurrency

} // namespace nwc::host
