// llmthreads generate -m MODEL -p PROMPT [-n N] [sampling options] [--chat] [--json]
//
// Streams the generated text to stdout as tokens arrive; timings go to stderr (or into the JSON
// object with --json, which prints nothing else on stdout).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli-flags.h"
#include "common/commands.h"
#include "llmthreads/chat-template.h"
#include "llmthreads/model.h"
#include "llmthreads/sampling.h"
#include "llmthreads/tokenizer.h"

namespace llmt::cli {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

void write_out(const std::string& s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// The command line of generate.
struct GenerateOptions {
  std::string model_arg, prompt, prompt_file, system_prompt, template_name;
  int32_t n_predict = 64;
  int32_t n_threads = 0;
  int32_t n_ctx = 0;
  bool chat = false, no_bos = false, ignore_eos = false, json_out = false;
  SamplingParams sp;
};

// Declares generate's options on app, parsed into o.
void add_generate_options(CLI::App& app, GenerateOptions& o) {
  app.add_option("-m,--model", o.model_arg,
                 "GGUF model (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_option("-p,--prompt", o.prompt, "prompt text (default: empty, i.e. only BOS)");
  app.add_option("-f,--file", o.prompt_file, "read the prompt from a file");
  app.add_option("-n,--n-predict", o.n_predict, "tokens to generate (default 64)")
      ->check(CLI::Range(0, 1 << 24));
  add_sampling_options(app, &o.sp, "0.8");
  app.add_option("-t,--threads", o.n_threads, "compute threads (default: physical cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("-c,--ctx-size", o.n_ctx, "context length (default: min(model, 4096))")
      ->check(CLI::Range(0, 1 << 24));
  app.add_flag("--chat", o.chat, "wrap the prompt as one user turn with the model's chat template");
  app.add_option("--system", o.system_prompt, "system message for --chat");
  app.add_option("--chat-template", o.template_name,
                 "for --chat: a built-in format name (" + chat_format_names() +
                     ") or a Jinja file, instead of the model's tokenizer.chat_template");
  app.add_flag("--no-bos", o.no_bos, "do not add BOS/EOS tokens to the prompt");
  app.add_flag("--ignore-eos", o.ignore_eos, "keep generating after end-of-generation tokens");
  app.add_flag("--json", o.json_out, "print one JSON object (ids, text, timings) instead of text");
}

// Tokenizes the prompt (wrapped in the chat template with --chat) into ids; 0, or the exit code
// after printing the error.
int tokenize_prompt(const GenerateOptions& o, const Model& model, std::vector<int32_t>& ids) {
  const Tokenizer& tok = model.tokenizer();
  if (o.chat) {
    // The GGUF's Jinja template by default; --chat-template NAME|FILE overrides it.
    Result<ChatTemplate> tmpl = ChatTemplate::select(o.template_name, model.chat_template(), &tok);
    if (!tmpl.is_ok()) return fail(tmpl.status().message());
    std::vector<ChatMessage> msgs;
    if (!o.system_prompt.empty()) msgs.push_back({"system", o.system_prompt});
    msgs.push_back({"user", o.prompt});
    Result<std::string> text =
        tmpl->render_prompt(msgs, /*add_generation_prompt=*/true,
                            /*tokenizer_adds_bos=*/!o.no_bos && tok.add_bos());
    if (!text.is_ok()) return fail(text.status().message());
    ids = tok.encode(*text, {.add_special = !o.no_bos, .parse_special = true});
  } else {
    if (!o.system_prompt.empty() || !o.template_name.empty()) {
      return fail("--system and --chat-template need --chat");
    }
    ids = tok.encode(o.prompt, {.add_special = !o.no_bos, .parse_special = false});
  }
  if (ids.empty()) return fail("the prompt is empty (no tokens to start from)");
  return 0;
}

// What the generation loop produced.
struct Generation {
  std::vector<int32_t> out_ids;
  std::string text;  // --json: the decoded text (else it went to stdout)
  std::string stop_reason = "length";
  double gen_ms = 0.0;
};

// Samples up to o.n_predict tokens after the evaluated prompt, streaming their text to stdout
// (into g.text with --json); 0, or the exit code after printing the error.
int generate_tokens(const GenerateOptions& o, const Tokenizer& tok, Context& ctx, Sampler& sampler,
                    Generation& g) {
  g.out_ids.reserve(static_cast<size_t>(o.n_predict));
  StreamDecoder decoder(tok);
  const auto t_gen = Clock::now();
  for (int32_t i = 0; i < o.n_predict; ++i) {
    const int32_t id = sampler.sample(ctx.logits());
    if (id < 0) return fail("sampling produced no token");
    sampler.accept(id);
    if (!o.ignore_eos && tok.is_eog(id)) {
      g.stop_reason = "eog";
      break;
    }
    g.out_ids.push_back(id);
    std::string piece = decoder.push(id);
    if (o.json_out) {
      g.text += piece;
    } else {
      write_out(piece);
    }
    if (i + 1 == o.n_predict) break;
    if (ctx.n_past() >= ctx.n_ctx()) {
      g.stop_reason = "context_full";
      break;
    }
    if (Status st = ctx.eval(std::span<const int32_t>(&id, 1)); !st.is_ok()) {
      return fail(st.to_string());
    }
  }
  g.gen_ms = ms_since(t_gen);
  const std::string rest = decoder.flush();
  if (o.json_out) {
    g.text += rest;
  } else {
    write_out(rest);
  }
  return 0;
}

// Prints the result: the JSON object with --json, else the closing newline on stdout and the
// timings on stderr.
void print_generation(const GenerateOptions& o, const std::vector<int32_t>& prompt_ids,
                      const Generation& g, double load_ms, double prompt_ms, int32_t n_threads) {
  const double n_gen = static_cast<double>(g.out_ids.size());
  const double prompt_tok_s = prompt_ms > 0 ? prompt_ids.size() * 1000.0 / prompt_ms : 0.0;
  const double gen_tok_s = g.gen_ms > 0 ? n_gen * 1000.0 / g.gen_ms : 0.0;
  if (o.json_out) {
    nlohmann::json j;
    j["prompt_token_ids"] = prompt_ids;
    j["token_ids"] = g.out_ids;
    j["text"] = g.text;
    j["stop_reason"] = g.stop_reason;
    j["timings"] = {{"load_ms", load_ms},           {"prompt_ms", prompt_ms},
                    {"prompt_tok_s", prompt_tok_s}, {"gen_ms", g.gen_ms},
                    {"gen_tok_s", gen_tok_s},       {"n_prompt", prompt_ids.size()},
                    {"n_gen", g.out_ids.size()},    {"threads", n_threads}};
    const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", s.c_str());
  } else {
    std::printf("\n");
    std::fprintf(stderr,
                 "load %.1f ms | prompt %zu tok %.1f ms (%.1f tok/s) | gen %zu tok %.1f ms "
                 "(%.1f tok/s) | threads %d | stop: %s\n",
                 load_ms, prompt_ids.size(), prompt_ms, prompt_tok_s, g.out_ids.size(), g.gen_ms,
                 gen_tok_s, n_threads, g.stop_reason.c_str());
  }
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  CLI::App app{"Generate text from a prompt", "generate"};
  GenerateOptions o;
  o.sp.seed = SamplingParams::kDefaultSeed;
  add_generate_options(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (Status st = o.sp.validate(); !st.is_ok()) return fail(st.message());
  if (!o.prompt_file.empty()) {
    if (!o.prompt.empty()) return fail("pass either -p or -f, not both");
    std::ifstream in(o.prompt_file, std::ios::binary);
    if (!in) return fail("cannot read prompt file '" + o.prompt_file + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    o.prompt = ss.str();
  }

  const std::string path = resolve_model_path(o.model_arg, "stories260K.gguf");
  if (path.empty()) return 1;

  const auto t_load = Clock::now();
  auto model_r = Model::load(path);
  if (!model_r.is_ok()) return fail(model_r.status().to_string());
  std::shared_ptr<const Model> model = *model_r;
  const Tokenizer& tok = model->tokenizer();

  // Prompt tokens.
  std::vector<int32_t> prompt_ids;
  if (int rc = tokenize_prompt(o, *model, prompt_ids); rc != 0) return rc;

  ContextOptions copt;
  copt.n_ctx = o.n_ctx;
  copt.n_threads = o.n_threads;
  auto ctx_r = Context::create(model, copt);
  if (!ctx_r.is_ok()) return fail(ctx_r.status().to_string());
  Context& ctx = **ctx_r;
  if (static_cast<int64_t>(prompt_ids.size()) >= ctx.n_ctx()) {
    return fail("the prompt has " + std::to_string(prompt_ids.size()) +
                " tokens, which does not fit the context of " + std::to_string(ctx.n_ctx()) +
                " (use -c to raise it)");
  }
  auto sampler_r = Sampler::create(o.sp, model->hparams().n_vocab);
  if (!sampler_r.is_ok()) return fail(sampler_r.status().message());
  Sampler& sampler = *sampler_r;
  const double load_ms = ms_since(t_load);

  // Prompt.
  const auto t_prompt = Clock::now();
  if (Status st = ctx.eval(prompt_ids); !st.is_ok()) return fail(st.to_string());
  const double prompt_ms = ms_since(t_prompt);
  for (int32_t id : prompt_ids) sampler.accept(id);

  // Generation.
  Generation g;
  if (int rc = generate_tokens(o, tok, ctx, sampler, g); rc != 0) return rc;
  print_generation(o, prompt_ids, g, load_ms, prompt_ms, ctx.n_threads());
  return 0;
}

}  // namespace llmt::cli
