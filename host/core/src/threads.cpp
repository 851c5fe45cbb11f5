// threads.cpp — how many worker threads "0 = all cores" means.
#include "nwc/host/threads.hpp"

#include <thread>

namespace nwc::host {

unsigned resolve_threads(unsigned threads) {
  if (threads > 0) return threads;
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? hc : 1;
}

} // namespace nwc::host
