// node-redlock (acquire + release) on the lock nodes cf_claimer uses, for
// tests/bench/peers_bench.py.
//
//   node redlock_bench.mjs --redis URL,URL,URL --concurrency C (--ops N | --seconds S)
//
// C async loops in this one process (cf_claimer's C threads share one
// coordinator likewise); each operation acquires a lock on a resource of its
// own (bench:<index>, as cf_claimer claims a slot of its own: no operation
// waits for another's lock), then releases it. Prints one JSON object:
// ops, ok, failed, span_s, ops_per_s (acquire+release pairs completed per
// second), and acquire_p50_ms / acquire_p99_ms (the acquisition alone, the
// counterpart of cf_claimer's claim()) and op_p50_ms / op_p99_ms (both).
import Redis from 'ioredis';
import Redlock from 'redlock';

function options(argv) {
  const out = { redis: '', concurrency: 1, ops: 0, seconds: 0 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out) || argv[i + 1] === undefined) {
      console.error(`usage: redlock_bench.mjs --redis URLS --concurrency C (--ops N | --seconds S)`);
      process.exit(2);
    }
    out[key] = key === 'redis' ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!out.redis || out.concurrency < 1 || (out.ops < 1 && out.seconds <= 0)) {
    console.error('redlock_bench.mjs: --redis, --concurrency >= 1 and --ops or --seconds are needed');
    process.exit(2);
  }
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const index = Math.ceil((p / 100) * sorted.length) - 1; // nearest rank
  return Number(sorted[Math.min(sorted.length - 1, Math.max(0, index))].toFixed(3));
}

const opts = options(process.argv);
const clients = opts.redis.split(',').map((url) => new Redis(url, { maxRetriesPerRequest: 1 }));
// No retries: every resource is free, a failed acquisition is a failure to report.
const redlock = new Redlock(clients, { retryCount: 0, automaticExtensionThreshold: 500 });
redlock.on('error', () => {}); // counted below, not printed per operation

const acquireMs = [];
const opMs = [];
let failed = 0;
let next = 0;
const started = process.hrtime.bigint();
const deadline = opts.seconds > 0 ? started + BigInt(Math.round(opts.seconds * 1e9)) : null;

function more() {
  if (opts.ops > 0 && next >= opts.ops) return false;
  return deadline === null || process.hrtime.bigint() < deadline;
}

async function loop() {
  while (more()) {
    const index = next++;
    const t0 = process.hrtime.bigint();
    try {
      const lock = await redlock.acquire([`bench:${index}`], 10000);
      const t1 = process.hrtime.bigint();
      await lock.release();
      const t2 = process.hrtime.bigint();
      acquireMs.push(Number(t1 - t0) / 1e6);
      opMs.push(Number(t2 - t0) / 1e6);
    } catch {
      failed++;
    }
  }
}

await Promise.all(Array.from({ length: opts.concurrency }, loop));
const spanS = Number(process.hrtime.bigint() - started) / 1e9;
acquireMs.sort((a, b) => a - b);
opMs.sort((a, b) => a - b);
console.log(JSON.stringify({
  ops: acquireMs.length + failed,
  ok: acquireMs.length,
  failed,
  concurrency: opts.concurrency,
  span_s: Number(spanS.toFixed(2)),
  ops_per_s: spanS > 0 ? Number((acquireMs.length / spanS).toFixed(1)) : null,
  acquire_p50_ms: percentile(acquireMs, 50),
  acquire_p99_ms: percentile(acquireMs, 99),
  op_p50_ms: percentile(opMs, 50),
  op_p99_ms: percentile(opMs, 99),
}));
await Promise.all(clients.map((client) => client.quit()));
