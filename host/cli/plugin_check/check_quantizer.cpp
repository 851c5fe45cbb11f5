// nwc plugins check: the quantizer steps.
#include "check_steps.hpp"
#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nwc::cli::check {

using host::Instance;

bool check_quantizer(const Instance &inst) {
  const auto &qi = inst.interface_as<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  const int64_t n = kRows, m = 128;
  std::vector<float> x = synthetic(static_cast<size_t>(n * m), 1.0, 3), deq, back;
  std::vector<int32_t> sym;
  TensorBlock b(0, m);
  Sink side;
  return step("quantize",
              [&] {
                sym.assign(x.size(), 0);
                deq.assign(x.size(), NAN);
                View in(x.data(), NWC_DTYPE_F32, n, m);
                View s(sym.data(), NWC_DTYPE_I32, n, m);
                View d(deq.data(), NWC_DTYPE_F32, n, m);
                inst.check(qi.quantize(inst.raw(), &b.info, in.get(), s.get(), d.get(), &side.sink),
                           "quantize");
                require(all_finite(deq), "quantize returned non-finite dequantized values");
                return rel_error(x, deq);
              }) &&
         step("dequantize", [&] {
           back.assign(x.size(), NAN);
           View s(sym.data(), NWC_DTYPE_I32, n, m);
           View out(back.data(), NWC_DTYPE_F32, n, m);
           inst.check(qi.dequantize(inst.raw(), &b.info, s.get(), side.view(), out.get()),
                      "dequantize");
           require(std::memcmp(back.data(), deq.data(), back.size() * sizeof(float)) == 0,
                   "dequantize differs from the values quantize returned (max difference " +
                       std::to_string(max_abs_diff(back, deq)) + ")");
           return std::string("identical to quantize's reconstruction");
         });
}

} // namespace nwc::cli::check
