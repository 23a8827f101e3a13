// llmthreads chat -m MODEL [--system TEXT] [--chat-template NAME|FILE] [-n N] [sampling options]
//
// A first look at a model: reads user turns from stdin, one per line (a terminal or a pipe),
// renders the whole conversation with the chat template, and streams each reply to stdout
// followed by a newline. The history is kept between turns (the KV of the common prefix is
// reused); "/reset" forgets it (the system prompt stays), "/exit" or the end of input quits.
// stdout carries only the replies; the prompt ("> ", on a terminal), notes and the per-turn stats
// line ("[prompt N tok | reply N tok, X tok/s | stop: eog]") go to stderr. A turn that fails (the
// conversation no longer fits the context) is an error line on stderr and the session goes on.
// Exit status: 0 at /exit or end of input, 1 for a setup error (flags, model, template).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
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

int fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

struct ChatFlags {
  std::string model_arg, system_prompt, template_name;
  int32_t max_tokens = 256, n_threads = 0, n_ctx = 0;
  SamplingParams sp;
};

// The conversation and the sequence-0 KV that holds its tokens so far.
class ChatSession {
 public:
  ChatSession(std::shared_ptr<const Model> model, ChatTemplate tmpl, std::unique_ptr<Context> ctx,
              const ChatFlags& flags)
      : model_(std::move(model)), tmpl_(std::move(tmpl)), ctx_(std::move(ctx)), flags_(flags) {
    reset();
  }

  // Forgets every turn but the system prompt.
  void reset() {
    messages_.clear();
    if (!flags_.system_prompt.empty()) messages_.push_back({"system", flags_.system_prompt});
  }

  // Adds the user turn, streams the reply to stdout and keeps it in the history. On error the
  // turn is not kept.
  Status turn(const std::string& user_text) {
    messages_.push_back({"user", user_text});
    Status st = reply();
    if (!st.is_ok()) messages_.pop_back();
    return st;
  }

 private:
  // Renders and tokenizes the conversation, evaluates what the KV does not hold yet, samples.
  Status reply() {
    const Tokenizer& tok = model_->tokenizer();
    LLMT_ASSIGN_OR_RETURN(std::string text,
                          tmpl_.render_prompt(messages_, /*add_generation_prompt=*/true,
                                              /*tokenizer_adds_bos=*/tok.add_bos()));
    const std::vector<int32_t> prompt =
        tok.encode(text, {.add_special = true, .parse_special = true});
    if (prompt.empty()) return invalid_argument("the rendered conversation has no tokens");
    if (static_cast<int64_t>(prompt.size()) >= ctx_->n_ctx()) {
      return cannot_fit("the conversation has " + std::to_string(prompt.size()) +
                        " tokens, which does not fit the context of " +
                        std::to_string(ctx_->n_ctx()) + " (/reset to start over, or raise -c)");
    }
    // Reuse the KV of the longest common prefix; at least one token is evaluated (for logits).
    size_t keep = 0;
    while (keep < in_kv_.size() && keep < prompt.size() && in_kv_[keep] == prompt[keep]) ++keep;
    keep = std::min(keep, prompt.size() - 1);
    LLMT_RETURN_IF_ERROR(ctx_->truncate(static_cast<int32_t>(keep)));
    in_kv_.resize(keep);
    LLMT_RETURN_IF_ERROR(
        ctx_->eval(std::span<const int32_t>(prompt.data() + keep, prompt.size() - keep)));
    in_kv_ = prompt;

    LLMT_ASSIGN_OR_RETURN(Sampler sampler, Sampler::create(flags_.sp, model_->hparams().n_vocab));
    for (int32_t id : prompt) sampler.accept(id);
    StreamDecoder decoder(tok);
    std::string answer;
    std::string stop = "length";
    int32_t n_gen = 0;
    const auto t0 = Clock::now();
    for (; n_gen < flags_.max_tokens; ++n_gen) {
      const int32_t id = sampler.sample(ctx_->logits());
      if (id < 0) return internal_error("sampling produced no token");
      sampler.accept(id);
      if (tok.is_eog(id)) {
        stop = "eog";
        break;
      }
      write_out(decoder.push(id), &answer);
      if (ctx_->n_past() >= ctx_->n_ctx()) {
        stop = "context_full";
        ++n_gen;
        break;
      }
      LLMT_RETURN_IF_ERROR(ctx_->eval(std::span<const int32_t>(&id, 1)));
      in_kv_.push_back(id);
    }
    write_out(decoder.flush(), &answer);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "[prompt %zu tok | reply %d tok, %.1f tok/s | stop: %s]\n", prompt.size(),
                 n_gen, s > 0 ? n_gen / s : 0.0, stop.c_str());
    messages_.push_back({"assistant", answer});
    return Status::ok();
  }

  static void write_out(const std::string& piece, std::string* answer) {
    if (piece.empty()) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    *answer += piece;
  }

  std::shared_ptr<const Model> model_;
  ChatTemplate tmpl_;
  std::unique_ptr<Context> ctx_;
  const ChatFlags& flags_;
  std::vector<ChatMessage> messages_;
  std::vector<int32_t> in_kv_;  // the tokens sequence 0 holds, in order
};

