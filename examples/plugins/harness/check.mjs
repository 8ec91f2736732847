// Runs a notifier component (world `notifier` of tapedeck:plugin@0.1.0) without the Rust
// host and checks the messages it queues. Usage (see check.sh):
//
//   node check.mjs <component.wasm> [reference.wasm]
//
// The component is transpiled to JS (jco-transpile) and instantiated afresh for every
// case, as the host does, with:
// - `mail`, `webhook`, `logging` implemented here like host/runtime/src/notifier.rs: they
//   only record, applying the host's policy (owner-only mail, the tenant's URL only, JSON
//   bodies, at most 4 messages, 256 KiB bodies);
// - WASI from @bytecodealliance/preview2-shim, sandboxed like host/runtime/src/sandbox.rs:
//   no preopens, no environment, no arguments, no network, clocks frozen at 2000-01-01.
//
// Each case asserts what any notifier must do (one-line subjects, escaped HTML, valid
// JSON, the settings honoured, errors for incomplete events). With a reference component
// (the Rust notifier, target/components/wasm32-wasip2/release/tapedeck_notifier.wasm)
// every case must also queue exactly the same messages, byte for byte.
//
// Prints the component's imports, the memory its core modules declare, the memory it
// grew to and the time of instantiation and of one `notify` call, then
// "N passed, N failed". Exits 1 when a check failed, 2 on a harness error.

import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { transpileBytes, writeFiles } from '@bytecodealliance/jco-transpile';
import { componentWit } from '@bytecodealliance/jco-transpile/wasm-tools';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';

const MAX_MESSAGES_PER_RUN = 4;
const MAX_BODY_BYTES = 256 * 1024;
const MAX_SUBJECT_CHARS = 200;
const FROZEN_WALL_SECONDS = 946684800n;

// ---- loading -------------------------------------------------------------------------

/** A transpiled component: `run(event, settings, policy)` instantiates it and calls notify. */
async function load(path) {
  const bytes = await readFile(path);
  const wit = await componentWit(bytes);
  const dir = await mkdtemp(join(tmpdir(), 'tapedeck-harness-'));
  const started = performance.now();
  const { files } = await transpileBytes(bytes, {
    name: 'component',
    instantiation: { tag: 'async' },
    noTypescript: true,
    outDir: dir,
  });
  await writeFiles(files);
  const transpileMs = performance.now() - started;
  const { instantiate } = await import(pathToFileURL(join(dir, 'component.js')).href);

  const coreFiles = (await readdir(dir)).filter((f) => f.endsWith('.wasm')).sort();
  const staticMemory = { pages: 0, maxPages: null, dataBytes: 0, coreBytes: 0, memories: 0, modules: 0, tables: 0, tableElements: 0, largestTable: 0 };
  const modules = new Map();
  for (const f of coreFiles) {
    const core = await readFile(join(dir, f));
    staticMemory.coreBytes += core.length;
    const m = scanCoreModule(core);
    staticMemory.modules++;
    staticMemory.memories += m.memories.length;
    staticMemory.tables += m.tables.length;
    for (const t of m.tables) {
      staticMemory.tableElements += t;
      staticMemory.largestTable = Math.max(staticMemory.largestTable, t);
    }
    for (const mem of m.memories) {
      staticMemory.pages += mem.initial;
      if (mem.maximum !== null) staticMemory.maxPages = (staticMemory.maxPages ?? 0) + mem.maximum;
    }
    staticMemory.dataBytes += m.dataBytes;
  }
  const compileStarted = performance.now();
  for (const f of coreFiles) modules.set(f, await WebAssembly.compile(await readFile(join(dir, f))));
  const compileMs = performance.now() - compileStarted;
  await rm(dir, { recursive: true, force: true });

  async function run(event, settings, policy) {
    const host = new Host(event, settings, policy);
    const instances = [];
    const instantiateCore = async (module, imports) => {
      const instance = await WebAssembly.instantiate(module, imports);
      instances.push(instance);
      return instance;
    };
    const t0 = performance.now();
    const exports = await instantiate(
      (name) => modules.get(name),
      { ...sandboxedWasi(), ...host.imports() },
      instantiateCore,
    );
    const t1 = performance.now();
    const notification = exports.notification ?? exports['tapedeck:plugin/notification@0.1.0'];
    let outcome;
    try {
      notification.notify(event, settings);
      outcome = { ok: true };
    } catch (e) {
      // An export's err arrives as the thrown variant (`{ tag, val }`), bare or in a
      // ComponentError's `payload`; anything else is a trap.
      if (e instanceof Error && !('payload' in e)) {
        outcome = { trap: String(e.stack) };
      } else {
        outcome = { err: e instanceof Error ? e.payload : e };
      }
    }
    const t2 = performance.now();
    let memoryBytes = 0;
    for (const instance of instances) {
      for (const value of Object.values(instance.exports)) {
        if (value instanceof WebAssembly.Memory) memoryBytes += value.buffer.byteLength;
      }
    }
    return {
      outcome,
      mails: host.mails,
      webhooks: host.webhooks,
      logs: host.logs,
      instantiateMs: t1 - t0,
      callMs: t2 - t1,
      memoryBytes,
      coreInstances: instances.length,
    };
  }

  return { path, size: bytes.length, wit, transpileMs, compileMs, staticMemory, run };
}

