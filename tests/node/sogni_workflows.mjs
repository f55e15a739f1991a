// Sogni's TypeScript SDK (@sogni-ai/sogni-client, pinned) against a running supernet:
// creative workflows end to end. Driven by tests/api/test_workflows.py, which checks the
// JSON report printed last. Usage: node sogni_workflows.mjs BASE_URL API_KEY
import { SogniClient } from '@sogni-ai/sogni-client';

const [base, apiKey] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const plan = (tag) => ({ steps: [{ id: 'only', toolName: 'generate_image', arguments: { prompt: `a kite ${tag}` } }] });

const sogni = await SogniClient.createInstance({
  apiKey, restEndpoint: base, socketEndpoint: 'ws://127.0.0.1:9', disableSocket: true, logLevel: 'error',
});
const wf = sogni.workflows;

async function follow(id, lastEventId = 0) {
  const frames = [];
  for await (const f of wf.streamEvents(id, { lastEventId })) frames.push(f);
  return frames;
}

const report = {};

// start → streamEvents → get, and the same Idempotency-Key again.
const started = await wf.start({ input: plan('ts'), idempotencyKey: 'ts-w1' });
const frames = await follow(started.workflowId);
if (frames.at(-1).data.status !== 'completed') throw new Error(JSON.stringify(frames.at(-1)));
const done = await wf.get(started.workflowId);
report.completed = done.status;
report.artifacts = done.artifacts.length;
report.idempotent = (await wf.start({ input: plan('ts'), idempotencyKey: 'ts-w1' })).workflowId === started.workflowId;

// cancel while the step runs (a long duration keeps the stand-in busy), then resume.
const slow = await wf.start({ input: { steps: [{ id: 'v', toolName: 'generate_video', arguments: { prompt: 'a slow river ts', duration: 2 } }] } });
for (let i = 0; i < 100; i += 1) {
  const w = await wf.get(slow.workflowId);
  if (w.steps[0].status === 'running') break;
  await sleep(50);
}
report.cancelled = (await wf.cancel(slow.workflowId)).status;
const resumed = await wf.resume(slow.workflowId);
report.resumed = resumed.resumed;
await follow(slow.workflowId, resumed.workflow.events.length - 1);
report.afterResume = (await wf.get(slow.workflowId)).status;

// reseed, and the same reseed again under its key.
const r1 = await wf.reseed(started.workflowId, { seedOverrides: { only: 11 }, idempotencyKey: 'ts-r1' });
const r2 = await wf.reseed(started.workflowId, { seedOverrides: { only: 11 }, idempotencyKey: 'ts-r1' });
report.reseedIdempotent = r2.idempotent === true && r2.workflow.workflowId === r1.workflow.workflowId;
report.reseedFrom = r1.reseed.clonedFromRunId === started.workflowId;
report.listed = (await wf.list({ limit: 50 })).some((w) => w.workflowId === started.workflowId);

sogni.dispose();
console.log(JSON.stringify(report));
