// Consumer of the installed C++ API (static library): greedy-generates from argv[2] with the
// model argv[1] and prints the text, for comparison with the C consumer's.
#include <cstdio>
#include <iostream>

#include <llmthreads/engine.h>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  llmt::EngineConfig config;
  config.model.path = argv[1];
  config.compute.n_threads = 1;
  auto engine = llmt::Engine::create(config);
  if (!engine.is_ok()) {
    std::cerr << "consumer-cpp: " << engine.status().message() << "\n";
    return 1;
  }
  llmt::ThreadRequest req;
  req.prompt = argv[2];
  req.sampling.temperature = 0.0f;
  req.max_tokens = 24;
  auto handle = (*engine)->submit(req);
  if (!handle.is_ok()) {
    std::cerr << "consumer-cpp: " << handle.status().message() << "\n";
    return 1;
  }
  std::cout << handle->wait().text << "\n";
  return 0;
}