/** Memories a core module defines (not imports) and the bytes of its data segments. */
function scanCoreModule(bytes) {
  let pos = 8;
  const u32 = () => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[pos++];
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(b & 0x80)) return result;
    }
  };
  const memories = [];
  const tables = [];
  let dataBytes = 0;
  while (pos < bytes.length) {
    const id = bytes[pos++];
    const size = u32();
    const end = pos + size;
    if (id === 4) {
      for (let n = u32(); n > 0; n--) {
        pos++; // element type
        const flags = u32();
        const initial = u32();
        if (flags & 1) u32();
        tables.push(initial);
      }
    } else if (id === 5) {
      for (let n = u32(); n > 0; n--) {
        const flags = u32();
        const initial = u32();
        const maximum = flags & 1 ? u32() : null;
        memories.push({ initial, maximum });
      }
    } else if (id === 11) {
      for (let n = u32(); n > 0; n--) {
        const kind = u32();
        if (kind === 2) u32(); // memory index
        if (kind !== 1) {
          // A constant expression, up to `end` (0x0b).
          while (bytes[pos++] !== 0x0b);
        }
        const len = u32();
        dataBytes += len;
        pos += len;
      }
    }
    pos = end;
  }
  return { memories, tables, dataBytes };
}

/** WASI as the host gives it: nothing behind it, clocks frozen. */
function sandboxedWasi() {
  const shim = new WASIShim({
    sandbox: { preopens: {}, env: {}, args: [], enableNetwork: false },
  });
  const wasi = shim.getImportObject();
  const monotonic = wasi['wasi:clocks/monotonic-clock'];
  return {
    ...wasi,
    'wasi:clocks/wall-clock': {
      now: () => ({ seconds: FROZEN_WALL_SECONDS, nanoseconds: 0 }),
      resolution: () => ({ seconds: 1n, nanoseconds: 0 }),
    },
    'wasi:clocks/monotonic-clock': {
      ...monotonic,
      now: () => 0n,
      resolution: () => 1_000_000_000n,
    },
  };
}

/** The host's side of `mail`, `webhook` and `logging`: records what the guest queues. */
class Host {
  constructor(event, settings, policy) {
    this.policy = policy ?? {
      mailTo: settings.emailEnabled ? event.ownerEmail.trim() : undefined,
      webhookUrl: settings.webhookEnabled ? settings.webhookUrl : undefined,
    };
    this.mails = [];
    this.webhooks = [];
    this.logs = [];
  }

  get queued() {
    return this.mails.length + this.webhooks.length;
  }

  imports() {
    return {
      'tapedeck:plugin/mail': { send: (m) => this.send(m) },
      'tapedeck:plugin/webhook': { post: (r) => this.post(r) },
      'tapedeck:plugin/logging': {
        log: (level, message) => {
          this.logs.push({ level, message });
        },
      },
    };
  }

  send(message) {
    const owner = this.policy.mailTo;
    if (owner === undefined) {
      throw { tag: 'not-allowed', val: 'e-mail is turned off for this tenant' };
    }
    if (this.queued >= MAX_MESSAGES_PER_RUN) {
      throw { tag: 'not-allowed', val: `at most ${MAX_MESSAGES_PER_RUN} messages per notification` };
    }
    if (message.to.trim().toLowerCase() !== owner.toLowerCase()) {
      throw { tag: 'invalid', val: "mail may only go to the job's owner" };
    }
    const size = utf8Length(message.textBody) + utf8Length(message.htmlBody ?? '');
    if (size > MAX_BODY_BYTES) {
      throw { tag: 'invalid', val: `body of ${size} bytes; the limit is ${MAX_BODY_BYTES}` };
    }
    // Recorded as the guest gave it: the host would clean the subject, the checks below
    // look at what the guest made of it.
    this.mails.push({
      to: message.to,
      subject: message.subject,
      textBody: message.textBody,
      htmlBody: message.htmlBody ?? null,
    });
  }

