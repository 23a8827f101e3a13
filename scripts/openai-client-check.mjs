// Checks a running `llmthreads serve` with the official OpenAI JavaScript client (npm `openai`).
//
// Usage (the client is not a project dependency; install it anywhere and point NODE_PATH there):
//   mkdir -p /tmp/oai && (cd /tmp/oai && npm install openai)
//   ./build/llmthreads serve -m ../shared/models/stories260K.gguf --port 18080 --api-key k \
//       --chat-template chatml &
//   NODE_PATH=/tmp/oai/node_modules node scripts/openai-client-check.mjs http://127.0.0.1:18080/v1 k
//
// Every call goes through the client's own request, SSE and error code paths; each check prints
// one line, and the exit status is the number of failed checks. Bounded: about 60 requests, each
// with a 60 s timeout and no retries (the batch is polled for at most 60 s).
import {createRequire} from "node:module";

const require = createRequire(import.meta.url);
const OpenAI = require(require.resolve("openai", {paths: (process.env.NODE_PATH || "").split(":")}));
const Client = OpenAI.default || OpenAI;
const toFile = OpenAI.toFile || Client.toFile;

const baseURL = process.argv[2] || "http://127.0.0.1:18080/v1";
const apiKey = process.argv[3] || "none";
const client = new Client({baseURL, apiKey, maxRetries: 0, timeout: 60000});
const model = "model";  // the server accepts any model name it serves; fixed below from /models

let failed = 0;
async function check(name, fn) {
  try {
    const detail = await fn();
    const skipped = typeof detail === "string" && detail.startsWith("skipped");
    console.log(`${skipped ? "skip" : "ok  "}  ${name}${detail ? ": " + detail : ""}`);
  } catch (e) {
    failed++;
    console.log(`FAIL  ${name}: ${e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e}`);
  }
}
function expect(cond, what) {
  if (!cond) throw new Error("expected " + what);
}

let served = model;
await check("models.list", async () => {
  const page = await client.models.list();
  const ids = page.data.map(m => m.id);
  expect(ids.length >= 1 && page.data.every(m => m.object === "model"), "model objects");
  served = ids[0];
  return ids.join(",");
});

await check("completions.create", async () => {
  const r = await client.completions.create({model: served, prompt: "Once upon a time",
                                             max_tokens: 8, temperature: 0});
  expect(r.object === "text_completion" && r.choices.length === 1, "one text_completion choice");
  expect(typeof r.choices[0].text === "string" && r.choices[0].text.length > 0, "text");
  expect(["stop", "length"].includes(r.choices[0].finish_reason), "finish_reason");
  expect(r.usage.prompt_tokens > 0 && r.usage.completion_tokens === 8, "usage");
  expect(r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, "total");
  return JSON.stringify(r.choices[0].text);
});

let greedy = "";
await check("completions.create stream", async () => {
  const stream = await client.completions.create({model: served, prompt: "Once upon a time",
                                                  max_tokens: 8, temperature: 0, stream: true,
                                                  stream_options: {include_usage: true}});
  let n = 0, finish = null, usage = null;
  for await (const c of stream) {
    n++;
    if (c.choices.length) {
      greedy += c.choices[0].text;
      if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    }
    if (c.usage) usage = c.usage;
  }
  expect(n >= 2 && finish !== null, "chunks and a finish_reason");
  expect(usage && usage.completion_tokens === 8, "the usage chunk");
  return `${n} chunks ${JSON.stringify(greedy)}`;
});

await check("stream equals non-stream (greedy)", async () => {
  const r = await client.completions.create({model: served, prompt: "Once upon a time",
                                             max_tokens: 8, temperature: 0});
  expect(r.choices[0].text === greedy, `${JSON.stringify(r.choices[0].text)} == streamed`);
});

await check("chat.completions.create", async () => {
  const r = await client.chat.completions.create({
    model: served, max_tokens: 8, temperature: 0,
    messages: [{role: "system", content: "You tell stories."}, {role: "user", content: "Hi"}]});
  expect(r.object === "chat.completion", "chat.completion");
  expect(r.choices[0].message.role === "assistant", "assistant message");
  expect(typeof r.choices[0].message.content === "string", "content");
  return JSON.stringify(r.choices[0].message.content);
});