// Reads turns until /exit or the end of input.
void chat_loop(ChatSession& session) {
  const bool interactive = isatty(STDIN_FILENO) != 0;
  if (interactive) {
    std::fprintf(stderr, "chat: type a message; /reset forgets the conversation, /exit quits\n");
  }
  std::string line;
  for (;;) {
    if (interactive) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      session.reset();
      std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (Status st = session.turn(line); !st.is_ok()) {
      std::fprintf(stderr, "error: %s\n", st.message().c_str());
    }
  }
}

}  // namespace

int cmd_chat(int argc, char** argv) {
  CLI::App app{
      "Chat with a model: user turns from stdin (one per line), replies streamed to stdout",
      "chat"};
  ChatFlags f;
  f.sp.seed = SamplingParams::kDefaultSeed;
  app.add_option("-m,--model", f.model_arg,
                 "GGUF model (default: $LLMT_MODEL or stories260K.gguf)");
  app.add_option("--system", f.system_prompt, "system message, kept across /reset");
  app.add_option("--chat-template", f.template_name,
                 "a built-in format name (" + chat_format_names() +
                     ") or a Jinja file, instead of the model's tokenizer.chat_template");
  app.add_option("-n,--max-tokens", f.max_tokens, "tokens per reply at most (default 256)")
      ->check(CLI::Range(1, 1 << 24));
  add_sampling_options(app, &f.sp, "0.8");
  app.add_option("-t,--threads", f.n_threads, "compute threads (default: physical cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("-c,--ctx-size", f.n_ctx, "context length (default: min(model, 4096))")
      ->check(CLI::Range(0, 1 << 24));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (Status st = f.sp.validate(); !st.is_ok()) return fail(st.message());
  const std::string path = resolve_model_path(f.model_arg, "stories260K.gguf");
  if (path.empty()) return 1;
  auto model_r = Model::load(path);
  if (!model_r.is_ok()) return fail(model_r.status().to_string());
  std::shared_ptr<const Model> model = *model_r;
  if (!model->hparams().causal) return fail(path + ": an encoder model cannot chat");
  Result<ChatTemplate> tmpl =
      ChatTemplate::select(f.template_name, model->chat_template(), &model->tokenizer());
  if (!tmpl.is_ok()) return fail(tmpl.status().message());
  ContextOptions copt;
  copt.n_ctx = f.n_ctx;
  copt.n_threads = f.n_threads;
  auto ctx_r = Context::create(model, copt);
  if (!ctx_r.is_ok()) return fail(ctx_r.status().to_string());
  std::fprintf(stderr, "chat: %s, %s, context %d\n", path.c_str(), tmpl->description().c_str(),
               (*ctx_r)->n_ctx());
  ChatSession session(model, std::move(*tmpl), std::move(*ctx_r), f);
  chat_loop(session);
  return 0;
}

}  // namespace llmt::cli
