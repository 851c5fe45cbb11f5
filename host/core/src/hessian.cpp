// hessian.cpp — input Hessians held in memory or loaded on demand.
#include "nwc/host/hessian.hpp"

#include "nwc/cpp/error.hpp"

#include <string>

namespace nwc::host {

HessianRef::HessianRef(std::shared_ptr<const std::vector<float>> values)
    : entries_(values ? values->size() : 0), load_([v = std::move(values)] { return v; }) {}

HessianRef::HessianRef(std::shared_ptr<std::vector<float>> values)
    : HessianRef(std::shared_ptr<const std::vector<float>>(std::move(values))) {}

HessianRef::HessianRef(uint64_t entries, Loader load) : entries_(entries), load_(std::move(load)) {}

std::shared_ptr<const std::vector<float>> HessianRef::load() const {
  auto v = load_ ? load_() : nullptr;
  if (!v || v->size() != entries_)
    fail(NWC_E_INTERNAL, "Hessian: loaded " + std::to_string(v ? v->size() : 0) +
                             " entries, expected " + std::to_string(entries_));
  return v;
}

} // namespace nwc::host
