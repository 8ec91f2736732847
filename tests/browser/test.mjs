// Drives the page at `/` through a real Chromium (playwright-core), as a user, a tenant
// admin and the operator, runs axe-core on every main view and saves screenshots.
// Started by run.sh, which provides the server:
//   TAPEDECK_URL, TAPEDECK_ADMIN_TOKEN, TAPEDECK_REPO, CHROMIUM (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const URL_ = process.env.TAPEDECK_URL;
const OP_TOKEN = process.env.TAPEDECK_ADMIN_TOKEN;
const REPO = process.env.TAPEDECK_REPO || path.resolve(HERE, '../..');
const MEDIA = path.resolve(REPO, '../shared/media');
const ARTIFACTS = path.join(REPO, 'target/browser-artifacts');
const AXE = path.join(HERE, 'node_modules/axe-core/axe.min.js');
const NOTIFIER = path.join(REPO, 'target/components/wasm32-wasip2/release/tapedeck_notifier.wasm');
const INPUT = path.join(MEDIA, 'aac-lc_44k_stereo_LRtest__rodio_RL.m4a');
// An MP4 with no audio track (MANIFEST.tsv: "NO AUDIO"): its job fails → dead letter.
const NO_AUDIO = path.join(MEDIA, 'noaudio_h264__androidx_sample_video_only.mp4');

if (!URL_ || !OP_TOKEN) {
  console.error('run me through tests/browser/run.sh (TAPEDECK_URL, TAPEDECK_ADMIN_TOKEN)');
  process.exit(2);
}
if (!fs.existsSync(MEDIA)) {
  console.log('skipped: ../shared/media absent');
  process.exit(0);
}
for (const f of [INPUT, NOTIFIER]) {
  if (!fs.existsSync(f)) { console.error(`missing input: ${f}`); process.exit(1); }
}
fs.mkdirSync(ARTIFACTS, { recursive: true });
fs.rmSync(path.join(ARTIFACTS, 'failure.png'), { force: true }); // from an earlier run

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const step = (msg) => console.log(`[${elapsed()}] ${msg}`);
const note = (msg) => console.log(`[${elapsed()}] NOTE: ${msg}`);
function check(cond, msg) { if (!cond) throw new Error(`check failed: ${msg}`); }

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
context.setDefaultTimeout(15000);
const page = await context.newPage();

// Any script error, or anything the Content-Security-Policy blocked, fails the run.
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
});
page.on('dialog', (d) => d.accept()); // confirm() before deleting

const axeFailures = [];
/**
 * Runs axe-core on the page as it is; serious and critical violations fail the run.
 * axe is injected by evaluating its source (DevTools protocol): `page.addScriptTag`
 * inserts an inline <script>, which the page's CSP (script-src 'self') rightly blocks.
 */
const axeSource = fs.readFileSync(AXE, 'utf8');
async function axe(view) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) })));
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of violations) {
    const line = `axe [${view}] ${v.impact} ${v.id}: ${v.help} — ${v.nodes.join(', ')}`;
    if (bad.includes(v)) axeFailures.push(line); else console.log(`  (${line})`);
  }
  step(`axe on ${view}: ${bad.length ? `${bad.length} serious/critical` : 'clean'}`);
}

/** Full-page screenshots at desktop and at 375 px width. */
async function shoot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 375, height: 812 });
  await page.waitForTimeout(100);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `${name}: the page is ${overflow}px wider than a 375px screen`);
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}-375.png`), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });
}

const visible = (sel) => page.locator(sel).first().waitFor({ state: 'visible' });
const view = (name) => visible(`#view-${name}`);
async function nav(name) {
  await page.click(`#nav a[href="#${name}"]`);
  await view(name);
}
/** The message region of a form/card, once it shows text matching `re`. */
async function message(container, re, timeout = 15000) {
  const loc = page.locator(`${container} .msg p`).filter({ hasText: re }).first();
  await loc.waitFor({ state: 'visible', timeout });
  return loc.textContent();
}

