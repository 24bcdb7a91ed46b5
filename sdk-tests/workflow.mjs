// The Task Group workflow of Parallel's documentation, run with Parallel's
// official TypeScript SDK (npm parallel-web) against a taskpipe server.
//
//   PARALLEL_BASE_URL=http://127.0.0.1:8080 PARALLEL_API_KEY=... node workflow.mjs
//
// The server must serve the "synthetic" processor (taskpipe's default).
// Every check asserts values, not only that a call answered; the script
// prints one line per check, then "sdk workflow: N passed, M failed", and
// exits non-zero when any check failed.

import { isDeepStrictEqual } from 'node:util';

import Parallel, { AuthenticationError, NotFoundError, PermissionDeniedError } from 'parallel-web';

const client = new Parallel(); // PARALLEL_BASE_URL and PARALLEL_API_KEY, as users set them

const outputSchema = {
  type: 'object',
  properties: {
    ceo: { type: 'string', description: 'Name of the chief executive' },
    employees: { type: 'integer' },
    public: { type: 'boolean' },
    sector: { type: 'string', enum: ['technology', 'industrials', 'health care'] },
  },
  required: ['ceo', 'employees', 'public', 'sector'],
  additionalProperties: false,
};
const taskSpec = { output_schema: { type: 'json', json_schema: outputSchema } };
const companies = ['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Stark', 'Wayne', 'Wonka',
  'Tyrell', 'Cyberdyne', 'Soylent', 'Vandelay'];

let passed = 0;
let failed = 0;

