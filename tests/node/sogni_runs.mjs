// Sogni's TypeScript SDK (@sogni-ai/sogni-client, pinned) against a running supernet:
// durable chat runs end to end. Driven by tests/api/test_runs.py, which checks the JSON
// report printed last. Usage: node sogni_runs.mjs BASE_URL API_KEY MODEL STANDIN_URL
import { SogniClient } from '@sogni-ai/sogni-client';

const [base, apiKey, model, standin] = process.argv.slice(2);
const TERMINAL = new Set(['run_completed', 'run_partial_failure', 'run_failed', 'run_cancelled']);
const DRAW = [{ role: 'user', content: 'Draw a red fox in the snow.' }];
const FORCE_IMAGE = { type: 'function', function: { name: 'sogni_generate_image' } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const sogni = await SogniClient.createInstance({
  apiKey, restEndpoint: base, socketEndpoint: 'ws://127.0.0.1:9', disableSocket: true, logLevel: 'error',
});
const runs = sogni.chat.runs;

async function follow(runId, until = TERMINAL, lastEventId = undefined) {
  const seen = [];
  for await (const e of runs.streamEvents(runId, lastEventId === undefined ? {} : { lastEventId })) {
    seen.push(e);
    if (until.has(e.type)) break;
  }
  return seen;
}

function assertGapless(events) {
  events.forEach((e, i) => {
    if (e.sequence !== events[0].sequence + i) throw new Error(`gap at ${i}: ${JSON.stringify(events.map((x) => x.sequence))}`);
  });
}

const report = {};

// create → streamEvents → get, and an idempotent re-create.
const run = await runs.create({ model, idempotencyKey: 'ts-a1', messages: [{ role: 'user', content: 'hi' }],
  sampling: { max_tokens: 16, temperature: 0 } });
const events = await follow(run.runId, TERMINAL, 0);
assertGapless(events);
report.completed = (await runs.get(run.runId)).status;
const again = await runs.create({ model, idempotencyKey: 'ts-a1', messages: [{ role: 'user', content: 'hi' }] });
report.idempotent = again.runId === run.runId;

// Cancel mid-run, while the media job runs on the (slowed) backend.
await fetch(`${standin}/standin/config`, { method: 'POST', body: JSON.stringify({ delay: 20 }), headers: { 'Content-Type': 'application/json' } });
try {
  const slow = await runs.create({ model, messages: DRAW, toolChoice: FORCE_IMAGE, sampling: { max_tokens: 60, temperature: 0 } });
  await follow(slow.runId, new Set(['tool_call_dispatched']));
  await sleep(500);
  const t0 = Date.now();
  await runs.cancel(slow.runId, 'stop');
  report.cancelled = (await runs.get(slow.runId)).status;
  report.cancelMs = Date.now() - t0;
} finally {
  await fetch(`${standin}/standin/config`, { method: 'POST', body: JSON.stringify({ delay: 0.2 }), headers: { 'Content-Type': 'application/json' } });
}

// A cost pause confirmed with its preview, then one cancelled.
const paidRun = () => runs.create({ model, messages: DRAW, toolChoice: FORCE_IMAGE, sampling: { max_tokens: 60, temperature: 0 },
  runtimeConfig: { requireJobConfirmation: true, jobConfirmationThresholdUsd: 0.001 } });
const paid = await paidRun();
await follow(paid.runId, new Set(['run_waiting_for_user']));
const paused = await runs.get(paid.runId);
const d = paused.waiting.details;
let after = paused.events[paused.events.length - 1].sequence;
await runs.confirmCost(paid.runId, { toolCallId: d.toolCallId, decision: 'confirm', acceptedCostPreview: d.costApprovalPreview, idempotencyKey: `confirm-${d.toolCallId}` });
// A later round may call a paid tool again: each pause is approved with its own preview.
for (;;) {
  const seen = await follow(paid.runId, new Set([...TERMINAL, 'run_waiting_for_user']), after);
  after = seen[seen.length - 1].sequence;
  if (TERMINAL.has(seen[seen.length - 1].type)) break;
  const w = (await runs.get(paid.runId)).waiting.details;
  await runs.confirmCost(paid.runId, { toolCallId: w.toolCallId, decision: 'confirm', acceptedCostPreview: w.costApprovalPreview });
}
const confirmed = await runs.get(paid.runId);
report.confirmed = confirmed.status;
report.artifactStatus = (await fetch(confirmed.artifacts[0].url)).status;

const declined = await paidRun();
await follow(declined.runId, new Set(['run_waiting_for_user']));
const p2 = await runs.get(declined.runId);
report.declined = (await runs.confirmCost(declined.runId, { toolCallId: p2.waiting.details.toolCallId, decision: 'cancel' })).status;

sogni.dispose?.();
console.log(JSON.stringify(report));
process.exit(0);
