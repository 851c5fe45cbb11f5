// Dispatch and help from the command table (command_table.cpp).
#include "command.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <iomanip>
#include <iostream>

namespace nwc::cli {

namespace {

bool is_help(const std::string &arg) {
  return arg == "--help" || arg == "-h";
}

// "a, b or c"
std::string word_list(const std::vector<std::string> &words, const char *last = " or ") {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i)
    s += (i == 0 ? "" : i + 1 == words.size() ? last : ", ") + words[i];
  return s;
}

std::vector<std::string> names(std::span<const Command> table, bool available) {
  std::vector<std::string> out;
  for (const auto &c : table)
    if (!c.hidden && c.available() == available) out.emplace_back(c.name);
  return out;
}

// The subcommand a group's arguments name: the first argument, or, when options come first, the
// first argument that names one (it is removed from args). nullptr when there is none.
const Command *pick_subcommand(const Command &group, std::vector<std::string> &args) {
  if (args.empty()) return nullptr;
  size_t at = 0;
  if (args[0].starts_with("-")) {
    while (at < args.size() && !find_command(group.subcommands, args[at])) ++at;
    if (at == args.size()) return nullptr;
  }
  const Command *sub = find_command(group.subcommands, args[at]);
  if (!sub)
    throw UsageError(group.path() + ": unknown subcommand '" + args[at] + "' (expected " +
                     word_list(names(group.subcommands, true)) + ")");
  args.erase(args.begin() + static_cast<std::ptrdiff_t>(at));
  return sub;
}

int run_group(const Command &group, std::vector<std::string> args) {
  if (!args.empty() && is_help(args[0])) {
    print_group_help(group, std::cout);
    return 0;
  }
  const Command *sub = pick_subcommand(group, args);
  if (!sub) {
    if (std::any_of(args.begin(), args.end(), is_help)) {
      print_group_help(group, std::cout);
      return 0;
    }
    throw UsageError(group.path() +
                     ": missing subcommand: " + word_list(names(group.subcommands, true)) +
                     " (nwc " + group.path() + " --help lists them)");
  }
  return run_command(*sub, std::move(args));
}

std::string not_built(const Command &c) {
  return "nwc was built without the model runtime (NWC_WITH_RUNTIME=OFF): " + c.path() +
         " needs it";
}

} // namespace

std::string Command::path() const {
  return group.empty() ? std::string(name) : std::string(group) + " " + std::string(name);
}

std::string Command::title() const {
  return "nwc " + path();
}

const Command *find_command(std::span<const Command> table, std::string_view name) {
  for (const auto &c : table)
    if (c.name == name) return &c;
  return nullptr;
}

int run_command(const Command &command, std::vector<std::string> args) {
  if (command.is_group()) return run_group(command, std::move(args));
  if (!command.handler) {
    if (std::any_of(args.begin(), args.end(), is_help)) {
      std::cout << "usage: " << command.usage << "\n\n" << not_built(command) << "\n";
      return 0;
    }
    throw Error(NWC_E_INVALID_ARG, not_built(command));
  }
  return command.handler(command, args);
}

void print_help(std::ostream &out) {
  std::vector<std::pair<std::string, std::string_view>> rows;
  for (const auto &c : commands()) {
    if (c.hidden || !c.available()) continue;
    if (!c.is_group()) rows.emplace_back(c.path(), c.summary);
    for (const auto &s : c.subcommands)
      if (!s.hidden && s.available()) rows.emplace_back(s.path(), s.summary);
  }
  size_t width = 0;
  for (const auto &r : rows) width = std::max(width, r.first.size());
  out << "nwc " << kVersion << " — compress the weights of language models\n\n"
      << "usage: nwc <command> [options]   (nwc <command> --help: its usage and options)\n\n"
      << "commands:\n";
  for (const auto &r : rows)
    out << "  " << std::left << std::setw(static_cast<int>(width + 2)) << r.first << r.second
        << "\n";
  out << "\nevery command takes --json, --quiet, --threads N, --plugin-path DIR, --help\n"
      << "under mpirun -np N, " << mpi_clause() << " (docs/cluster.md)\n";
  const auto missing = names(commands(), false);
  if (!missing.empty())
    out << "not in this build (NWC_WITH_RUNTIME=OFF, no model runtime): "
        << word_list(missing, ", ") << "\n";
}

void print_group_help(const Command &group, std::ostream &out) {
  out << "nwc " << group.path() << ": " << group.summary << "\n\nusage:";
  for (const auto &s : group.subcommands)
    if (!s.hidden) out << (&s == group.subcommands.data() ? " " : "       ") << s.usage << "\n";
  size_t width = 0;
  for (const auto &s : group.subcommands) width = std::max(width, s.name.size());
  out << "\nsubcommands:\n";
  for (const auto &s : group.subcommands)
    if (!s.hidden)
      out << "  " << std::left << std::setw(static_cast<int>(width + 2)) << s.name << s.summary
          << "\n";
  out << "\nnwc " << group.path() << " SUBCOMMAND --help: its options\n";
}

std::string mpi_clause() {
  std::vector<std::string> mpi;
  for (const auto &c : commands())
    if (c.mpi && c.available()) mpi.emplace_back(c.name);
  return word_list(mpi, " and ") + (mpi.size() == 1 ? " shares its work" : " share their work");
}

} // namespace nwc::cli
