// Scheduler of LLM threads. See scheduler.h for the contract.
//
// State: one Thread record per live thread in an unordered_map (node-based, so Thread* stay valid
// until the thread is removed), a round-robin queue of Thread* (kept for every policy, used by
// kRoundRobin), and per-tenant counters. Each schedule() builds the policy order of all live
// threads (a sort, O(n log n); runnable threads first, threads that reached n_kv_tokens last), then
// walks it once, taking threads while max_running and step_tokens allow. Eviction victims are
// taken from the back of the same order with one cursor that only moves towards the front, so a
// step is O(n log n) plus the KV work; the only heavier part, the check "would evicting every
// later thread free enough blocks?", runs only for a thread whose blocks are short.
//
// Definitions used throughout:
//   remaining   tokens.size() - n_computed (tokens still to compute; >= 1 for a runnable thread)
//   decode      a chunk of one token at a generated position (pos0 >= n_prompt) that ends at the
//               thread's last token; every other chunk is prefill (stats, latency rule)
//   done        tokens.size() >= n_kv_tokens: never scheduled again; the caller removes it
#include "sched/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <list>
#include <string>
#include <unordered_map>
#include <utility>

namespace llmt::sched {

namespace {

constexpr double kNoFloor = -std::numeric_limits<double>::infinity();

struct Thread {
  ThreadId id = 0;
  std::vector<int32_t> tokens;  // prompt + generated
  int32_t n_prompt = 0;
  int32_t n_kv_tokens = 0;
  int32_t priority = 0;
  uint64_t tenant = 0;
  double arrival_s = 0.0;
  int32_t n_match_max = -1;
  uint64_t serial = 0;  // add() order: the last tie-break of every order

  Phase phase = Phase::kWaiting;
  int32_t n_computed = 0;    // positions with K/V (in the cache, or in the swap store if swapped)
  double last_run_s = 0.0;   // complete() time of its last executed chunk (arrival before)
  uint64_t last_step = 0;    // step number of its last executed chunk (0: never)
  int32_t quantum_used = 0;  // kRoundRobin: new tokens computed since it was last put at the back
  // The most positions it ever had computed: tokens below it that it computes again (after a
  // recompute eviction) do not use its round-robin quantum, else two threads that evict each
  // other in turn would each lose their turn's progress and never finish.
  int32_t n_high_water = 0;
  std::list<Thread*>::iterator rr_pos;

  // While kSwapped: how its KV was saved.
  Eviction swap_method = Eviction::kSwapRam;
  uint64_t swap_bytes = 0;
  int32_t n_swap_blocks = 0;

  // Scratch of the step being planned.
  double sort_key = 0.0;        // smaller first
  double effective = 0.0;       // kPriority: effective priority
  bool evicted = false;         // evicted in this step: not taken again in it
  bool active_prefill = false;  // counted in Impl::n_active_prefill_

  int32_t remaining() const { return static_cast<int32_t>(tokens.size()) - n_computed; }
  bool done() const { return static_cast<int64_t>(tokens.size()) >= n_kv_tokens; }
  // Running and only its newest token left: its next chunk is one decode token.
  bool decoding() const {
    return phase == Phase::kRunning && remaining() == 1 && n_computed >= n_prompt;
  }
};

struct Tenant {
  double vtc = 0.0;       // weighted service (kFairShare order)
  uint64_t n_tokens = 0;  // raw tokens computed
  int32_t n_live = 0;     // live threads
};

int32_t ceil_div(int64_t a, int64_t b) {
  return static_cast<int32_t>((a + b - 1) / b);
}

}  // namespace

struct Scheduler::Impl {
  SchedulerOptions opt;
  kv::KvManager* kv;
  int32_t bs;  // kv block size

  std::unordered_map<ThreadId, Thread> threads;
  std::list<Thread*> rr_queue;  // add order; kRoundRobin moves a thread back after its quantum
  std::unordered_map<uint64_t, Tenant> tenants;
  uint64_t next_serial = 1;
  uint64_t swap_ram_bytes = 0;

