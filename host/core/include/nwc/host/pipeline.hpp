// nwc/host/pipeline.hpp — pipeline files (TOML): which tensors to code and with which stages.
//
//   [pipeline]     name, method, select (glob patterns), exclude, unselected
//                  ("raw" | "zstd" | "zstd-f16")
//   [chunker] [transform] [quantizer] [entropy] [compensator] [rotation]   plugin = "id", then
//                  its options (without [compensator]: kDefaultCompensator of
//                  nwc/host/defaults.hpp; [rotation] is optional: an orthogonal transform of the
//                  whole matrix, undone after decoding)
//   [calibration]  mode = "original" | "sequential" (where compensators' Hessians come from),
//                  text, tokens, seq_len
//   [levels]       source = "hessian", fractions = [0.001, 0.01, 0.1]: per-column quality levels
//                  from the calibration Hessian's diagonal (NWC's importance levels)
//   [importance]   source = "hessian": the quantizer gets the calibration Hessian's diagonal as
//                  per-weight importance (llama.cpp's imatrix; nwc_block_info.importance)
//   [blockft]      epochs, lr, batch, sequences, validation, seq_len: fine-tune each decoder block
//                  toward the original block's outputs after each linear is coded (blockft.hpp)
//   [allocate]     codecs, target_bpw, group, tokens, seq_len, [[allocate.candidate]]: stage
//                  options per tensor (or group of tensors) chosen by measured sensitivity under
//                  a rate budget (nwc/runtime/allocate.hpp)
//   [awq]          bits, group, grid, duo_scaling, clip, max_shrink, clip_grid, clip_tokens:
//                  AWQ's activation-aware scaling before coding (nwc/runtime/awq.hpp)
//   [[override]]   match = pattern(s); skip = true, or per-slot tables: quantizer = { bits = 8 }
//
// The whole file is validated against the installed plugins' schemas when it is loaded, before
// any work: every error names file:line:column, the key, and what was expected.
#pragma once

#include "nwc/host/options.hpp"
#include "nwc/host/registry.hpp"

#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace nwc::host {

// Rotation (ABI 1.4) transforms the whole matrix before it is chunked and is undone after its
// blocks are merged; appended last so that the other slots keep their numbers.
enum class Slot {
  Chunker = 0,
  Transform = 1,
  Quantizer = 2,
  Entropy = 3,
  Compensator = 4,
  Rotation = 5
};
inline constexpr size_t kSlotCount = 6;
inline constexpr std::array<const char *, kSlotCount> kSlotNames = {
    "chunker", "transform", "quantizer", "entropy", "compensator", "rotation"};
uint32_t slot_kind(Slot s); // NWC_KIND_* a plugin in this slot must have

struct StageSpec {
  std::string plugin; // empty = slot unused (transform, compensator are optional)
  OptionValues options;
};

// The stages that code one tensor, after [[override]] rules.
struct StageChain {
  std::array<StageSpec, kSlotCount> stages;
  const StageSpec &operator[](Slot s) const { return stages[static_cast<size_t>(s)]; }
  StageSpec &operator[](Slot s) { return stages[static_cast<size_t>(s)]; }
  nlohmann::json to_json() const; // canonical form, also used as a cache key
};

struct OverrideRule {
  std::vector<std::string> match;
  bool skip = false;
  // levels = false: the matching tensors get no per-column quality levels from [levels] (their
  // transform's own `level` option applies to every column), e.g. an embedding, which has no
  // calibration Hessian to rank its columns; levels = true turns them back on.
  std::optional<bool> levels;
  std::array<std::optional<StageSpec>, kSlotCount> stages; // options merged over the base chain
  std::string where; // "file:line:column" of the [[override]] table, for messages
};

// Quality levels per input column from calibration importance (diag H): the top fractions[0] of
// the columns get level fractions.size(), the next fractions[1] one less, ..., the rest level 0.
struct LevelsConfig {
  bool enabled = false;
  std::vector<double> fractions;
  std::string where; // "file:line:column" of the [levels] table
};

// Importance weights for the quantizer (ABI 1.3, nwc_block_info.importance): the diagonal of each
// linear's calibration Hessian — the mean squared activation of each input column, which is
// llama.cpp's importance matrix up to a constant factor — split into chunks like the weights.
struct ImportanceConfig {
  bool enabled = false;
  std::string where; // "file:line:column" of the [importance] table
};

// Block-wise output-guided fine-tuning (nwc/runtime/blockft.hpp).
struct BlockFtConfig {
  bool enabled = false;
  int64_t epochs = 5;
  double lr = 1e-4;
  int64_t batch = 4;      // windows per step
  int64_t sequences = 32; // training windows of calibration text
  int64_t validation = 8; // held-out windows that choose the best state
  int64_t seq_len = 128;  // tokens per window
  // Which hidden states a block is fine-tuned on: the original model's (teacher forcing, the
  // reference's) or the already coded blocks' (each block then also corrects the error that
  // reaches it). The target is always the original block's output on the original states.
  bool coded_inputs = false;
  // After the last block: epochs of end-to-end fine-tuning of every row scale and norm on the KL
  // divergence to the original model's next-token distributions (0 = none), and its learning rate.
  int64_t e2e_epochs = 0;
  double e2e_lr = 1e-4;
  int64_t e2e_sequences = 0; // its training windows (0 = sequences); validation windows follow them
  // The end-to-end stage also trains the token embedding and the output head where they are
  // stored uncoded (QTIP's end-to-end stage trains every parameter that is not a code).
  bool e2e_embeddings = false;
  // Seed of the order in which training windows are batched: runs that differ only in it show how
  // much of a difference between two pipelines is the fine-tuning's own spread.
  int64_t seed = 0;
};