  post(request) {
    const url = this.policy.webhookUrl;
    if (url === undefined) {
      throw { tag: 'not-allowed', val: 'webhooks are turned off for this tenant' };
    }
    if (this.queued >= MAX_MESSAGES_PER_RUN) {
      throw { tag: 'not-allowed', val: `at most ${MAX_MESSAGES_PER_RUN} messages per notification` };
    }
    if (request.url !== url) {
      throw { tag: 'invalid', val: "webhooks may only go to the tenant's webhook URL" };
    }
    if (utf8Length(request.body) > MAX_BODY_BYTES) {
      throw { tag: 'invalid', val: 'body too large' };
    }
    try {
      JSON.parse(request.body);
    } catch {
      throw { tag: 'invalid', val: 'the body is not JSON' };
    }
    this.webhooks.push({ url: request.url, body: request.body });
  }
}

const utf8Length = (s) => Buffer.byteLength(s, 'utf8');

// ---- cases ---------------------------------------------------------------------------

const HOOK = 'https://hooks.example/td';
const SIGNED =
  'https://td.example/v1/jobs/j1/output?expires=1796576459&sig=' +
  '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
const HOSTILE = 'a.mp4\r\nBcc: evil@example.com\r\n\r\n<script>alert("x")</script>';

const done = (over = {}) => ({
  jobId: 'j1',
  tenant: 'acme',
  ownerEmail: 'ann@example.com',
  status: 'done',
  inputName: 'talk.mp4',
  outputBytes: 3n << 20n,
  durationMs: 185000n,
  failureReason: undefined,
  downloadUrl: 'https://td.example/v1/jobs/j1/output',
  finishedAt: 1700000000n,
  ...over,
});
const failed = (reason, over = {}) =>
  done({
    status: 'failed',
    failureReason: reason,
    downloadUrl: undefined,
    outputBytes: undefined,
    durationMs: undefined,
    ...over,
  });
const settings = (email, webhook, url = HOOK) => ({
  emailEnabled: email,
  webhookEnabled: webhook,
  webhookUrl: url,
});
const ALL = settings(true, true);

function check(cond, what) {
  if (!cond) throw new Error(what);
}

/** The checks every queued mail and webhook must pass. */
function wellFormed(r) {
  for (const m of r.mails) {
    check(!/[\r\n]/.test(m.subject), `subject has a line break: ${JSON.stringify(m.subject)}`);
    check(!/[\u0000-\u001f\u007f]/.test(m.subject), `subject has a control character: ${JSON.stringify(m.subject)}`);
    check([...m.subject].length <= MAX_SUBJECT_CHARS, `subject longer than ${MAX_SUBJECT_CHARS}`);
    check(m.htmlBody !== null, 'no HTML body');
    check(!/<script/i.test(m.htmlBody), 'unescaped <script> in the HTML body');
    check(m.textBody.startsWith('Hello,\n\n'), 'text body does not start with the greeting');
  }
  for (const w of r.webhooks) {
    const doc = JSON.parse(w.body); // the host checked it parses
    check(doc !== null && typeof doc === 'object' && !Array.isArray(doc), 'webhook body is not an object');
  }
}

const ok = (r) => check(r.outcome.ok, `expected ok, got ${JSON.stringify(r.outcome)}`);
const errTag = (r, tag) =>
  check(r.outcome.err?.tag === tag, `expected err ${tag}, got ${JSON.stringify(r.outcome)}`);