  StepPlan plan;
  SchedulerStats st;

  // Step scratch.
  std::vector<Thread*> order;
  size_t victim_back = 0;  // order index: victims are searched at indices in (i, victim_back]
  int32_t n_active_prefill = 0;
  std::vector<uint8_t> mark;  // per block, for would_fit()

  Impl(const SchedulerOptions& o, kv::KvManager* k) : opt(o), kv(k), bs(k->block_size()) {
    opt.step_tokens = std::max(opt.step_tokens, 1);
    opt.max_running = std::max(opt.max_running, 1);
    opt.quantum_tokens = std::max(opt.quantum_tokens, 1);
    if (!(opt.aging_per_s >= 0.0)) opt.aging_per_s = 0.0;
    if (!(opt.fair_decode_weight >= 0.0)) opt.fair_decode_weight = 1.0;
  }

  Thread* find(ThreadId id) {
    auto it = threads.find(id);
    return it == threads.end() ? nullptr : &it->second;
  }
  const Thread* find(ThreadId id) const {
    auto it = threads.find(id);
    return it == threads.end() ? nullptr : &it->second;
  }

  // ---- order ----

  void build_order(double now_s) {
    order.clear();
    order.reserve(threads.size());
    if (opt.policy == Policy::kRoundRobin) {
      for (Thread* t : rr_queue) order.push_back(t);
      // Queue order; threads that reached n_kv_tokens go last (first victims).
      std::stable_partition(order.begin(), order.end(), [](const Thread* t) { return !t->done(); });
      return;
    }
    for (auto& [id, t] : threads) {
      Thread* p = &t;
      switch (opt.policy) {
        case Policy::kFcfs:
          p->sort_key = 0.0;
          break;
        case Policy::kPriority:
          p->effective = p->priority + opt.aging_per_s * std::max(0.0, now_s - p->last_run_s);
          p->sort_key = -p->effective;
          break;
        case Policy::kFairShare:
          p->sort_key = tenants[p->tenant].vtc;
          break;
        case Policy::kRoundRobin:
          break;
      }
      order.push_back(p);
    }
    std::sort(order.begin(), order.end(), [](const Thread* a, const Thread* b) {
      const bool ad = a->done(), bd = b->done();
      if (ad != bd) return bd;
      if (a->sort_key != b->sort_key) return a->sort_key < b->sort_key;
      if (a->arrival_s != b->arrival_s) return a->arrival_s < b->arrival_s;
      return a->serial < b->serial;
    });
  }

  // ---- eviction ----

  // Whether t may evict v (v after t in order). Hysteresis, so that two threads that keep
  // passing each other in the order do not evict each other every step: under kPriority v's
  // effective priority must be at least preempt_margin below t's; under kFairShare v must be of
  // t's tenant or of a tenant served at least quantum_tokens more. A thread that reached
  // n_kv_tokens may always be evicted. With margins off (respect = false) any later thread may.
  bool may_evict(const Thread& t, const Thread& v, bool respect = true) const {
    if (!respect || v.done()) return true;
    if (opt.policy == Policy::kPriority) return v.effective <= t.effective - opt.preempt_margin;
    if (opt.policy == Policy::kFairShare) {
      return v.tenant == t.tenant || v.sort_key >= t.sort_key + opt.quantum_tokens;
    }
    return true;
  }

  // The next victim for the thread t at order index i: the last running thread after i that t
  // may evict.
  Thread* next_victim(size_t i, const Thread& t) {
    while (victim_back > i &&
           (order[victim_back]->phase != Phase::kRunning || order[victim_back]->evicted)) {
      --victim_back;
    }
    for (size_t j = victim_back; j > i; --j) {
      Thread* v = order[j];
      if (v->phase == Phase::kRunning && !v->evicted && may_evict(t, *v)) return v;
    }
    return nullptr;
  }

