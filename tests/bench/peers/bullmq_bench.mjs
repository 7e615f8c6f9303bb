// BullMQ's every-second jobs, for tests/bench/peers_bench.py, which starts
// one Redis, runs `schedule` once, then starts `worker` in separate processes
// (so that the CPU and memory of each can be read) and reads their logs.
//
//   node bullmq_bench.mjs schedule --redis URL --jobs N
//       Creates (or updates) N job schedulers bench-00000.. with the cron
//       pattern "* * * * * *" on queue "bench"; each job removed once done.
//       Prints {"created": N, "seconds": S}.
//
//   node bullmq_bench.mjs worker --redis URL --log FILE [--concurrency C] [--id ID]
//       Processes the queue's jobs with an empty processor, C at a time,
//       appending one JSON line a job to FILE, in cronfence-receiver's --log
//       format: {"job", "scheduled_at", "received_at", "attempt", "instance"}.
//       scheduled_at is the job's slot: a scheduler's job is created with the id
//       repeat:<scheduler id>:<slot ms> (JobScheduler.getSchedulerNextJobId in
//       bullmq's classes/job-scheduler.js; job.opts.prevMillis holds the same
//       instant); received_at is when the processor started. Prints
//       "ready <ID>" once the worker runs; on SIGTERM closes the worker (waiting
//       for the jobs under way), prints {"processed": n} and exits 0.
import fs from 'node:fs';
import { Queue, Worker } from 'bullmq';

const QUEUE = 'bench';

function options(argv) {
  const out = { mode: argv[2], redis: '', jobs: 0, log: '', concurrency: 50, id: `worker-${process.pid}` };
  for (let i = 3; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out) || key === 'mode' || argv[i + 1] === undefined) usage();
    out[key] = ['jobs', 'concurrency'].includes(key) ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!out.redis || (out.mode === 'schedule' && out.jobs < 1) ||
      (out.mode === 'worker' && (!out.log || out.concurrency < 1)) ||
      !['schedule', 'worker'].includes(out.mode))
    usage();
  return out;
}

function usage() {
  console.error('usage: bullmq_bench.mjs schedule --redis URL --jobs N\n' +
                '       bullmq_bench.mjs worker --redis URL --log FILE [--concurrency C] [--id ID]');
  process.exit(2);
}

function connection(url) {
  const parsed = new URL(url);
  // null: BullMQ's workers block on Redis and must not give up on a command.
  return { host: parsed.hostname, port: Number(parsed.port || 6379), maxRetriesPerRequest: null };
}

async function schedule(opts) {
  const queue = new Queue(QUEUE, { connection: connection(opts.redis) });
  const started = process.hrtime.bigint();
  const names = Array.from({ length: opts.jobs }, (_, i) => `bench-${String(i).padStart(5, '0')}`);
  let index = 0;
  // 16 at a time, like the cronfence benchmarks' job creation.
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (index < names.length) {
      const name = names[index++];
      await queue.upsertJobScheduler(name, { pattern: '* * * * * *' },
                                     { name, opts: { removeOnComplete: true, removeOnFail: true } });
    }
  }));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await queue.close();
  console.log(JSON.stringify({ created: names.length, seconds: Number(seconds.toFixed(2)) }));
}

async function work(opts) {
  const log = fs.createWriteStream(opts.log, { flags: 'a' });
  let processed = 0;
  const worker = new Worker(QUEUE, async (job) => {
    const received = new Date();
    const slot = Number(job.id.slice(job.id.lastIndexOf(':') + 1));
    processed++;
    // One write() a line on a file opened O_APPEND: the workers' lines do not interleave.
    log.write(JSON.stringify({
      job: job.repeatJobKey ?? job.name,
      scheduled_at: new Date(slot).toISOString(),
      received_at: received.toISOString(),
      attempt: job.attemptsMade + 1,
      instance: opts.id,
    }) + '\n');
  }, { connection: connection(opts.redis), concurrency: opts.concurrency });
  worker.on('error', (error) => console.error(`${opts.id}: ${error.message}`));
  await worker.waitUntilReady();
  console.log(`ready ${opts.id}`);
  process.once('SIGTERM', async () => {
    await worker.close();
    log.end(() => {
      console.log(JSON.stringify({ processed }));
      process.exit(0);
    });
  });
}

const opts = options(process.argv);
await (opts.mode === 'schedule' ? schedule(opts) : work(opts));