// Which tensors [allocate] gives one choice together: each alone, every tensor of one decoder block
// (the first number in the name: model.layers.3.*), or every tensor of one kind (the name with
// that number as '*': model.layers.*.self_attn.k_proj.weight). Groups need fewer measurements.
enum class AllocateGroup { Tensor, Block, Kind };

// Mixed precision by measured sensitivity (nwc/runtime/allocate.hpp): before coding, every coded
// tensor is coded as the pipeline codes it and with each candidate (a codec of `codecs`, or an
// [[allocate.candidate]]'s stage options over the pipeline's chain); the KL divergence that each
// choice alone causes on calibration windows and its measured bits decide, under a budget of
// target_bpw bits per coded weight, which candidate each tensor (or group) gets ([[override]] rules
// added to the pipeline in memory; the container records each tensor's chain as always).
struct AllocateConfig {
  bool enabled = false;
  std::vector<std::string> codecs; // resolved paths, the alternatives to the base codec
  // [[allocate.candidate]] tables: per-slot options merged over each tensor's chain as an
  // [[override]] merges them (match, skip and levels unused), after the `codecs` candidates.
  std::vector<OverrideRule> candidates;
  AllocateGroup group = AllocateGroup::Tensor;
  double target_bpw = 0;
  int64_t tokens = 4096; // calibration tokens the sensitivities are measured on
  int64_t seq_len = 128; // tokens per window
  std::string where;     // "file:line:column" of the [allocate] table
};

// The settings of AWQ's search (activation-aware weight scaling, nwc/runtime/awq.hpp), with
// AutoAWQ's defaults and names.
struct AwqSearchSettings {
  int64_t bits = 4;          // the search grid: AutoAWQ's w_bit
  int64_t group = 128;       // its q_group_size (input columns per scale)
  int64_t grid = 20;         // ratios tried by the scale search (n_grid)
  bool duo_scaling = true;   // s from activation and weight magnitudes (AutoAWQ's default)
  bool clip = true;          // the clipping search (apply_clip)
  double max_shrink = 0.5;   // the clipping search's smallest range ratio is 1 − max_shrink
  int64_t clip_grid = 20;    // its steps
  int64_t clip_tokens = 512; // tokens it samples (n_sample_token)
};

// A pipeline's [awq] table: AWQ run on the calibration text before any coding; the pipeline then
// codes the scaled model. Defaults are AutoAWQ's, except that bits and group, when not given,
// follow the base chain's nwc.quant.uniform `bits` and nwc.chunk.group `group` (4 and 128 with
// other stages): the search should quantize as the coder does. The search itself always uses
// AWQ's own min/max grid with an integer zero point.
struct AwqConfig : AwqSearchSettings {
  bool enabled = false;
  std::string where; // "file:line:column" of the [awq] table
};

// Where the Hessians of compensators come from. Original: every linear's input in the unquantized
// model (`nwc calibrate`, --calibration, --calibrate). Sequential: the input as the model computes
// it with everything before the linear already coded (GPTQ's --true-sequential; one pass that
// calibrates and codes, nwc/runtime/sequential.hpp).
enum class CalibrationMode { Original, Sequential };

struct Pipeline {
  std::filesystem::path file;
  std::string text;
  std::string name;
  std::string method; // label grouping pipelines of one method in `nwc bench` (default: name)
  std::vector<std::string> select;
  std::vector<std::string> exclude;
  // Storage of tensors not selected: "raw" or "zstd" (lossless), or "zstd-f16" (rounded to fp16,
  // then zstd: the usual lossless-compression reference for fp16 checkpoints).
  std::string unselected = "raw";
  // Columns per independently decodable stream: adjacent compensator blocks are coded together
  // when that reproduces their reconstruction bit for bit (0: one stream per compensator block).
  int64_t stream_columns = 0;
  StageChain base;
  std::vector<OverrideRule> overrides;
  nlohmann::json calibration = nlohmann::json::object();
  CalibrationMode calibration_mode = CalibrationMode::Original;
  LevelsConfig levels;
  ImportanceConfig importance;
  BlockFtConfig blockft;
  AllocateConfig allocate;
  // Where the first [rotation] table (base or override) is, "" when no tensor is rotated.
  std::string rotation_where;
  AwqConfig awq;

  // The chain for a tensor, or nullopt when the tensor is stored without the pipeline.
  // Throws nwc::Error if the overrides that apply produce an invalid chain.
  std::optional<StageChain> chain_for(const std::string &tensor_name) const;
  // Whether [levels] gives this tensor per-column quality levels (after `levels = ...` overrides).
  bool levels_for(const std::string &tensor_name) const;

  const Registry *registry = nullptr;
};

// Merges a rule's per-slot options over a chain as chain_for does: a slot naming another plugin
// replaces the stage, the same plugin gets the rule's options set over its own.
void merge_stages(StageChain &chain, const OverrideRule &rule);

// Glob match where '*' matches any run of characters (dots included) and '?' one character.
bool glob_match(const std::string &pattern, const std::string &name);

Pipeline load_pipeline(const std::filesystem::path &file, const Registry &registry);
// Parses pipeline text; `file` names it in messages and anchors relative paths.
Pipeline parse_pipeline(const std::string &text, const std::filesystem::path &file,
                        const Registry &registry);

// Pipeline TOML text without its comments and blank lines (strings, multi-line ones included, kept
// byte for byte): what a container records of the pipeline, since comments are documentation that
// would cost ~0.015 bit per coded weight on a 260K-parameter model. Returns `text` unchanged
// unless the result parses to the same TOML document.
std::string toml_without_comments(const std::string &text);

// Checks a chain against the registry: plugins installed, of the right kind, options valid.
// Returns "" or a one-line reason.
std::string validate_chain(const StageChain &chain, const Registry &registry);

} // namespace nwc::host