  Eviction choose_method(const Thread& t) const {
    if (t.n_computed <= 0) return Eviction::kRecompute;  // nothing to save
    const double bytes =
        static_cast<double>(t.n_computed) * static_cast<double>(opt.kv_bytes_per_token);
    if (opt.eviction != Eviction::kAuto) return opt.eviction;
    const EvictionCosts& c = opt.costs;
    const double inf = std::numeric_limits<double>::infinity();
    const double t_recompute =
        c.recompute_tokens_per_s > 0 ? t.n_computed / c.recompute_tokens_per_s : inf;
    Eviction swap = Eviction::kAuto;
    double t_swap = inf;
    const uint64_t b = static_cast<uint64_t>(t.n_computed) * opt.kv_bytes_per_token;
    if (swap_ram_bytes + b <= c.ram_limit_bytes) {
      swap = Eviction::kSwapRam;
      t_swap = c.ram_bytes_per_s > 0 ? 2.0 * bytes / c.ram_bytes_per_s : inf;
    } else if (c.disk_available) {
      swap = Eviction::kSwapDisk;
      t_swap = c.disk_bytes_per_s > 0 ? 2.0 * bytes / c.disk_bytes_per_s : inf;
    }
    if (swap != Eviction::kAuto && t_swap < t_recompute) return swap;
    return Eviction::kRecompute;
  }

  // The window slot of each of `blocks` (a thread's table) that the window of a thread with
  // n_computed positions reaches, -1 for the others: what a swap saves and restores.
  std::vector<int32_t> window_slots_of(const std::vector<int32_t>& blocks,
                                       int32_t n_computed) const {
    std::vector<int32_t> slots(blocks.size(), -1);
    for (size_t k = static_cast<size_t>(kv->first_window_block(n_computed)); k < blocks.size();
         ++k) {
      slots[k] = kv->window_slot(blocks[k]);
    }
    return slots;
  }

  void evict(Thread* t) {
    const Eviction method = choose_method(*t);
    if (method == Eviction::kSwapRam || method == Eviction::kSwapDisk) {
      std::span<const int32_t> table = kv->table(t->id);
      SwapOut so;
      so.id = t->id;
      so.method = method;
      so.blocks.assign(table.begin(), table.end());
      so.window_slots = window_slots_of(so.blocks, t->n_computed);
      so.n_tokens = t->n_computed;
      t->swap_method = method;
      t->swap_bytes = static_cast<uint64_t>(t->n_computed) * opt.kv_bytes_per_token;
      t->n_swap_blocks = static_cast<int32_t>(so.blocks.size());
      if (method == Eviction::kSwapRam) {
        swap_ram_bytes += t->swap_bytes;
        ++st.n_preempt_ram;
      } else {
        ++st.n_preempt_disk;
      }
      plan.swap_out.push_back(std::move(so));
      t->phase = Phase::kSwapped;
    } else {
      plan.dropped.push_back(t->id);
      t->n_computed = 0;
      t->phase = Phase::kWaiting;
      ++st.n_preempt_recompute;
    }
    kv->free(t->id);
    t->evicted = true;
    if (t->active_prefill) {
      t->active_prefill = false;
      --n_active_prefill;
    }
  }

  // Whether the thread at order index i would get `need_new` fresh blocks plus the blocks of
  // `prefix` that nobody else holds, if every running thread after i that it may evict were.
  bool would_fit(size_t i, int32_t need_new, std::span<const int32_t> prefix, bool respect = true) {
    mark.assign(static_cast<size_t>(kv->n_blocks()), 0);
    int32_t held = 0;
    for (size_t j = 0; j < order.size(); ++j) {
      const Thread* t = order[j];
      if (t->phase != Phase::kRunning) continue;
      if (j > i && j <= victim_back && may_evict(*order[i], *t, respect)) continue;  // victim
      for (int32_t b : kv->table(t->id)) {
        if (b >= 0 && b < kv->n_blocks() && !mark[static_cast<size_t>(b)]) {
          mark[static_cast<size_t>(b)] = 1;
          ++held;
        }
      }
    }
    int64_t want = need_new;
    for (int32_t b : prefix) {
      if (b >= 0 && b < kv->n_blocks() && !mark[static_cast<size_t>(b)]) ++want;
    }
    return want <= kv->n_blocks() - held;
  }