/** Waits for a job card with that file name to show `status`; returns its locator. */
async function jobCard(name, status, timeout = 30000) {
  const card = page.locator('#jobs .job').filter({ has: page.locator('.name', { hasText: name }) }).first();
  await card.locator('.badge', { hasText: status }).waitFor({ state: 'visible', timeout });
  return card;
}

async function signOut() {
  await page.click('#signout');
  await view('signin');
  check(!(await page.evaluate(() => sessionStorage.getItem('tapedeck.session'))), 'signing out clears sessionStorage');
}

const api = (method, p, { token, data } = {}) => page.request.fetch(`${URL_}${p}`, {
  method, data, headers: token ? { authorization: `Bearer ${token}` } : {},
});

try {
  // ---------------------------------------------------------------- logged out
  const res = await page.goto(URL_);
  check(res.ok(), 'GET / answers 200');
  check((res.headers()['content-security-policy'] || '').includes("script-src 'self'"), 'the page carries its CSP');
  await view('signin');
  step('page loaded, signed out');
  // Keyboard: the first Tab reaches the skip link, the next ones the form.
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement?.classList.contains('skip-link')), 'first Tab focuses the skip link');
  await axe('signed out');
  await shoot('logged-out');

  // An API error is shown in words (the JSON error's message).
  await page.fill('#login-email', 'nobody@example.com');
  await page.fill('#login-password', 'wrong password');
  await page.click('#login-form button[value=login]');
  const refused = await message('#login-form', /./);
  check(!/answered 4\d\d/.test(refused), `a refused login shows the API's message (got "${refused}")`);
  step(`refused login shows: "${refused.trim()}"`);

  // ---------------------------------------------------------------- user
  const email = `ann-${Date.now()}@example.com`;
  const password = 'correct horse battery';
  await page.fill('#login-email', email);
  await page.fill('#login-password', password);
  await page.click('#login-form button[value=register]'); // registers, then signs in
  await view('jobs');
  step(`registered ${email}`);
  await signOut();
  await page.fill('#login-email', email);
  await page.fill('#login-password', password);
  await page.click('#login-form button[value=login]');
  await view('jobs');
  check(await page.evaluate(() => !!JSON.parse(sessionStorage.getItem('tapedeck.session'))?.token), 'the token is kept in sessionStorage');
  step('signed in');

  // Upload through the file picker, with an option.
  await page.selectOption('#opt-bitrate', '128');
  const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.click('#file-input')]);
  check(chooser.isMultiple(), 'the file picker takes several files');
  await chooser.setFiles(INPUT);
  const name = path.basename(INPUT);
  let card = await jobCard(name, 'Done');
  const meta = await card.locator('.meta').textContent();
  check(/128 kbit\/s/.test(meta), `the finished job shows its bitrate (${meta})`);
  step(`uploaded ${name}; job done (${meta.trim()})`);
  check(!(await page.locator('#jobs-empty').isVisible()), 'the empty-list text is gone');

  // Reload: the session survives (sessionStorage) and the job is listed from the API.
  await page.reload();
  await view('jobs');
  card = await jobCard(name, 'Done');
  await axe('jobs');
  await shoot('jobs');

  // Player: the MP3 plays from an object URL.
  await card.locator('button', { hasText: 'Listen' }).click();
  const duration = await page.waitForFunction(() => {
    const a = document.querySelector('#jobs .job audio');
    return a && a.readyState >= 1 && a.duration > 0 && Number.isFinite(a.duration) ? a.duration : false;
  }).then((h) => h.jsonValue());
  check(duration > 20 && duration < 35, `audio duration ${duration} s (the input is 27 s)`);
  await page.evaluate(() => document.querySelector('#jobs .job audio')?.pause());
  step(`player loaded: ${duration.toFixed(1)} s of audio`);

  // Download through <a download> with an object URL.
  const [download] = await Promise.all([page.waitForEvent('download'), card.locator('button', { hasText: 'Download' }).click()]);
  const file = await download.path();
  const size = fs.statSync(file).size;
  check(size > 0, 'the download is not empty');
  check(download.suggestedFilename().endsWith('.mp3'), `download name ${download.suggestedFilename()}`);
  step(`downloaded ${download.suggestedFilename()} (${size} bytes)`);

  // Delete.
  const jobId = await card.getAttribute('data-id');
  await card.locator('button', { hasText: 'Delete' }).click();
  await page.locator(`#jobs .job[data-id="${jobId}"]`).waitFor({ state: 'detached' });
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('tapedeck.session')).token);
  check((await api('GET', `/v1/jobs/${jobId}`, { token })).status() === 404, 'the deleted job is gone from the API');
  step('deleted the job');

  // A job that fails (no audio track): error in words, Retry offered; it stays for the
  // dead-letter step below.
  let failedId = null;
  let deadInput = NO_AUDIO;
  if (!fs.existsSync(deadInput)) {
    // Fallback: a truncated copy of the input (corrupt MP4).
    deadInput = path.join(os.tmpdir(), `truncated-${process.pid}.m4a`);
    fs.writeFileSync(deadInput, fs.readFileSync(INPUT).subarray(0, 4096));
  }
  {
    const [c2] = await Promise.all([page.waitForEvent('filechooser'), page.click('#file-input')]);
    await c2.setFiles(deadInput);
    const failed = await jobCard(path.basename(deadInput), 'Failed');
    failedId = await failed.getAttribute('data-id');
    const why = await failed.locator('.job-error').textContent();
    check(why.length > 'Error: '.length, 'a failed job shows why');
    check(await failed.locator('button', { hasText: 'Retry' }).isVisible(), 'a failed job offers Retry');
    step(`failing job ${failedId}: ${why.trim()}`);
  }
  await signOut();

  // ---------------------------------------------------------------- tenant admin
  const adminEmail = `boss-${Date.now()}@example.com`;
  const made = await api('POST', '/v1/admin/tenants/default/users', {
    token: OP_TOKEN, data: { email: adminEmail, password, role: 'admin' },
  });
  check(made.status() === 201, `operator creates a tenant admin (${made.status()})`);
  await page.fill('#login-tenant', 'default');
  await page.fill('#login-email', adminEmail);
  await page.fill('#login-password', password);
  await page.click('#login-form button[value=login]');
  await view('jobs');
  await nav('users');
  await page.locator('#users-table tbody tr', { hasText: email }).waitFor();
  await axe('tenant users');
  await nav('notifications');
  await page.waitForFunction(() => document.querySelector('#notif-email').checked !== undefined && document.querySelector('#notif-secret-state').textContent !== '');
  await page.fill('#notif-max', '50');
  await page.click('#notif-form button[type=submit]');
  await message('#notif-form', /Saved/);
  await axe('tenant notifications');
  await nav('usage');
  await visible('#usage-body .stats');
  await axe('tenant usage');
  step('tenant admin: users, notifications, usage');
  await signOut();

  // ---------------------------------------------------------------- operator
  await page.fill('#op-token', 'not-the-token-at-all');
  await page.click('#operator-form button[type=submit]');
  await message('#operator-form', /./);
  await page.fill('#op-token', OP_TOKEN);
  await page.click('#operator-form button[type=submit]');
  await view('tenants');
  await page.locator('#tenants-table tbody tr', { hasText: 'default' }).waitFor();
  await page.locator('#tenants-table tbody tr', { hasText: 'default' }).locator('button', { hasText: 'Limits' }).click();
  await visible('#tenant-detail');
  // The limits form lists what the server describes (/openapi.json), not a copy of its own.
  const described = (await (await fetch(`${URL_}/openapi.json`)).json()).components.schemas.TenantLimits.properties;
  const rows = await page.locator('#limits-body input').evaluateAll((els) => els.map((e) => e.name));
  check(JSON.stringify(rows.sort()) === JSON.stringify(Object.keys(described).sort()), `limits form rows ${rows}`);
  check(await page.locator('#limits-body label', { hasText: 'Largest upload, in bytes' }).count() === 1,
    'the upload limit is labelled by its description');
  check(await page.locator('#limit-weight').getAttribute('max') === '1000', 'the weight input takes the schema maximum');
  await axe('operator tenants');
  step('operator signed in; tenants and limits shown');

  // Plugins: publish the notifier, activate it, see it active and in the history.
  await nav('plugins');
  await page.setInputFiles('#publish-file', NOTIFIER);
  await page.selectOption('#publish-stage', 'notifier');
  await page.click('#publish-form button[type=submit]');
  const published = await message('#publish-form', /published/i, 30000);
  step(`publish: ${published.trim()}`);
  const digest = await page.inputValue('#rollout-digest');
  check(/^[0-9a-f]{64}$/.test(digest), 'the published component is chosen for roll-out');
  const short = digest.slice(0, 12);
  await page.click('#rollout-form button[value=activate]');
  await message('#rollout-form', /Activated/);
  await page.locator('#active-body tr', { hasText: short }).filter({ hasText: 'notifier' }).waitFor();
  await page.locator('#history-body tr', { hasText: 'activate' }).filter({ hasText: short }).waitFor();
  await page.locator('#history-body tr', { hasText: 'publish' }).filter({ hasText: short }).waitFor();
  step(`activated ${short}: in the active list and the history`);
  await page.locator('#canaries-body p, #canaries-body table').first().waitFor();
  const canaries = await page.locator('#canaries-body').textContent();
  if (/not available/i.test(canaries)) note('canary routes absent on this server (shown as "not available")');
  else step(`canaries view: ${canaries.trim().slice(0, 80)}`);
  await axe('operator plugins');
  await shoot('operator-plugins');

  // Dead letters: replay the failed job, if this server has the route.
  await nav('dead');
  await page.locator('#dead-body p, #dead-body table').first().waitFor();
  if (/not available/i.test(await page.locator('#dead-body').textContent())) {
    note('dead-letter routes absent on this server: replay step skipped');
  } else {
    // The dead letter is written when the job fails; look again for a few seconds.
    const row = page.locator('#dead-body tr', { hasText: failedId });
    for (let i = 0; i < 20 && !(await row.count()); i += 1) {
      await page.waitForTimeout(250);
      await page.click('#dead-form button[type=submit]');
      await page.locator('#dead-body p, #dead-body table').first().waitFor();
    }
    check(await row.count(), `the failed job ${failedId} is a dead letter`);
    await axe('operator dead letters');
    await row.locator('button', { hasText: 'Replay' }).click();
    await message('#view-dead', /replayed/);
    step(`replayed dead letter of job ${failedId}`);
  }

  // Outbox (mail of the embedded default), if this server has the route.
  await nav('outbox');
  await page.locator('#outbox-body p, #outbox-body table').first().waitFor();
  if (/not available/i.test(await page.locator('#outbox-body').textContent())) {
    note('outbox routes absent on this server: skipped');
  } else {
    const first = page.locator('#outbox-body tbody tr').first();
    if (await first.count()) {
      await first.locator('button', { hasText: 'Open' }).click();
      await visible('#outbox-message');
      check(((await page.locator('#outbox-message-text').textContent()) || '').length > 0, 'a message opens');
      step('outbox: opened a message');
    } else {
      note('outbox is empty');
    }
    await axe('operator outbox');
  }
  await signOut();
} catch (e) {
  problems.push(e.stack || String(e));
  await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}

problems.push(...axeFailures);
if (problems.length) {
  console.error(`\nFAILED after ${elapsed()}:`);
  for (const p of problems) console.error(`- ${p}`);
  console.error(`(screenshots in ${ARTIFACTS})`);
  process.exit(1);
}
console.log(`\nok: browser test passed in ${elapsed()}; screenshots in ${ARTIFACTS}`);
