// One name table per enum, read by both its name() and parse() functions, so the two cannot
// disagree (used by sched-types.cpp, task-types.cpp and the model's KvType names).
//
// Thread-safety: pure functions over constant tables; call from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "llmthreads/status.h"

namespace llmt {

// {value, name}; a value may appear twice (an alias name); name_of() gives the first.
template <typename E>
using NameTable = std::pair<E, const char*>;

template <typename E, size_t N>
const char* name_of(const NameTable<E> (&table)[N], E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return "unknown";
}

// "a, b, c or d"
template <typename E, size_t N>
std::string names_of(const NameTable<E> (&table)[N]) {
  std::string s;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) s += i + 1 == N ? " or " : ", ";
    s += table[i].second;
  }
  return s;
}

// kInvalidArgument "unknown <what> '<name>' (expected a, b or c)" for a name not in the table.
template <typename E, size_t N>
Result<E> parse_of(const NameTable<E> (&table)[N], const std::string& name, const char* what) {
  for (const auto& [v, n] : table) {
    if (name == n) return v;
  }
  return invalid_argument(std::string("unknown ") + what + " '" + name + "' (expected " +
                          names_of(table) + ")");
}

}  // namespace llmt