await check("chat.completions.create stream", async () => {
  const stream = await client.chat.completions.create({
    model: served, max_tokens: 8, temperature: 0, stream: true,
    messages: [{role: "user", content: "Hi"}]});
  let text = "", role = null, finish = null;
  for await (const c of stream) {
    expect(c.object === "chat.completion.chunk", "chunk object");
    const d = c.choices[0]?.delta || {};
    if (d.role) role = d.role;
    if (d.content) text += d.content;
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  expect(role === "assistant" && finish !== null, "role and finish_reason");
  return JSON.stringify(text);
});

await check("stream.finalChatCompletion (client-side assembly)", async () => {
  const runner = client.chat.completions.stream({
    model: served, max_tokens: 6, temperature: 0, messages: [{role: "user", content: "Hi"}]});
  const done = await runner.finalChatCompletion();
  expect(done.choices[0].message.role === "assistant", "assembled message");
  return JSON.stringify(done.choices[0].message.content);
});

await check("extension fields pass through (priority, tenant)", async () => {
  const r = await client.completions.create({model: served, prompt: "Hi", max_tokens: 2,
                                             priority: 5, tenant: "client-check"});
  expect(r.choices.length === 1, "a choice");
});

await check("completions logprobs (legacy object)", async () => {
  const r = await client.completions.create({model: served, prompt: "Once upon a time",
                                             max_tokens: 4, temperature: 0, logprobs: 3});
  const lp = r.choices[0].logprobs;
  expect(lp && lp.tokens.length === 4 && lp.token_logprobs.length === 4, "4 tokens");
  expect(lp.tokens.join("") === r.choices[0].text, "tokens spell the text");
  expect(lp.token_logprobs.every(x => x <= 0), "logprobs <= 0");
  expect(lp.top_logprobs.every(t => Object.keys(t).length >= 3), "3 alternatives");
  return lp.token_logprobs.map(x => x.toFixed(3)).join(" ");
});

await check("chat logprobs + top_logprobs (content entries)", async () => {
  const r = await client.chat.completions.create({
    model: served, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
    messages: [{role: "user", content: "Hi"}]});
  const c = r.choices[0].logprobs.content;
  expect(c.length >= 1 && c.every(e => e.top_logprobs.length === 2 && Array.isArray(e.bytes)),
         "entries with 2 alternatives and bytes");
  expect(c.every(e => e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob), "sorted");
  return c.map(e => JSON.stringify(e.token)).join(" ");
});

await check("n = 3 choices, seeded", async () => {
  const r = await client.completions.create({model: served, prompt: "Once upon a time",
                                             max_tokens: 6, temperature: 1.5, seed: 7, n: 3});
  expect(r.choices.length === 3, "3 choices");
  expect(r.choices.map(c => c.index).join() === "0,1,2", "indexes 0..2");
  expect(r.usage.completion_tokens === 18, "completion tokens summed");
  expect(new Set(r.choices.map(c => c.text)).size > 1, "different samples (seeds 7, 8, 9)");
  return r.choices.map(c => JSON.stringify(c.text)).join(" | ");
});

await check("n = 2 streamed chat, chunks by index", async () => {
  const stream = await client.chat.completions.create({
    model: served, max_tokens: 4, temperature: 1.0, seed: 3, n: 2, stream: true,
    messages: [{role: "user", content: "Hi"}]});
  const text = ["", ""], finished = [false, false];
  for await (const c of stream) {
    for (const ch of c.choices) {
      if (ch.delta?.content) text[ch.index] += ch.delta.content;
      if (ch.finish_reason) finished[ch.index] = true;
    }
  }
  expect(finished[0] && finished[1], "both choices finished");
  return text.map(t => JSON.stringify(t)).join(" | ");
});

await check("response_format json_schema (strict): content parses and fits", async () => {
  const r = await client.chat.completions.create({
    model: served, max_tokens: 120, temperature: 1.0, seed: 3,
    messages: [{role: "user", content: "A pet as JSON"}],
    response_format: {type: "json_schema", json_schema: {name: "pet", strict: true, schema: {
      type: "object", additionalProperties: false, required: ["name", "legs"],
      properties: {name: {type: "string", maxLength: 12}, legs: {type: "integer"}}}}}});
  const pet = JSON.parse(r.choices[0].message.content);
  expect(typeof pet.name === "string" && pet.name.length <= 12, "name: string <= 12");
  expect(Number.isInteger(pet.legs), "legs: integer");
  expect(Object.keys(pet).length === 2, "no other keys");
  return r.choices[0].message.content;
});

await check("response_format bogus -> BadRequestError naming it", async () => {
  try {
    await client.chat.completions.create({model: served, max_tokens: 2,
                                          messages: [{role: "user", content: "Hi"}],
                                          response_format: {type: "bogus"}});
  } catch (e) {
    expect(e instanceof Client.BadRequestError, "BadRequestError, got " + e.constructor.name);
    expect(e.param === "response_format", "param response_format, got " + e.param);
    return e.message;
  }
  throw new Error("no error");
});

await check("sampling fields (top_k, min_p, typical_p, repeat_penalty, logit_bias) change text",
            async () => {
  const base = {model: served, prompt: "Once upon a time", max_tokens: 16, temperature: 1.0,
                seed: 9, top_p: 1.0};
  const text = async (extra) =>
      (await client.completions.create({...base, ...extra})).choices[0].text;
  const t0 = await text({top_k: 0, min_p: 0});
  for (const extra of [{top_k: 1}, {min_p: 0.6, top_k: 0}, {typical_p: 0.2, top_k: 0, min_p: 0},
                       {repeat_penalty: 3.0, top_k: 0, min_p: 0},
                       {logit_bias: {"300": 100}, top_k: 0, min_p: 0}]) {
    expect(await text(extra) !== t0, JSON.stringify(extra) + " to change the text");
  }
  return "5 fields";
});

await check("no seed: a fresh one per request, returned", async () => {
  const a = await client.completions.create({model: served, prompt: "Once upon a time",
                                             max_tokens: 12, temperature: 1.0});
  expect(typeof a.seed === "number", "a seed in the response");
  const b = await client.completions.create({model: served, prompt: "Once upon a time",
                                             max_tokens: 12, temperature: 1.0});
  expect(a.seed !== b.seed, "two different seeds");
  return `seeds ${a.seed} ${b.seed}`;
});

await check("unknown role -> BadRequestError", async () => {
  try {
    await client.chat.completions.create({model: served, max_tokens: 2,
                                          messages: [{role: "nonsense", content: "Hi"}]});
  } catch (e) {
    expect(e instanceof Client.BadRequestError, "BadRequestError");
    return e.message;
  }
  throw new Error("no error");
});

await check("400 -> BadRequestError", async () => {
  try {
    await client.completions.create({model: served, prompt: "Hi", max_tokens: -3});
  } catch (e) {
    expect(e instanceof Client.BadRequestError && e.status === 400, "BadRequestError");
    expect(typeof e.error?.message === "string" || typeof e.message === "string", "a message");
    return e.message.slice(0, 80);
  }
  throw new Error("no error");
});

await check("unknown model -> 4xx error class", async () => {
  try {
    await client.completions.create({model: "no-such-model", prompt: "Hi", max_tokens: 2});
  } catch (e) {
    expect(e instanceof Client.APIError && e.status >= 400 && e.status < 500, "APIError 4xx");
    return `${e.status} ${e.message.slice(0, 60)}`;
  }
  throw new Error("no error");
});

await check("models.retrieve(served) and an unknown id -> NotFoundError", async () => {
  const m = await client.models.retrieve(served);
  expect(m.id === served && m.object === "model", "the served model object");
  try {
    await client.models.retrieve("no-such-model");
  } catch (e) {
    expect(e instanceof Client.NotFoundError && e.status === 404, "NotFoundError 404");
    return `${m.id}; 404`;
  }
  throw new Error("no error for an unknown id");
});

let embedding0 = null;
await check("embeddings.create (the client's default base64, decoded by it)", async () => {
  const r = await client.embeddings.create({model: served, input: "Once upon a time"});
  expect(r.object === "list" && r.data.length === 1 && r.data[0].object === "embedding",
         "one embedding object");
  const v = r.data[0].embedding;
  expect(Array.isArray(v) && v.length > 0 && v.every(x => typeof x === "number"), "floats");
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  expect(Math.abs(norm - 1) < 1e-4, "unit length (got " + norm + ")");
  expect(r.usage.prompt_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens, "usage");
  embedding0 = v;
  return `${v.length} dims, ${r.usage.prompt_tokens} tokens`;
});

await check("embeddings.create float, two inputs, in order", async () => {
  const r = await client.embeddings.create({model: served, encoding_format: "float",
                                            input: ["Once upon a time", "The end"]});
  expect(r.data.length === 2 && r.data[0].index === 0 && r.data[1].index === 1, "two, in order");
  const a = r.data[0].embedding, b = r.data[1].embedding;
  expect(embedding0 && a.length === embedding0.length, "same dimensions");
  expect(a.every((x, i) => Math.abs(x - embedding0[i]) < 1e-6), "float == decoded base64");
  expect(b.some((x, i) => x !== a[i]), "different texts differ");
  return "ok";
});

await check("embeddings.create dimensions -> BadRequestError naming it", async () => {
  try {
    await client.embeddings.create({model: served, input: "Hi", dimensions: 3});
  } catch (e) {
    expect(e instanceof Client.BadRequestError && e.status === 400, "BadRequestError");
    expect(e.param === "dimensions" || String(e.message).includes("dimensions"), "names it");
    return `${e.status} ${e.message.slice(0, 60)}`;
  }
  throw new Error("no error");
});

await check("401 with a wrong key -> AuthenticationError", async () => {
  if (apiKey === "none") return "skipped: server started without --api-key";
  const bad = new Client({baseURL, apiKey: apiKey + "x", maxRetries: 0});
  try {
    await bad.models.list();
  } catch (e) {
    expect(e instanceof Client.AuthenticationError && e.status === 401, "AuthenticationError");
    return "401";
  }
  throw new Error("no error");
});

await check("stream chunks carry the seed (none given)", async () => {
  const stream = await client.completions.create({model: served, prompt: "Once upon a time",
                                                  max_tokens: 6, temperature: 1.0, stream: true});
  const seeds = new Set();
  for await (const c of stream) seeds.add(c.seed);
  expect(seeds.size === 1 && typeof [...seeds][0] === "number", "one numeric seed in every chunk");
  return `seed ${[...seeds][0]}`;
});

await check("unknown field -> BadRequestError naming it", async () => {
  try {
    await client.completions.create({model: served, prompt: "Hi", max_tokens: 2,
                                     mirostat: 2});
  } catch (e) {
    expect(e instanceof Client.BadRequestError && e.param === "mirostat", "param mirostat");
    return e.message.slice(0, 60);
  }
  throw new Error("no error");
});

let batchFile = null;
await check("files.create (purpose batch) + files.retrieve + files.list", async () => {
  const lines = [0, 1, 2].map(i => JSON.stringify({
    custom_id: `req-${i}`, method: "POST", url: "/v1/completions",
    body: {model: served, prompt: "Once upon a time", max_tokens: 4 + i, temperature: 0}}));
  lines.push(JSON.stringify({custom_id: "bad", method: "POST", url: "/v1/completions",
                             body: {model: served, prompt: "Hi", max_tokens: -1}}));
  batchFile = await client.files.create({
    file: await toFile(Buffer.from(lines.join("\n") + "\n"), "batch.jsonl"), purpose: "batch"});
  expect(batchFile.object === "file" && batchFile.id.startsWith("file-"), "a file object");
  expect(batchFile.purpose === "batch" && batchFile.filename === "batch.jsonl", "purpose, name");
  const again = await client.files.retrieve(batchFile.id);
  expect(again.bytes === batchFile.bytes, "retrieve");
  const page = await client.files.list();
  expect(page.data.some(f => f.id === batchFile.id), "listed");
  return `${batchFile.id} ${batchFile.bytes} bytes`;
});

await check("batches.create + retrieve until completed + files.content", async () => {
  expect(batchFile, "the uploaded file");
  const b = await client.batches.create({input_file_id: batchFile.id, endpoint: "/v1/completions",
                                         completion_window: "24h", metadata: {check: "mjs"}});
  expect(b.object === "batch" && b.id.startsWith("batch_"), "a batch object");
  expect(["validating", "in_progress"].includes(b.status), "validating or in_progress");
  let r = b;
  const deadline = Date.now() + 60000;
  while (!["completed", "failed", "cancelled", "expired"].includes(r.status)) {
    expect(Date.now() < deadline, "the batch to end within 60 s");
    await new Promise(res => setTimeout(res, 100));
    r = await client.batches.retrieve(b.id);
  }
  expect(r.status === "completed", "completed, got " + r.status);
  expect(r.request_counts.total === 4 && r.request_counts.completed === 3 &&
         r.request_counts.failed === 1, "counts 4/3/1");
  expect(r.metadata.check === "mjs", "metadata kept");
  const out = (await (await client.files.content(r.output_file_id)).text()).trim().split("\n")
      .map(l => JSON.parse(l));
  expect(out.length === 3 && new Set(out.map(l => l.custom_id)).size === 3, "3 answers");
  expect(out.every(l => l.response.status_code === 200 && l.response.body.model === served),
         "status 200 and the served model");
  const greedy4 = (await client.completions.create({model: served, prompt: "Once upon a time",
                                                    max_tokens: 4, temperature: 0})).choices[0].text;
  expect(out.find(l => l.custom_id === "req-0").response.body.choices[0].text === greedy4,
         "the batch answer equals the live one");
  const err = (await (await client.files.content(r.error_file_id)).text()).trim().split("\n")
      .map(l => JSON.parse(l));
  expect(err.length === 1 && err[0].custom_id === "bad" && err[0].response.status_code === 400,
         "the bad request in the error file");
  const list = await client.batches.list({limit: 5});
  expect(list.data.some(x => x.id === b.id), "batches.list has it");
  return `${b.id}: ${out.length} answers, ${err.length} error`;
});

await check("files.delete", async () => {
  expect(batchFile, "the uploaded file");
  const del = await (client.files.delete || client.files.del).call(client.files, batchFile.id);
  expect(del.deleted === true && del.id === batchFile.id, "deleted");
  try {
    await client.files.retrieve(batchFile.id);
  } catch (e) {
    expect(e instanceof Client.NotFoundError, "NotFoundError after delete");
    return "404 after";
  }
  throw new Error("still there");
});

console.log(failed === 0 ? "all checks passed" : `${failed} check(s) failed`);
process.exit(failed);
