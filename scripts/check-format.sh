#!/usr/bin/env bash
# Checks that every C++ source of the tree is formatted as .clang-format says
# (clang-format --dry-run -Werror); prints the offending lines and fails otherwise. Fix with
#   bash scripts/check-format.sh --fix
set -euo pipefail
cd "$(dirname "$0")/.."
# Not checked: generated files (they say so in their first line and are rewritten by their script).
exclude='^src/tokenizer/unicode-wpm-(nfd|class|lower)\.cpp$'
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cpp' '*.cc' '*.h' | grep -Ev "$exclude")
else
  mapfile -t files < <(find src include tools tests examples -type f \
                         \( -name '*.cpp' -o -name '*.cc' -o -name '*.h' \) 2>/dev/null |
                       sed 's|^\./||' | grep -Ev "$exclude" | sort)
fi
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
clang-format --dry-run -Werror "${files[@]}"
echo "check-format: ${#files[@]} files formatted"
