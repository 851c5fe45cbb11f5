// nwc/host/target_rate.hpp — rate control for NWC pipelines (`nwc compress --target-bpw X`): pick,
// per model, the codec of the ladder and the quality-level fractions whose measured bits per weight
// of the coded tensors land closest to X. The reference method has no rate control; its operating
// points are the codec's lambda and fixed fractions.
#pragma once

#include "nwc/host/compress.hpp"

#include <string>
#include <vector>

namespace nwc::host {

struct RateCandidate {
  std::string codec;      // codec file
  double fraction_scale;  // multiplier of the pipeline's [levels] fractions (1 = as written)
  int level = -1;         // uniform level (pipelines without [levels]); -1 = not varied
  double bits_per_weight; // measured: stream bytes of the coded tensors x 8 / their weights
};

struct RateChoice {
  Pipeline pipeline; // the input pipeline with the chosen codec and fractions
  RateCandidate chosen;
  std::vector<RateCandidate> tried;
};

// The transform option that names the codec file a pipeline's base chain uses: the one
// bitstream-affecting path option of its transform that the pipeline sets (nwc.transform.neural's
// `codec`). nullptr when there is none, or more than one.
const nwc_option_spec *codec_path_option(const Pipeline &pipeline, const Registry &registry);

// The ladder is every file with the extension of the codec file the pipeline's transform names
// (its one bitstream-affecting path option that the pipeline sets, such as nwc.transform.neural's
// `codec`) in that file's directory. Without [levels], a transform with an int option `level` is
// also tried at levels 0 to 3. Candidates are compressed to a temporary file next to
// `scratch` (removed); fine-tuning ([blockft]) is skipped while searching, as it moves no bits.
RateChoice choose_for_target_bpw(const Model &model, const Pipeline &pipeline,
                                 const Registry &registry, const CompressSettings &settings,
                                 double target_bpw, const std::filesystem::path &scratch);

} // namespace nwc::host
