// parallel_for.hpp — the runtime's one way to spread independent model evaluations over threads
// (internal; includes LibTorch).
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace nwc::runtime {

// Runs fn(0..n-1) on up to `threads` threads, one LibTorch thread each (the per-item arithmetic,
// and so the result, does not depend on how many run beside it); rethrows the first failure.
inline void parallel_for(int64_t n, unsigned threads, const std::function<void(int64_t)> &fn) {
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto work = [&] {
    torch::NoGradGuard ng;
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        errors[static_cast<size_t>(i)] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads && static_cast<int64_t>(t) < n; ++t) pool.emplace_back(work);
  work();
  for (auto &t : pool) t.join();
  for (auto &e : errors)
    if (e) std::rethrow_exception(e);
}

} // namespace nwc::runtime
