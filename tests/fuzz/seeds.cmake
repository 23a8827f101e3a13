# The generated part of the fuzz seed corpus (binary seeds are not tracked): gen-fuzz-seeds writes
# ${LLMT_FUZZ_SEED_DIR}/<target>/ (today: gguf/) at build time. Included by tests/ and tests/fuzz/
# (whichever is configured); target fuzz-seeds. The replay tests and scripts/fuzz.sh read it.
if(NOT TARGET fuzz-seeds)
  set(LLMT_FUZZ_SEED_DIR ${PROJECT_BINARY_DIR}/fuzz-seeds CACHE INTERNAL "generated fuzz seeds")
  add_executable(gen-fuzz-seeds ${CMAKE_CURRENT_LIST_DIR}/gen-fuzz-seeds.cpp)
  target_include_directories(gen-fuzz-seeds PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  set(LLMT_FUZZ_SEED_FILES ${LLMT_FUZZ_SEED_DIR}/gguf/header-only.gguf
                           ${LLMT_FUZZ_SEED_DIR}/gguf/spm-vocab.gguf
                           ${LLMT_FUZZ_SEED_DIR}/gguf/bpe-vocab.gguf)
  add_custom_command(OUTPUT ${LLMT_FUZZ_SEED_FILES}
                     COMMAND gen-fuzz-seeds ${LLMT_FUZZ_SEED_DIR}
                     DEPENDS gen-fuzz-seeds
                     COMMENT "Generating the fuzz seed corpus in ${LLMT_FUZZ_SEED_DIR}")
  add_custom_target(fuzz-seeds DEPENDS ${LLMT_FUZZ_SEED_FILES})
endif()
