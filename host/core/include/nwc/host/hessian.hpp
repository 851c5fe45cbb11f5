// nwc/host/hessian.hpp — a linear layer's input Hessian as the compression driver receives it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace nwc::host {

// An input Hessian (cols x cols float32, row-major), in memory or loaded when a coder asks for it:
// the Hessians of an 8B-class model take tens of gigabytes, more than compress should hold.
class HessianRef {
public:
  using Loader = std::function<std::shared_ptr<const std::vector<float>>()>;
  HessianRef() = default;
  HessianRef(std::shared_ptr<const std::vector<float>> values); // NOLINT: in memory
  HessianRef(std::shared_ptr<std::vector<float>> values);       // NOLINT: in memory
  HessianRef(uint64_t entries, Loader load);                    // loaded on demand
  uint64_t size() const { return entries_; }
  std::shared_ptr<const std::vector<float>> load() const; // checks the entry count

private:
  uint64_t entries_ = 0;
  Loader load_;
};

} // namespace nwc::host