  // ---- sizing ----

  // Tokens the thread at order index i computes if taken now: 1 for a single remaining token,
  // else a prefill chunk of what is left of the budget after one token for each running decode
  // later in order that could still be taken (and, under kPriority, that the latency rule would
  // keep), capped by its remaining tokens and (kRoundRobin) what is left of its quantum. 0: not
  // now.
  int32_t chunk_size(size_t i, const Thread& t, int32_t remaining, int32_t budget, int32_t n_taken,
                     double floor) const {
    if (remaining <= 0 || budget <= 0) return 0;
    if (remaining == 1) return 1;
    int32_t reserve = 0;
    const int32_t slots = opt.max_running - n_taken - 1;
    if (slots > 0) {
      const double new_floor = opt.policy == Policy::kPriority
                                   ? std::max(floor, static_cast<double>(t.priority))
                                   : kNoFloor;
      for (size_t j = i + 1; j < order.size() && reserve < slots; ++j) {
        const Thread* u = order[j];
        if (u->done() || u->evicted || !u->decoding()) continue;
        if (opt.policy == Policy::kPriority && u->effective < new_floor) continue;
        ++reserve;
      }
    }
    int32_t n = std::min(remaining, budget - reserve);
    if (opt.policy == Policy::kRoundRobin) {
      const int32_t redo = std::max(0, t.n_high_water - t.n_computed);
      n = std::min(n, redo + std::max(1, opt.quantum_tokens - t.quantum_used));
    }
    return std::max(n, 0);
  }

  // Tokens the prefix cache may serve for t.
  static std::span<const int32_t> match_span(const Thread& t) {
    std::span<const int32_t> all(t.tokens);
    if (t.n_match_max >= 0 && static_cast<size_t>(t.n_match_max) < all.size()) {
      return all.first(static_cast<size_t>(t.n_match_max));
    }
    return all;
  }

  // ---- schedule ----

  // What is left of one step while schedule() walks the order.
  struct StepBudget {
    int32_t budget = 0;         // tokens left in the step
    int32_t n_taken = 0;        // chunks taken so far
    double floor = kNoFloor;    // kPriority latency rule
    bool admit_closed = false;  // a waiting / swapped thread found no blocks: admit no more
  };

  // Starts a step: resets the plan, builds the order and marks the threads prefilling since the
  // previous step.
  void begin_step(double now_s) {
    plan = StepPlan{};
    ++st.n_steps;
    const uint64_t step = st.n_steps;
    build_order(now_s);
    n_active_prefill = 0;
    for (Thread* t : order) {
      t->evicted = false;
      t->active_prefill = t->phase == Phase::kRunning && !t->done() && !t->decoding() &&
                          t->last_step + 1 == step && t->last_step != 0;
      if (t->active_prefill) ++n_active_prefill;
    }
    victim_back = order.empty() ? 0 : order.size() - 1;
  }

  // Sizes and grows the KV of the running thread at order index i, evicting later threads if
  // needed; returns the tokens it computes this step (0: not taken).
  int32_t take_running(size_t i, Thread* t, const StepBudget& sb) {
    const int32_t n = chunk_size(i, *t, t->remaining(), sb.budget, sb.n_taken, sb.floor);
    if (n == 0) return 0;
    const int32_t target = t->n_computed + n;
    if (kv->blocks_needed(t->id, target) > kv->n_available()) {
      if (!would_fit(i, kv->blocks_needed(t->id, target), {})) {
        // Cannot grow even with every later thread gone: evicted. Cannot grow because the
        // later threads are protected by the margin: idle this step, keeping its KV.
        if (!would_fit(i, kv->blocks_needed(t->id, target), {}, false)) evict(t);
        return 0;
      }
      while (kv->blocks_needed(t->id, target) > kv->n_available()) {
        Thread* v = next_victim(i, *t);
        if (v == nullptr) break;
        evict(v);
      }
    }
    if (!kv->allocate(t->id, target, t->tokens)) {
      evict(t);  // not reached: would_fit() said it fits
      return 0;
    }
    return n;
  }

