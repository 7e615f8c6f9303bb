// An example cronfence webhook target: Node.js 20, node: built-ins only.
//
//   CRONFENCE_SECRET=... node target.mjs PORT EFFECTS_FILE
//
// (or PORT and EFFECTS_FILE in the environment; port 0 picks a free one,
// printed as "listening on 127.0.0.1:PORT"). The contract is DESIGN §5:
//
// 1. Verify Cronfence-Signature, t=<unix seconds>,v2=<hex>, where
//    v2 = hex(HMAC-SHA256(secret, t + "\n" + Cronfence-Job + "\n" +
//    Fencing-Token + "\n" + Idempotency-Key + "\n" + raw body)), and refuse
//    a t more than 5 minutes old (or ahead): 401. (A Standard Webhooks
//    library could check webhook-signature instead, given "whsec_" +
//    base64(secret).)
// 2. Check that the Idempotency-Key starts with "<Cronfence-Job>@" and that
//    the body's "job", when it has one, is Cronfence-Job: 400 otherwise. The
//    key of a scheduled firing is "<job>@<instant>", of a manual run
//    "<job>@manual-<run id>"; a delivery of one job replayed as another's
//    fails here or at the signature.
// 3. Together with the effect: a seen Idempotency-Key gets 200 and nothing is
//    done again; a fencing token lower than the highest in its fence scope
//    gets 409; otherwise do the work and remember the key and the token.
//
// The fence scope is the Cronfence-Fence-Scope header. "job" (overlap forbid
// or queue; also what a delivery without the header means): keep the highest
// token per job. "slot" (overlap allow, whose slots may overlap and arrive out
// of token order): keep it per Idempotency-Key, so a new key is accepted even
// below the job's highest. The header is not signed: a job once accepted with
// scope "job" stays "job", whatever a later delivery says.
//
// The "work" here is appending a JSON line {job, token, key, run_id} to
// EFFECTS_FILE.
import { createHmac, timingSafeEqual } from "node:crypto";
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

const MAX_AGE_S = 300; // oldest (or most future) signature t accepted
const MAX_BODY_BYTES = 1 << 20;
const TOKEN_MAX = 2n ** 63n - 1n; // tokens exceed 2^53: BigInt, never Number

const secret = process.env.CRONFENCE_SECRET;
const port = Number(process.argv[2] ?? process.env.PORT ?? 8000);
const effectsPath = process.argv[3] ?? process.env.EFFECTS_FILE ?? "effects.jsonl";

// Per job: { highest: BigInt over every scope, scope: "job" or "slot", keys:
// Set }. In memory for the example, so a restart forgets it: a real target
// must store it in its database, in the same transaction as its effect (else
// a crash between the effect and the bookkeeping lets a retry run the effect
// twice).
const jobs = new Map();

// True when header carries one fresh t and a v2 that is our HMAC (any v2: a
// sender rotating its secret sends one per secret); every v2 is compared in
// constant time. Other schemes (the retired v1) are ignored.
function signatureOk(header, job, token, key, body) {
  const items = header.split(",").map((item) => {
    const at = item.indexOf("=");
    return at < 0 ? [item, ""] : [item.slice(0, at), item.slice(at + 1)];
  });
  const times = items.filter(([name]) => name === "t").map(([, value]) => value);
  const candidates = items.filter(([name]) => name === "v2").map(([, value]) => value);
  if (times.length !== 1 || !/^[0-9]{1,19}$/.test(times[0])) return false;
  if (candidates.length === 0) return false;
  if (!candidates.every((v2) => /^[0-9a-fA-F]{64}$/.test(v2))) return false;
  if (Math.abs(Date.now() / 1000 - Number(times[0])) > MAX_AGE_S) return false;
  const want = createHmac("sha256", secret)
    .update(`${times[0]}\n${job}\n${token}\n${key}\n`)
    .update(body) // the raw bytes: the MAC is over them, not over parsed JSON
    .digest();
  const matches = candidates.map((v2) => timingSafeEqual(want, Buffer.from(v2, "hex")));
  return matches.includes(true); // all compared: no early exit
}

