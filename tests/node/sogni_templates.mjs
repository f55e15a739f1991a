// Sogni's TypeScript SDK (@sogni-ai/sogni-client, pinned) against a running supernet:
// workflow templates end to end. Driven by tests/api/test_templates.py, which checks the
// JSON report printed last. Usage: node sogni_templates.mjs BASE_URL API_KEY TEMPLATE_JSON PHOTO_URL
import { SogniClient } from '@sogni-ai/sogni-client';

const [base, apiKey, templateJson, photo] = process.argv.slice(2);

const sogni = await SogniClient.createInstance({
  apiKey, restEndpoint: base, socketEndpoint: 'ws://127.0.0.1:9', disableSocket: true, logLevel: 'error',
});
const templates = sogni.workflows.templates;
const report = {};

const created = await templates.create(JSON.parse(templateJson));
report.created = created.version;

// Invoke it: start a workflow from the template with typed inputs, follow it to the end.
const wf = await sogni.workflows.start({ workflowId: created.id, inputs: { photo, style: 'ink' } });
for await (const frame of sogni.workflows.streamEvents(wf.workflowId, { lastEventId: 0 })) {
  if (frame.data && frame.data.type === 'workflow_failed') throw new Error(JSON.stringify(frame.data));
}
report.invoked = (await sogni.workflows.get(wf.workflowId)).status;

report.patched = (await templates.update(created.id, { description: 'patched from TypeScript' })).version;
const fork = await templates.fork(created.id, { newName: 'TS fork' });
report.forked = fork.id !== created.id && fork.name === 'TS fork';
report.listed = (await templates.list({ visibility: 'own', limit: 200 })).templates.some((t) => t.id === fork.id);
await templates.delete(created.id);
try {
  await templates.get(created.id);
  report.deleted = false;
} catch (e) {
  report.deleted = e.status === 404;
}

sogni.dispose();
console.log(JSON.stringify(report));