  // Admits the waiting thread at order index i: matches its prefix, opens its KV (evicting later
  // threads if needed) and makes it running; returns the tokens it computes this step (0: not
  // taken, sb.admit_closed set when it found no blocks).
  int32_t take_waiting(size_t i, Thread* t, StepBudget& sb) {
    kv::PrefixMatch match = kv->match_prefix(match_span(*t));
    if (match.n_pending > 0 && n_active_prefill > 0) return 0;  // wait for the other thread
    int32_t n = 0, n_hit = 0, need = 0;
    auto size_up = [&]() {
      n_hit = static_cast<int32_t>(match.blocks.size()) * bs + match.n_partial;
      n = chunk_size(i, *t, static_cast<int32_t>(t->tokens.size()) - n_hit, sb.budget, sb.n_taken,
                     sb.floor);
      need = ceil_div(n_hit + n, bs) - static_cast<int32_t>(match.blocks.size());
    };
    auto need_total = [&]() {
      int32_t k = need;
      for (int32_t b : match.blocks) k += kv->ref_count(b) == 0 ? 1 : 0;
      // The partial block's source is pinned while its copy's target is taken.
      if (match.partial_block >= 0 && kv->ref_count(match.partial_block) == 0) ++k;
      return k;
    };
    size_up();
    if (n == 0) return 0;
    if (need_total() > kv->n_available()) {
      if (!would_fit(i, need, match.blocks)) {
        sb.admit_closed = true;
        return 0;
      }
      while (need_total() > kv->n_available()) {
        Thread* v = next_victim(i, *t);
        if (v == nullptr) break;
        evict(v);
      }
      // Evictions only release blocks (computed ones stay matchable); match again so that
      // open() gets a match with no other KvManager call in between.
      match = kv->match_prefix(match_span(*t));
      size_up();
      if (n == 0 || need_total() > kv->n_available()) {
        sb.admit_closed = true;
        return 0;
      }
    }
    if (match.partial_block >= 0) {
      auto copy = kv->open_partial(t->id, match.blocks, match.partial_block, match.n_partial,
                                   static_cast<int64_t>(t->tokens.size()));
      if (!copy.is_ok()) return 0;  // not reached: need_total() counted the blocks
      plan.copies.push_back(*copy);
    } else if (!kv->open(t->id, match.blocks, static_cast<int64_t>(t->tokens.size())).is_ok()) {
      return 0;  // not reached: the thread is not open while waiting
    }
    if (!kv->allocate(t->id, n_hit + n, t->tokens)) {
      kv->free(t->id);  // not reached: checked above
      sb.admit_closed = true;
      return 0;
    }
    t->n_computed = n_hit;
    t->phase = Phase::kRunning;
    st.prefix_hit_tokens += static_cast<uint64_t>(n_hit);
    return n;
  }