// The body's "job", or undefined when the body is not a JSON object naming
// one (a raw body).
function bodyJob(body) {
  try {
    const doc = JSON.parse(body.toString("utf8"));
    return doc !== null && typeof doc === "object" && !Array.isArray(doc) ? doc.job : undefined;
  } catch {
    return undefined;
  }
}

// Checks, performs and records one delivery. It is synchronous (no await, a
// sync file write), so no other request can run between the check and the
// record: the event loop gives us the "one transaction" for free here.
function deliver(job, token, key, runId, named) {
  const state = jobs.get(job) ?? { highest: -1n, scope: named, keys: new Set() };
  const scope = state.scope === "job" ? "job" : named; // never downgraded by the unsigned header
  if (state.keys.has(key)) return [200, { status: "duplicate" }];
  // >= and not >: an equal token comes from the same claim as the highest (a
  // retry of that firing, whose key you may have pruned). Fencing refuses
  // only an older lock holder, one whose token is lower. For scope "slot" the
  // highest is the key's, and a seen key is a repeat (above): a new key is
  // accepted whatever other slots accepted.
  if (scope === "job" && token < state.highest) {
    return [409, `{"status":"stale","highest":${state.highest}}`];
  }
  // JSON.stringify cannot write a BigInt: the token goes in as its digits.
  const line = `{"job":${JSON.stringify(job)},"token":${token},"key":${JSON.stringify(key)},` +
    `"run_id":${JSON.stringify(runId ?? null)}}\n`;
  appendFileSync(effectsPath, line); // the effect; throws (500) before we record anything
  if (token > state.highest) state.highest = token;
  state.scope = scope;
  state.keys.add(key);
  jobs.set(job, state);
  return [200, { status: "accepted" }];
}

function answer(res, status, doc) {
  const payload = typeof doc === "string" ? doc : JSON.stringify(doc);
  res.writeHead(status, { "Content-Type": "application/json" }).end(payload);
}

// Any method and path: the job chooses them.
function handle(req, body, res) {
  const signature = req.headers["cronfence-signature"];
  const tokenText = req.headers["fencing-token"] ?? "";
  const key = req.headers["idempotency-key"];
  const job = req.headers["cronfence-job"];
  if (signature === undefined || !signatureOk(signature, job ?? "", tokenText, key ?? "", body)) {
    return answer(res, 401, { status: "error", error: "bad signature" });
  }
  if (!/^[0-9]{1,19}$/.test(tokenText) || BigInt(tokenText) > TOKEN_MAX) {
    return answer(res, 400, { status: "error", error: "bad fencing token" });
  }
  // Every key, scheduled or manual, is "<job>@...", and the body names the job
  // too: all three must agree, or a replay could take another job's key or
  // raise its highest token.
  const named = bodyJob(body);
  if (!key || !job || !key.startsWith(`${job}@`) || (named !== undefined && named !== job)) {
    return answer(res, 400, { status: "error", error: "bad cronfence-job" });
  }
  const scope = req.headers["cronfence-fence-scope"] ?? "job";
  if (scope !== "job" && scope !== "slot") {
    return answer(res, 400, { status: "error", error: "bad cronfence-fence-scope" });
  }
  const [status, doc] = deliver(job, BigInt(tokenText), key, req.headers["cronfence-run"], scope);
  answer(res, status, doc);
}

if (!secret) {
  console.error("target.mjs: set CRONFENCE_SECRET"); // an empty key would let anyone sign
  process.exit(2);
}
const server = createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY_BYTES) {
      return answer(res, 413, { status: "error", error: "body too large" });
    }
    try {
      handle(req, Buffer.concat(chunks), res);
    } catch (error) {
      console.error(`delivery failed: ${error.message}`);
      answer(res, 500, { status: "error", error: "internal error" });
    }
  });
});
server.listen(port, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
