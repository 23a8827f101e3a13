// llmthreads info MODEL [--json] [--all-metadata]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "common/commands.h"
#include "kernels/kernels.h"
#include "llmthreads/chat-template.h"
#include "llmthreads/gguf.h"

namespace llmt::cli {

namespace {

nlohmann::json value_to_json(const GgufValue& v, size_t max_elems) {
  switch (v.type) {
    case GgufType::STRING:
      return std::string(v.str);
    case GgufType::BOOL:
      return v.num.u != 0;
    case GgufType::FLOAT32:
    case GgufType::FLOAT64:
      return v.num.f;
    case GgufType::ARRAY: {
      if (v.array.size() > max_elems) {
        return nlohmann::json{{"type", std::string("array of ") + gguf_type_name(v.elem_type)},
                              {"length", v.array.size()}};
      }
      auto arr = nlohmann::json::array();
      for (const auto& e : v.array) arr.push_back(value_to_json(e, max_elems));
      return arr;
    }
    default:
      if (auto i = v.as_int()) return *i;
      return v.num.u;
  }
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += " x ";
    s += std::to_string(shape[i]);
  }
  return s;
}

}  // namespace

int cmd_info(int argc, char** argv) {
  CLI::App app{"Show a GGUF model's metadata, hyperparameters, tokenizer and tensor table", "info"};
  std::string model;
  bool json = false, all = false;
  app.add_option("model", model, "GGUF file (default: $LLMT_MODEL or the default model)");
  app.add_option("-m,--model", model, "GGUF file");
  app.add_flag("--json", json, "print JSON");
  app.add_flag("--all-metadata", all, "print every metadata key, not only the model's");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const std::string path = resolve_model_path(model);
  if (path.empty()) return 1;
  auto file = GgufFile::open(path);
  if (!file) {
    std::fprintf(stderr, "error: %s\n", file.status().to_string().c_str());
    return 1;
  }
  const GgufFile& g = **file;
  // The CPU tier the kernels run on (LLMT_ISA caps it; a bad value is an error, as in a model
  // load).
  const auto tier = kernels::select_isa();
  if (!tier) {
    std::fprintf(stderr, "error: %s\n", tier.status().to_string().c_str());
    return 1;
  }
  const std::string tier_line = std::string(kernels::isa_name(tier.value())) +
                                " (best on this CPU: " + kernels::isa_name(kernels::best_isa()) +
                                ")";

  std::string arch;
  if (auto a = g.get_string("general.architecture"); a && *a) arch = std::string(**a);
  std::string tok_model;
  if (auto t = g.get_string("tokenizer.ggml.model"); t && *t) tok_model = std::string(**t);
  std::string tok_pre = "default";
  if (auto t = g.get_string("tokenizer.ggml.pre"); t && *t) tok_pre = std::string(**t);
  size_t n_vocab = 0;
  if (const GgufValue* v = g.find("tokenizer.ggml.tokens"); v && v->type == GgufType::ARRAY) {
    n_vocab = v->array.size();
  }
  const GgufValue* tmpl = g.find("tokenizer.chat_template");
  const bool has_template = tmpl && tmpl->type == GgufType::STRING && !tmpl->str.empty();
  // The template chat requests use by default (what `--chat-template` would override).
  std::string template_used =
      "none (tokenizer.chat_template absent; choose one with --chat-template NAME|FILE)";
  if (has_template) {
    auto t = ChatTemplate::select("", tmpl->str, nullptr);
    template_used = t.is_ok()
                        ? t->description() + " (" + std::to_string(tmpl->str.size()) + " bytes)"
                        : "none: " + t.status().message();
  }
  const std::string prefix = arch + ".";
  uint64_t total_bytes = 0, total_elems = 0;
  for (const auto& t : g.tensors()) {
    total_bytes += t.n_bytes;
    total_elems += t.n_elements;
  }

  if (json) {
    nlohmann::json j;
    j["path"] = path;
    j["gguf_version"] = g.version();
    j["alignment"] = g.alignment();
    j["architecture"] = arch;
    if (auto n = g.get_string("general.name"); n && *n) j["name"] = std::string(**n);
    nlohmann::json hp = nlohmann::json::object();
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& kv : g.kvs()) {
      if (!arch.empty() && kv.key.substr(0, prefix.size()) == prefix) {
        hp[std::string(kv.key.substr(prefix.size()))] = value_to_json(kv.value, 64);
      }
      if (all) meta[std::string(kv.key)] = value_to_json(kv.value, 64);
    }
    j["hparams"] = hp;
    if (all) j["metadata"] = meta;
    j["tokenizer"] = {{"model", tok_model}, {"pre", tok_pre}, {"n_vocab", n_vocab}};
    j["chat_template"] = has_template;
    j["chat_template_used"] = template_used;
    j["n_params"] = total_elems;
    j["n_bytes"] = total_bytes;
    j["cpu_tier"] = kernels::isa_name(tier.value());
    j["cpu_tier_best"] = kernels::isa_name(kernels::best_isa());
    auto tensors = nlohmann::json::array();
    for (const auto& t : g.tensors()) {
      tensors.push_back({{"name", std::string(t.name)},
                         {"shape", t.shape},
                         {"type", tensor_type_name(t.type)},
                         {"bytes", t.n_bytes}});
    }
    j["tensors"] = tensors;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  std::printf("file:          %s (GGUF v%u, %llu bytes, alignment %llu)\n", path.c_str(),
              g.version(), static_cast<unsigned long long>(g.file_size()),
              static_cast<unsigned long long>(g.alignment()));
  std::printf("architecture:  %s\n", arch.empty() ? "(none)" : arch.c_str());
  if (auto n = g.get_string("general.name"); n && *n) {
    std::printf("name:          %.*s\n", static_cast<int>((**n).size()), (**n).data());
  }
  std::printf("tokenizer:     %s (pre: %s), %zu tokens\n",
              tok_model.empty() ? "(none)" : tok_model.c_str(), tok_pre.c_str(), n_vocab);
  std::printf("chat template: %s\n", template_used.c_str());
  std::printf("parameters:    %llu (%llu bytes of tensor data)\n",
              static_cast<unsigned long long>(total_elems),
              static_cast<unsigned long long>(total_bytes));
  std::printf("cpu tier:      %s\n", tier_line.c_str());
  std::printf("\nhyperparameters:\n");
  for (const auto& kv : g.kvs()) {
    bool show = all ? true : (!arch.empty() && kv.key.substr(0, prefix.size()) == prefix);
    if (!show) continue;
    std::printf("  %-48.*s %s\n", static_cast<int>(kv.key.size()), kv.key.data(),
                kv.value.to_string(8).c_str());
  }
  std::printf("\ntensors (%zu):\n", g.tensors().size());
  std::printf("  %-36s %-22s %-8s %12s\n", "name", "shape", "type", "bytes");
  for (const auto& t : g.tensors()) {
    std::printf("  %-36.*s %-22s %-8s %12llu\n", static_cast<int>(t.name.size()), t.name.data(),
                shape_string(t.shape).c_str(), tensor_type_name(t.type),
                static_cast<unsigned long long>(t.n_bytes));
  }
  return 0;
}

}  // namespace llmt::cli