  // Restores the swapped thread at order index i: opens its KV (evicting later threads if
  // needed), plans its swap-in and makes it running; returns the tokens it computes this step (0:
  // not taken, sb.admit_closed set when it found no blocks).
  int32_t take_swapped(size_t i, Thread* t, StepBudget& sb) {
    const int32_t n = chunk_size(i, *t, t->remaining(), sb.budget, sb.n_taken, sb.floor);
    if (n == 0) return 0;
    const int32_t target =
        std::max(t->n_computed + n, (std::max(t->n_swap_blocks, 1) - 1) * bs + 1);
    const int32_t need = ceil_div(target, bs);
    // Window slots only for the blocks the restored thread's window reaches.
    const int32_t need_slots = need - kv->first_window_block(t->n_computed);
    auto short_of = [&] {
      return need > kv->n_available_blocks() || need_slots > kv->n_available_slots();
    };
    if (short_of()) {
      if (!would_fit(i, need, {})) {
        sb.admit_closed = true;
        return 0;
      }
      while (short_of()) {
        Thread* v = next_victim(i, *t);
        if (v == nullptr) break;
        evict(v);
      }
      if (short_of()) {
        sb.admit_closed = true;
        return 0;
      }
    }
    if (!kv->open(t->id, {}).is_ok()) return 0;  // not reached
    if (!kv->set_restored(t->id, t->n_computed).is_ok() ||
        !kv->allocate(t->id, target, t->tokens)) {
      kv->free(t->id);  // not reached
      sb.admit_closed = true;
      return 0;
    }
    std::span<const int32_t> table = kv->table(t->id);
    SwapIn si;
    si.id = t->id;
    si.blocks.assign(
        table.begin(),
        table.begin() + std::min<size_t>(table.size(), static_cast<size_t>(t->n_swap_blocks)));
    si.window_slots = window_slots_of(si.blocks, t->n_computed);
    plan.swap_in.push_back(std::move(si));
    if (t->swap_method == Eviction::kSwapRam)
      swap_ram_bytes -= std::min(swap_ram_bytes, t->swap_bytes);
    t->swap_bytes = 0;
    t->phase = Phase::kRunning;
    ++st.n_swap_in;
    return n;
  }

  // Adds t's chunk of n tokens to the plan and charges it to the step.
  void take_chunk(Thread* t, int32_t n, StepBudget& sb) {
    Chunk c;
    c.id = t->id;
    c.pos0 = t->n_computed;
    c.n_tokens = n;
    c.sample = c.pos0 + n == static_cast<int32_t>(t->tokens.size());
    plan.chunks.push_back(c);
    plan.n_tokens += n;
    sb.budget -= n;
    ++sb.n_taken;
    const bool prefill = !(n == 1 && c.sample && c.pos0 >= t->n_prompt);
    if (prefill) {
      if (opt.policy == Policy::kPriority)
        sb.floor = std::max(sb.floor, static_cast<double>(t->priority));
      if (!t->active_prefill) {
        t->active_prefill = true;
        ++n_active_prefill;
      }
    }
  }

  void schedule(double now_s) {
    begin_step(now_s);
    StepBudget sb;
    sb.budget = opt.step_tokens;

    for (size_t i = 0; i < order.size(); ++i) {
      if (sb.n_taken >= opt.max_running || sb.budget <= 0) break;
      Thread* t = order[i];
      if (t->done() || t->evicted) continue;
      if (opt.policy == Policy::kPriority && t->effective < sb.floor) continue;
      if (t->phase != Phase::kRunning && sb.admit_closed) continue;

      int32_t n = 0;
      if (t->phase == Phase::kRunning) {
        n = take_running(i, t, sb);
      } else if (t->phase == Phase::kWaiting) {
        n = take_waiting(i, t, sb);
      } else {  // kSwapped
        n = take_swapped(i, t, sb);
      }
      if (n == 0) continue;
      take_chunk(t, n, sb);  // taken: one chunk
    }
  }

  // ---- complete ----

