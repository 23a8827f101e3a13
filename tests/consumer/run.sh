#!/usr/bin/env bash
# The installed-library test: installs the build tree into a temporary prefix, builds a consumer
# project against it with find_package (C API on the shared library, C++ API on the static one)
# and with pkg-config, runs them on a model, and configures a project that add_subdirectory()s
# the source tree. Usage: run.sh BUILD_DIR SOURCE_DIR MODEL
set -euo pipefail
build=$1 src=$2 model=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prompt="Once upon a time"

cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
for f in bin/llmthreads include/llmthreads/llmthreads.h include/llmthreads/engine.h \
         lib/libllmthreads.a lib/libllmthreads.so lib/cmake/llmthreads/llmthreadsConfig.cmake \
         lib/pkgconfig/llmthreads.pc share/doc/llmthreads/LICENSE; do
  [ -e "$work/prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done

cmake -S "$src/tests/consumer" -B "$work/cbuild" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/cbuild" > "$work/build.log"
c_text=$("$work/cbuild/consumer-c" "$model" "$prompt")
cpp_text=$("$work/cbuild/consumer-cpp" "$model" "$prompt")
[ -n "$c_text" ] || { echo "C consumer printed nothing"; exit 1; }
[ "$c_text" = "$cpp_text" ] || { echo "C and C++ consumers differ: '$c_text' vs '$cpp_text'"; exit 1; }
# The shared library is what the C consumer runs on (not a static copy).
deps=$(ldd "$work/cbuild/consumer-c")
[[ "$deps" == *libllmthreads.so* ]] || { echo "consumer-c not on the .so"; exit 1; }

# pkg-config: compile and link the C consumer by hand.
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
cc -std=c99 -o "$work/consumer-pc" "$src/tests/consumer/consumer.c" $(pkg-config --cflags --libs llmthreads)
pc_text=$(LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer-pc" "$model" "$prompt")
[ "$pc_text" = "$c_text" ] || { echo "pkg-config consumer differs"; exit 1; }

# add_subdirectory: the source tree as a subproject configures, with its tests off by default.
mkdir -p "$work/sub"
cat > "$work/sub/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.25)
project(sub LANGUAGES C CXX)
add_subdirectory("$src" llmthreads)
add_executable(app "$src/tests/consumer/consumer.cpp")
target_link_libraries(app PRIVATE llmthreads_lib)
if(TARGET test-engine)
  message(FATAL_ERROR "llmthreads tests were configured in a subproject")
endif()
CM
cmake -S "$work/sub" -B "$work/sub/build" -G Ninja > "$work/sub.log" 2>&1 || { cat "$work/sub.log"; exit 1; }
echo "installed-library consumers OK: '$c_text'"