// check runs one named step; a thrown error or failed assertion fails it.
// It returns whether the step passed, so that later steps that need its
// result can stop the workflow.
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
    return true;
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
    return false;
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function assertEqual(got, want, what) {
  if (!isDeepStrictEqual(got, want)) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

// assertTypedOutput checks a json output against outputSchema and the
// synthetic processor's basis: one entry per field, confidence "low", no
// citations.
function assertTypedOutput(output, what) {
  assertEqual(output.type, 'json', `${what} output.type`);
  const c = output.content;
  assert(c && typeof c === 'object', `${what} content is not an object: ${JSON.stringify(c)}`);
  assertEqual(Object.keys(c).sort(), Object.keys(outputSchema.properties).sort(), `${what} content keys`);
  assert(typeof c.ceo === 'string' && c.ceo.length > 0, `${what} ceo ${JSON.stringify(c.ceo)}`);
  assert(Number.isInteger(c.employees), `${what} employees ${c.employees}`);
  assert(typeof c.public === 'boolean', `${what} public ${c.public}`);
  assert(outputSchema.properties.sector.enum.includes(c.sector), `${what} sector ${c.sector}`);
  assert(Array.isArray(output.basis) && output.basis.length >= 4, `${what} basis ${JSON.stringify(output.basis)}`);
  const fields = new Set(output.basis.map((b) => b.field));
  for (const f of Object.keys(outputSchema.properties)) assert(fields.has(f), `${what} basis lacks ${f}`);
  for (const b of output.basis) {
    assertEqual(b.confidence, 'low', `${what} basis[${b.field}].confidence`);
    assertEqual(b.citations, [], `${what} basis[${b.field}].citations`);
    assert(/synthetic/i.test(b.reasoning), `${what} basis reasoning ${JSON.stringify(b.reasoning)}`);
  }
}

// collect reads a stream to its end.
async function collect(stream) {
  const events = [];
  for await (const ev of stream) events.push(ev);
  return events;
}

async function main() {
  let group;
  let runIDs = [];
  let runs = [];

  const created = await check('taskGroup.create', async () => {
    group = await client.taskGroup.create({ metadata: { job: 'sdk-workflow' } });
    assert(/^tgrp_[0-9a-f]{32}$/.test(group.taskgroup_id), `taskgroup_id ${group.taskgroup_id}`);
    assertEqual(group.metadata, { job: 'sdk-workflow' }, 'metadata');
    assertEqual(group.status.num_task_runs, 0, 'num_task_runs');
    assertEqual(group.status.is_active, false, 'is_active');
  });
  if (!created) return;

  const added = await check('taskGroup.addRuns with a default_task_spec, in two calls', async () => {
    const inputs = companies.map((company, row) => ({
      input: { company }, processor: 'synthetic', metadata: { row },
    }));
    const first = await client.taskGroup.addRuns(group.taskgroup_id, {
      inputs: inputs.slice(0, 8), default_task_spec: taskSpec,
    });
    const second = await client.taskGroup.addRuns(group.taskgroup_id, {
      inputs: inputs.slice(8), default_task_spec: taskSpec, refresh_status: true,
    });
    assertEqual(first.run_ids.length, 8, 'first call run_ids');
    assertEqual(second.run_ids.length, 4, 'second call run_ids');
    assertEqual(first.run_cursor, null, 'first run_cursor');
    assertEqual(second.run_cursor, '8', 'second run_cursor (the last run before the batch)');
    assert(typeof second.event_cursor === 'string', `second event_cursor ${second.event_cursor}`);
    assertEqual(second.status.num_task_runs, 12, 'num_task_runs after the second call');
    runIDs = [...first.run_ids, ...second.run_ids];
    assertEqual(new Set(runIDs).size, 12, 'distinct run ids');
    for (const id of runIDs) assert(/^trun_[0-9a-f]{32}$/.test(id), `run id ${id}`);
  });

  if (!added) return;

  await check('taskGroup.retrieve until inactive', async () => {
    const deadline = Date.now() + 60_000;
    let g;
    do {
      g = await client.taskGroup.retrieve(group.taskgroup_id);
      if (!g.status.is_active) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assertEqual(g.status.is_active, false, 'is_active');
    assertEqual(g.status.num_task_runs, 12, 'num_task_runs');
    assertEqual(g.status.task_run_status_counts, { completed: 12 }, 'task_run_status_counts');
    assertEqual(g.status.status_message, 'all 12 runs finished', 'status_message');
  });

  await check('taskGroup.getRuns with include_input and include_output', async () => {
    const stream = await client.taskGroup.getRuns(group.taskgroup_id, {
      include_input: true, include_output: true,
    });
    runs = await collect(stream);
    assertEqual(runs.length, 12, 'events');
    runs.forEach((ev, i) => {
      assertEqual(ev.type, 'task_run.state', `event ${i} type`);
      assertEqual(ev.event_id, String(i + 1), `event ${i} event_id`);
      assertEqual(ev.run.run_id, runIDs[i], `event ${i} run_id (insertion order)`);
      assertEqual(ev.run.status, 'completed', `event ${i} status`);
      assertEqual(ev.run.taskgroup_id, group.taskgroup_id, `event ${i} taskgroup_id`);
      assertEqual(ev.run.metadata, { row: i }, `event ${i} run.metadata`);
      assertEqual(ev.input.input, { company: companies[i] }, `event ${i} input`);
      assertEqual(ev.input.metadata, { row: i }, `event ${i} input.metadata`);
      assertEqual(ev.input.processor, 'synthetic', `event ${i} input.processor`);
      assertTypedOutput(ev.output, `event ${i}`);
    });
  });

  await check('taskGroup.getRuns resumed with last_event_id and a status filter', async () => {
    const stream = await client.taskGroup.getRuns(group.taskgroup_id, {
      last_event_id: '6', status: 'completed',
    });
    const rest = await collect(stream);
    assertEqual(rest.map((ev) => ev.run.run_id), runIDs.slice(6), 'runs after cursor 6');
    assert(rest.every((ev) => ev.input == null && ev.output == null), 'input/output without include_*');
    const none = await collect(await client.taskGroup.getRuns(group.taskgroup_id, { status: 'failed' }));
    assertEqual(none.length, 0, 'failed runs');
  });

  await check('taskGroup.events', async () => {
    const events = await collect(await client.taskGroup.events(group.taskgroup_id));
    const ids = events.map((ev) => Number(ev.event_id));
    ids.forEach((id, i) => assertEqual(id, i + 1, `event ${i} event_id`));
    const done = events.filter((ev) => ev.type === 'task_run.state');
    assertEqual(done.map((ev) => ev.run.run_id).sort(), [...runIDs].sort(), 'one completion per run');
    assert(done.every((ev) => ev.run.status === 'completed'), 'completion statuses');
    const last = events[events.length - 1];
    assertEqual(last.type, 'task_group_status', 'last event type');
    assertEqual(last.status.is_active, false, 'last status is_active');
    assertEqual(last.status.task_run_status_counts, { completed: 12 }, 'last status counts');
    const resumed = await collect(await client.taskGroup.events(group.taskgroup_id, {
      last_event_id: String(ids.length - 1),
    }));
    assertEqual(resumed.map((ev) => ev.event_id), [String(ids.length)], 'events after the next-to-last');
  });

  await check('taskGroup.retrieveRun', async () => {
    const run = await client.taskGroup.retrieveRun(runIDs[3], { taskgroup_id: group.taskgroup_id });
    assertEqual(run.run_id, runIDs[3], 'run_id');
    assertEqual(run.interaction_id, runIDs[3], 'interaction_id');
    assertEqual(run.metadata, { row: 3 }, 'metadata');
    assertEqual(run.status, 'completed', 'status');
    assertEqual(run.is_active, false, 'is_active');
  });

  let single;
  const singleCreated = await check('taskRun.create', async () => {
    single = await client.taskRun.create({
      input: { company: 'Solo Corp' }, processor: 'synthetic',
      metadata: { source: 'sdk', attempt: 1 }, task_spec: taskSpec,
    });
    assert(/^trun_[0-9a-f]{32}$/.test(single.run_id), `run_id ${single.run_id}`);
    assert(['queued', 'running'].includes(single.status), `status ${single.status}`);
    assertEqual(single.is_active, true, 'is_active');
    assertEqual(single.taskgroup_id, null, 'taskgroup_id');
    assertEqual(single.metadata, { source: 'sdk', attempt: 1 }, 'metadata');
  });
  if (!singleCreated) return;

  await check('taskRun.result', async () => {
    const res = await client.taskRun.result(single.run_id, { timeout: 60 });
    assertEqual(res.run.run_id, single.run_id, 'run_id');
    assertEqual(res.run.status, 'completed', 'status');
    assertTypedOutput(res.output, 'result');
    const again = await client.taskRun.result(single.run_id);
    assertEqual(again.output.content, res.output.content, 'output of a second result call');
  });

  await check('taskRun.retrieve', async () => {
    const run = await client.taskRun.retrieve(single.run_id);
    assertEqual(run.status, 'completed', 'status');
    assertEqual(run.is_active, false, 'is_active');
    assertEqual(run.processor, 'synthetic', 'processor');
    assertEqual(run.metadata, { source: 'sdk', attempt: 1 }, 'metadata');
    assertEqual(run.error, null, 'error');
    assert(run.modified_at >= run.created_at, `modified_at ${run.modified_at} < created_at ${run.created_at}`);
  });

  await check('taskRun.retrieveInput', async () => {
    const input = await client.taskRun.retrieveInput(single.run_id);
    assertEqual(input.input, { company: 'Solo Corp' }, 'input');
    assertEqual(input.processor, 'synthetic', 'processor');
    assertEqual(input.metadata, { source: 'sdk', attempt: 1 }, 'metadata');
    assertEqual(input.task_spec.output_schema.type, 'json', 'task_spec.output_schema.type');
    assertEqual(input.task_spec.output_schema.json_schema.required, outputSchema.required,
      'task_spec json_schema.required');
  });

  await check('taskRun.events', async () => {
    const events = await collect(await client.taskRun.events(single.run_id));
    assert(events.length >= 1, 'no events');
    const last = events[events.length - 1];
    assertEqual(last.type, 'task_run.state', 'last event type');
    assertEqual(last.run.run_id, single.run_id, 'run_id');
    assertEqual(last.run.status, 'completed', 'final status');
    assertTypedOutput(last.output, 'final event');
    assert(events.every((ev) => ev.event_id == null), 'run events carry no cursor');
  });

  await check('text output', async () => {
    const run = await client.taskRun.create({
      input: 'Summarise the history of Acme.', processor: 'synthetic',
      task_spec: { output_schema: 'A short paragraph' },
    });
    const res = await client.taskRun.result(run.run_id, { timeout: 60 });
    assertEqual(res.output.type, 'text', 'output.type');
    assert(typeof res.output.content === 'string' && /synthetic/i.test(res.output.content),
      `content ${JSON.stringify(res.output.content)}`);
  });

  await check('errors map to the SDK error classes', async () => {
    const expectError = async (cls, status, call) => {
      try {
        await call();
      } catch (err) {
        assert(err instanceof cls, `got ${err && err.constructor.name}: ${err}`);
        assertEqual(err.status, status, 'status');
        assertEqual(err.error?.type, 'error', 'error body type');
        return;
      }
      throw new Error(`no ${cls.name}`);
    };
    await expectError(NotFoundError, 404, () => client.taskRun.retrieve('trun_00000000000000000000000000000000'));
    await expectError(PermissionDeniedError, 403, () =>
      client.taskRun.create({ input: 'x', processor: 'no-such-processor' }));
    const stranger = new Parallel({ apiKey: 'not-a-configured-key', maxRetries: 0 });
    await expectError(AuthenticationError, 401, () => stranger.taskGroup.retrieve(group.taskgroup_id));
  });
}

try {
  await main();
} catch (err) {
  failed++;
  console.log(`FAIL workflow: ${err && err.stack ? err.stack : err}`);
}
console.log(`sdk workflow: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