  void complete(const StepResult& result, double now_s) {
    const uint64_t step = st.n_steps;
    std::vector<ThreadId> skip;  // swap-in failed: chunk not executed
    for (ThreadId id : result.swap_failed) {
      Thread* t = find(id);
      if (t == nullptr) continue;
      if (t->phase == Phase::kSwapped) {  // swap-out failed (or its entry is lost): recompute
        if (t->swap_method == Eviction::kSwapRam)
          swap_ram_bytes -= std::min(swap_ram_bytes, t->swap_bytes);
        t->swap_bytes = 0;
        t->n_swap_blocks = 0;
        t->n_computed = 0;
        t->phase = Phase::kWaiting;
      } else if (t->phase == Phase::kRunning &&
                 std::any_of(plan.swap_in.begin(), plan.swap_in.end(),
                             [id](const SwapIn& s) { return s.id == id; })) {
        kv->free(id);
        t->n_computed = 0;
        t->phase = Phase::kWaiting;
        skip.push_back(id);
      }
    }
    std::unordered_map<ThreadId, int32_t> sampled;
    sampled.reserve(result.sampled.size());
    for (const StepResult::Sampled& s : result.sampled) sampled.emplace(s.id, s.token);

    for (const Chunk& c : plan.chunks) {
      if (std::find(skip.begin(), skip.end(), c.id) != skip.end()) continue;
      Thread* t = find(c.id);
      if (t == nullptr || t->phase != Phase::kRunning || t->n_computed != c.pos0) continue;
      if (c.pos0 + c.n_tokens > static_cast<int32_t>(t->tokens.size())) continue;
      const bool decode = c.n_tokens == 1 && c.sample && c.pos0 >= t->n_prompt;
      t->n_computed += c.n_tokens;
      // New positions only (see n_high_water).
      const int32_t n_new = std::max(0, t->n_computed - std::max(t->n_high_water, c.pos0));
      t->n_high_water = std::max(t->n_high_water, t->n_computed);
      if (decode) {
        st.decode_tokens += 1;
      } else {
        st.prefill_tokens += static_cast<uint64_t>(c.n_tokens);
      }
      Tenant& ten = tenants[t->tenant];
      ten.n_tokens += static_cast<uint64_t>(c.n_tokens);
      ten.vtc += decode ? opt.fair_decode_weight : static_cast<double>(c.n_tokens);
      if (c.sample) {
        auto it = sampled.find(c.id);
        if (it != sampled.end() && !t->done()) {
          t->tokens.push_back(it->second);
        } else {
          // No token: the last position is computed again next step, to sample from it.
          t->n_computed -= 1;
        }
      }
      kv->commit(t->id, t->tokens, t->n_computed);
      t->last_run_s = now_s;
      t->last_step = step;
      if (opt.policy == Policy::kRoundRobin && n_new > 0) {
        t->quantum_used += n_new;
        if (t->quantum_used >= opt.quantum_tokens) {
          t->quantum_used = 0;
          rr_queue.splice(rr_queue.end(), rr_queue, t->rr_pos);
        }
      }
    }
  }
};

Scheduler::Scheduler(const SchedulerOptions& options, kv::KvManager* kv)
    : impl_(std::make_unique<Impl>(options, kv)) {}
Scheduler::~Scheduler() = default;

Status Scheduler::add(ThreadSpec spec) {
  Impl& m = *impl_;
  const std::string who = "scheduler: thread " + std::to_string(spec.id);
  if (m.threads.count(spec.id) != 0) return invalid_argument(who + " already exists");
  if (spec.prompt.empty()) return invalid_argument(who + ": empty prompt");
  if (static_cast<int64_t>(spec.n_kv_tokens) < static_cast<int64_t>(spec.prompt.size())) {
    return invalid_argument(who + ": n_kv_tokens " + std::to_string(spec.n_kv_tokens) +
                            " is less than the prompt (" + std::to_string(spec.prompt.size()) +
                            " tokens)");
  }
  if (ceil_div(spec.n_kv_tokens, m.bs) > m.kv->n_blocks()) {
    return invalid_argument(who + ": n_kv_tokens " + std::to_string(spec.n_kv_tokens) + " needs " +
                            std::to_string(ceil_div(spec.n_kv_tokens, m.bs)) +
                            " KV blocks, the pool has " + std::to_string(m.kv->n_blocks()));
  }
  Tenant& ten = m.tenants[spec.tenant];
  if (ten.n_live == 0) {
    // Becoming active: lifted to the smallest counter among active tenants.
    double lo = std::numeric_limits<double>::infinity();
    for (const auto& [k, other] : m.tenants) {
      if (other.n_live > 0) lo = std::min(lo, other.vtc);
    }
    if (lo != std::numeric_limits<double>::infinity()) ten.vtc = std::max(ten.vtc, lo);
  }
  ++ten.n_live;

  Thread& t = m.threads[spec.id];
  t.id = spec.id;
  t.n_prompt = static_cast<int32_t>(spec.prompt.size());
  t.tokens = std::move(spec.prompt);
  t.n_kv_tokens = spec.n_kv_tokens;
  t.priority = spec.priority;
  t.tenant = spec.tenant;
  t.arrival_s = spec.arrival_s;
  t.n_match_max = spec.n_match_max;
  t.last_run_s = spec.arrival_s;
  t.serial = m.next_serial++;
  t.rr_pos = m.rr_queue.insert(m.rr_queue.end(), &t);
  return Status::ok();
}

Result<Phase> Scheduler::remove(ThreadId id) {
  Impl& m = *impl_;
  auto it = m.threads.find(id);
  if (it == m.threads.end()) {
    return not_found("scheduler: thread " + std::to_string(id) + " is not live");
  }
  Thread& t = it->second;
  const Phase phase = t.phase;
  m.kv->free(id);
  if (phase == Phase::kSwapped && t.swap_method == Eviction::kSwapRam) {
    m.swap_ram_bytes -= std::min(m.swap_ram_bytes, t.swap_bytes);
  }
  auto ten = m.tenants.find(t.tenant);
  if (ten != m.tenants.end() && ten->second.n_live > 0) --ten->second.n_live;
  m.rr_queue.erase(t.rr_pos);
  m.threads.erase(it);
  return phase;
}

const StepPlan& Scheduler::schedule(double now_s) {
  impl_->schedule(now_s);
  return impl_->plan;
}

void Scheduler::complete(const StepResult& result, double now_s) {
  impl_->complete(result, now_s);
}

std::span<const int32_t> Scheduler::tokens(ThreadId id) const {
  const Thread* t = impl_->find(id);
  if (t == nullptr) return {};
  return t->tokens;
}

int32_t Scheduler::n_prompt(ThreadId id) const {
  const Thread* t = impl_->find(id);
  return t == nullptr ? 0 : t->n_prompt;
}

Status Scheduler::set_match_max(ThreadId id, int32_t n_match_max) {
  Thread* t = impl_->find(id);
  if (t == nullptr) return not_found("scheduler: thread " + std::to_string(id) + " is not live");
  t->n_match_max = n_match_max;
  return Status::ok();
}

int32_t Scheduler::n_computed(ThreadId id) const {
  const Thread* t = impl_->find(id);
  return t == nullptr ? 0 : t->n_computed;
}

Result<Phase> Scheduler::phase(ThreadId id) const {
  const Thread* t = impl_->find(id);
  if (t == nullptr) return not_found("scheduler: thread " + std::to_string(id) + " is not live");
  return t->phase;
}

std::span<const int32_t> Scheduler::table(ThreadId id) const {
  return impl_->kv->table(id);
}

bool Scheduler::idle() const {
  return impl_->threads.empty();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s = impl_->st;
  for (const auto& [id, t] : impl_->threads) {
    switch (t.phase) {
      case Phase::kWaiting:
        ++s.n_waiting;
        break;
      case Phase::kRunning:
        ++s.n_running;
        break;
      case Phase::kSwapped:
        ++s.n_swapped;
        break;
    }
  }
  s.swap_ram_bytes = impl_->swap_ram_bytes;
  return s;
}

uint64_t Scheduler::tenant_tokens(uint64_t tenant) const {
  auto it = impl_->tenants.find(tenant);
  return it == impl_->tenants.end() ? 0 : it->second.n_tokens;
}

}  // namespace llmt::sched