const CASES = [
  {
    name: 'done: mail with link and facts, webhook',
    event: done(),
    settings: ALL,
    expect(r) {
      ok(r);
      check(r.mails.length === 1 && r.webhooks.length === 1, 'expected one mail and one webhook');
      const m = r.mails[0];
      check(m.to === 'ann@example.com', `to: ${m.to}`);
      check(m.subject === 'Your MP3 is ready: talk.mp4', `subject: ${m.subject}`);
      check(m.textBody.includes('https://td.example/v1/jobs/j1/output'), 'no link in the text');
      check(m.textBody.includes('(3:05, 3.0 MB)'), 'no duration and size');
      check(m.htmlBody.includes('<a href="https://td.example/v1/jobs/j1/output">'), 'no HTML link');
      check(m.textBody.includes('-- \nJob j1 · tenant acme\n'), 'no footer');
      check(!/sign|until|anyone/i.test(m.textBody.replace(/https:\S+/g, '')), 'unsigned link described');
      const doc = JSON.parse(r.webhooks[0].body);
      check(r.webhooks[0].url === HOOK, 'webhook URL');
      check(doc.type === 'job.done' && doc.status === 'done', 'webhook type/status');
      check(doc.output_bytes === 3 * 2 ** 20 && doc.duration_ms === 185000, 'webhook numbers');
      check(doc.failure_reason === null && doc.finished_at === 1700000000, 'webhook fields');
    },
  },
  {
    name: 'done: signed link says until when',
    event: done({ downloadUrl: SIGNED }),
    settings: ALL,
    expect(r) {
      ok(r);
      const m = r.mails[0];
      const sentence =
        'The link works without signing in: anyone who has it can download this MP3, ' +
        'until 2026-12-06 17:00 UTC.';
      check(m.textBody.includes(`${SIGNED}\n\n${sentence}\n\n`), 'signed-link sentence in text');
      check(m.htmlBody.includes(`<p>${sentence}</p>`), 'signed-link sentence in HTML');
      check(m.htmlBody.includes('?expires=1796576459&amp;sig=0123'), 'link not escaped in HTML');
    },
  },
  {
    name: 'done: sizes round like Rust (1.25 MB -> 1.2, 1.75 MB -> 1.8, 1000 B -> 1 KB)',
    event: done({ outputBytes: 1310720n, durationMs: 3723000n }),
    settings: settings(true, false),
    expect(r) {
      ok(r);
      check(r.mails[0].textBody.includes('(1:02:03, 1.2 MB)'), r.mails[0].textBody.split('\n')[2]);
    },
    more: [
      { event: done({ outputBytes: 1835008n, durationMs: undefined }), text: '(1.8 MB)' },
      { event: done({ outputBytes: 1000n, durationMs: 59999n }), text: '(0:59, 1 KB)' },
      { event: done({ outputBytes: undefined, durationMs: undefined }), text: 'converted to MP3.\n' },
    ],
  },
  {
    name: 'failed: why and what to do',
    event: failed('input has no audio track'),
    settings: ALL,
    expect(r) {
      ok(r);
      const m = r.mails[0];
      check(m.subject === 'Conversion failed: talk.mp4', `subject: ${m.subject}`);
      check(m.textBody.includes('We could not convert your file "talk.mp4" to MP3.'), 'no sentence');
      check(m.textBody.includes('Why: input has no audio track.'), 'no reason');
      check(m.textBody.includes('What to do: the file contains no audio.'), 'no advice');
      const doc = JSON.parse(r.webhooks[0].body);
      check(doc.type === 'job.failed' && doc.failure_reason === 'input has no audio track', 'webhook');
      check(doc.download_url === null && doc.output_bytes === null, 'webhook nulls');
    },
  },
  {
    name: 'failed: advice for each kind of reason',
    event: failed('unsupported audio codec: HE-AAC (AAC with SBR)'),
    settings: settings(true, false),
    expect(r) {
      ok(r);
      check(r.mails[0].textBody.includes('Export the audio as AAC-LC ("plain" AAC'), 'HE-AAC advice');
    },
    more: [
      { event: failed('unsupported audio codec: ac-3'), text: 'It reads AAC-LC ("plain" AAC), ALAC, FLAC' },
      { event: failed('unsupported audio codec: AAC with 8 channels'), text: 'Export the audio as stereo' },
      { event: failed('input is DRM-protected (fairplay)'), text: 'copy-protected' },
      { event: failed('input is corrupt: truncated'), text: 'seems damaged or incomplete' },
      { event: failed('invalid options: trim end 5 ms is not after its start 9 ms'), text: 'other options' },
      { event: failed('memory limit of 64 MiB exceeded; raise it'), text: 'ask the service\'s operator' },
      { event: failed('plugin crashed:\r\nwasm trap'), text: 'Why: plugin crashed: wasm trap.' },
      // ASCII-only lowercasing: the Kelvin sign (U+212A) is not a k.
      { event: failed('input has no audio trac\u212a'), text: 'contact support' },
      { event: failed('İNPUT HAS NO AUDIO TRACK'), text: 'contains no audio' },
    ],
  },
  {
    name: 'hostile file name: one-line subject, escaped HTML, JSON intact',
    event: done({ inputName: HOSTILE }),
    settings: ALL,
    expect(r) {
      ok(r);
      const m = r.mails[0];
      check(
        m.subject === 'Your MP3 is ready: a.mp4 Bcc: evil@example.com <script>alert("x")</script>',
        `subject: ${JSON.stringify(m.subject)}`,
      );
      check(m.htmlBody.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'), 'HTML not escaped');
      check(!m.textBody.includes('\r'), 'CR in the text body');
      check(JSON.parse(r.webhooks[0].body).input_name === HOSTILE, 'webhook input_name changed');
    },
  },
  {
    name: 'odd file names: long, astral, control and separator characters',
    event: done({ inputName: '🎵'.repeat(100) + '.mp4' }),
    settings: ALL,
    expect(r) {
      ok(r);
      const subject = r.mails[0].subject;
      check(subject === `Your MP3 is ready: ${'🎵'.repeat(80)}…`, `subject: ${subject}`);
    },
    more: [
      { event: done({ inputName: 'é'.repeat(500) }), subject: `Your MP3 is ready: ${'é'.repeat(80)}…` },
      {
        event: done({ inputName: '\u2028 a\u0000b\u0085c\u00a0\u3000d\u007f\u200be\ufeff \t' }),
        subject: 'Your MP3 is ready: a b c d \u200be\ufeff',
      },
      { event: done({ inputName: ' \r\n ' }), subject: 'Your MP3 is ready: ' },
    ],
  },
  {
    name: 'settings: e-mail only',
    event: done(),
    settings: settings(true, false),
    expect(r) {
      ok(r);
      check(r.mails.length === 1 && r.webhooks.length === 0, 'expected the mail alone');
    },
  },
  {
    name: 'settings: webhook only',
    event: failed('input is corrupt: bad'),
    settings: settings(false, true),
    expect(r) {
      ok(r);
      check(r.mails.length === 0 && r.webhooks.length === 1, 'expected the webhook alone');
    },
  },
  {
    name: 'settings: both off, or a webhook without a URL',
    event: done(),
    settings: settings(false, false),
    expect(r) {
      ok(r);
      check(r.mails.length === 0 && r.webhooks.length === 0, 'expected nothing');
    },
    more: [
      {
        event: done(),
        settings: { emailEnabled: false, webhookEnabled: true, webhookUrl: undefined },
        nothing: true,
      },
    ],
  },
  {
    name: 'incomplete events are refused',
    event: done({ downloadUrl: undefined }),
    settings: ALL,
    expect(r) {
      errTag(r, 'incomplete-event');
      check(r.outcome.err.val === 'a done job without a download URL', r.outcome.err.val);
    },
    more: [
      { event: failed(undefined), err: ['incomplete-event', 'a failed job without a failure reason'] },
      { event: done({ ownerEmail: ' ' }), err: ['incomplete-event', 'no owner e-mail address'] },
    ],
  },
  {
    name: 'host refuses the mail: refused',
    event: done(),
    settings: ALL,
    policy: { mailTo: undefined, webhookUrl: HOOK },
    expect(r) {
      errTag(r, 'refused');
      check(r.outcome.err.val === 'e-mail: e-mail is turned off for this tenant', r.outcome.err.val);
    },
  },
  {
    name: 'host refuses the webhook: ok, logged',
    event: done(),
    settings: ALL,
    policy: { mailTo: 'ann@example.com', webhookUrl: 'https://other.example/' },
    expect(r) {
      ok(r);
      check(r.mails.length === 1, 'the mail is lost');
      check(
        r.logs.some((l) => l.level === 'warn' && l.message === "webhook refused: webhooks may only go to the tenant's webhook URL"),
        `logs: ${JSON.stringify(r.logs)}`,
      );
    },
  },
];

/** Sub-cases (`more`) share their case's checks in a compact form. */
function subCheck(sub, r) {
  if (sub.err) {
    errTag(r, sub.err[0]);
    check(r.outcome.err.val === sub.err[1], r.outcome.err.val);
    return;
  }
  ok(r);
  if (sub.nothing) check(r.mails.length === 0 && r.webhooks.length === 0, 'expected nothing');
  if (sub.text) check(r.mails[0].textBody.includes(sub.text), `no ${JSON.stringify(sub.text)} in ${JSON.stringify(r.mails[0].textBody)}`);
  if (sub.subject) check(r.mails[0].subject === sub.subject, `subject: ${JSON.stringify(r.mails[0].subject)}`);
}

// ---- main ----------------------------------------------------------------------------

const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const comparable = (r) => JSON.stringify({ outcome: r.outcome, mails: r.mails, webhooks: r.webhooks, logs: r.logs });

async function main() {
  const [path, referencePath] = process.argv.slice(2);
  if (!path) {
    console.error('usage: check.mjs <component.wasm> [reference.wasm]');
    process.exit(2);
  }
  const component = await load(path);
  const reference = referencePath ? await load(referencePath) : null;

  console.log(`${path}: ${mib(component.size)}`);
  console.log('imports:');
  for (const line of component.wit.split('\n')) {
    const m = /^\s*import ([^;]+);/.exec(line);
    if (m) console.log(`  ${m[1]}`);
  }
  const exportsLine = component.wit
    .split('\n')
    .map((l) => /^\s*export (\S+?)(?:;|: interface)/.exec(l)?.[1])
    .filter(Boolean);
  console.log(`exports: ${exportsLine.join(', ')}`);
  const s = component.staticMemory;
  console.log(
    `core modules: ${mib(s.coreBytes)}; ${s.memories} memor${s.memories === 1 ? 'y' : 'ies'} of ` +
      `${s.pages} initial pages (${mib(s.pages * 65536)})` +
      `${s.maxPages === null ? '' : `, max ${s.maxPages} pages`}; data segments ${mib(s.dataBytes)}`,
  );
  console.log(
    `${s.modules} core modules; ${s.tables} tables defined, ${s.tableElements} elements in all, ` +
      `the largest ${s.largestTable}`,
  );
  console.log(`transpile ${component.transpileMs.toFixed(0)} ms, compile (V8) ${component.compileMs.toFixed(0)} ms`);

  let passed = 0;
  let failedCount = 0;
  const instantiateMs = [];
  const callMs = [];
  let maxMemory = 0;
  let coreInstances = 0;
  const runs = [];
  for (const c of CASES) {
    const subs = [{ event: c.event, settings: c.settings, policy: c.policy, main: true }, ...(c.more ?? [])];
    for (const [i, sub] of subs.entries()) {
      const label = i === 0 ? c.name : `${c.name} [${i}]`;
      const st = sub.settings ?? c.settings;
      const policy = sub.policy ?? c.policy;
      try {
        const r = await component.run(sub.event, st, policy);
        instantiateMs.push(r.instantiateMs);
        callMs.push(r.callMs);
        maxMemory = Math.max(maxMemory, r.memoryBytes);
        coreInstances = Math.max(coreInstances, r.coreInstances);
        runs.push(r);
        if (r.outcome.trap) throw new Error(`trapped: ${r.outcome.trap}`);
        wellFormed(r);
        if (sub.main) c.expect(r);
        else subCheck(sub, r);
        if (reference) {
          const want = await reference.run(sub.event, st, policy);
          if (comparable(r) !== comparable(want)) {
            throw new Error(`differs from the reference:\n  got  ${comparable(r)}\n  want ${comparable(want)}`);
          }
        }
        passed++;
        console.log(`ok   ${label}`);
      } catch (e) {
        failedCount++;
        console.log(`FAIL ${label}: ${e.message}`);
      }
    }
  }
  // A warm call: the same instance is never reused by the host, but this shows what the
  // call itself costs once the engine's caches are warm.
  console.log(
    `instantiate: median ${median(instantiateMs).toFixed(1)} ms, max ${Math.max(...instantiateMs).toFixed(1)} ms; ` +
      `notify call: median ${median(callMs).toFixed(1)} ms, max ${Math.max(...callMs).toFixed(1)} ms ` +
      `(first ${callMs[0].toFixed(1)} ms; Node/V8, not wasmtime)`,
  );
  console.log(`linear memory after a run: up to ${mib(maxMemory)} (${maxMemory / 65536} pages); ${coreInstances} core instances`);
  if (reference) console.log(`compared with ${referencePath}: identical messages in every passing case`);
  console.log(`${passed} passed, ${failedCount} failed`);
  process.exit(failedCount === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e?.stack ?? e);
  process.exit(2);
});
