// The command table of `nwc`: every command and subcommand with its one-line summary, usage line,
// what it needs and its handler. The table drives dispatch, `nwc --help`, `nwc GROUP --help` and
// the commands allowed under mpirun, so the help cannot drift from what runs.
#pragma once

#include <iosfwd>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nwc::cli {

struct Command;

// Runs a command on its arguments (those after the command's name) and returns the exit code; a
// malformed command line throws UsageError, a failure nwc::Error (or any std::exception).
using Handler = int (*)(const Command &self, const std::vector<std::string> &args);

struct Command {
  std::string_view name = {};  // "compress"; in a group, the subcommand's own name ("list")
  std::string_view group = {}; // the group a subcommand belongs to ("plugins"); empty at top level
  std::string_view summary = {}; // one line for the help listing
  std::string_view usage = {};   // the usage line: `COMMAND --help` and usage errors print it
  bool needs_runtime = false; // needs the model runtime (LibTorch): absent from builds without it
  bool mpi = false;           // may run under `mpirun -np N` (shares its work over the ranks)
  Handler handler = nullptr;  // nullptr for a group, and for runtime commands in builds without it
  std::span<const Command> subcommands = {}; // a group: its first argument picks one of these
  bool hidden = false;                       // internal: dispatched, never listed

  constexpr bool is_group() const { return !subcommands.empty(); }
  // Whether this build can run it (a runtime command in a build without the runtime cannot).
  constexpr bool available() const { return handler != nullptr || is_group(); }
  std::string path() const;  // "plugins list"
  std::string title() const; // "nwc plugins list": the caption of its option list
};

// The top-level commands in help order (command_table.cpp).
std::span<const Command> commands();

// The entry named `name` in `table`, or nullptr.
const Command *find_command(std::span<const Command> table, std::string_view name);

// Runs a command (a group picks its subcommand from the arguments). A runtime command in a build
// without the runtime is an nwc::Error naming it.
int run_command(const Command &command, std::vector<std::string> args);

// `nwc --help`: every command and subcommand with its summary.
void print_help(std::ostream &out);

// `nwc GROUP --help`: the group's usage lines and subcommands.
void print_group_help(const Command &group, std::ostream &out);

// What runs under mpirun, as a clause: "compress and calibrate share their work".
std::string mpi_clause();

} // namespace nwc::cli
