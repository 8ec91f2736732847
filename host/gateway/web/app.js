// Tapedeck web page: one ES module, no dependencies, no build step.
//
// The page talks to the same API as everyone else (`/v1/...`, JSON errors
// `{"error": {"code", "message"}}`). The Content-Security-Policy allows no inline
// script or style, so the DOM is built with `h()` below and styled by classes only.
//
// Sections:
//   helpers       DOM building, formatting
//   api           fetch wrapper, JSON errors, XHR uploads with progress
//   session       sign-in, sessionStorage, JWT claims, routing between views
//   jobs          uploads, the job list, live status over SSE, player and download
//   tenant admin  users, notification settings, usage
//   operator      tenants and limits, plugins (publish, activate, canary, rollback,
//                 history), dead letters, outbox

// ----------------------------------------------------------------------------------
// helpers
// ----------------------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/**
 * Builds an element. `props`: `class`, `text`, `on: {event: fn}`, `data: {...}`, a few
 * DOM properties (value, checked, disabled, hidden, selected, htmlFor), anything else
 * becomes an attribute (`aria-*`, `type`, ...). `null`/`false` props are skipped.
 * Children are nodes or strings (always inserted as text, never parsed as HTML).
 */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'data') Object.assign(el.dataset, v);
    else if (['value', 'checked', 'disabled', 'hidden', 'selected', 'htmlFor'].includes(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** Text only screen readers get, e.g. the file name a "Delete" button acts on. */
const sr = (text) => h('span', { class: 'visually-hidden', text });

const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['bytes', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${i === 0 ? v : nf.format(v)} ${units[i]}`;
}

function fmtDuration(ms) {
  if (!ms && ms !== 0) return '—';
  const s = Math.round(ms / 1000);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

const dtf = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const fmtTime = (unix) => (unix ? dtf.format(new Date(unix * 1000)) : '—');
const shortDigest = (d) => (d ? d.slice(0, 12) : 'built-in');
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Polite announcement for screen readers (status changes, finished actions). */
function announce(text) {
  const el = $('#announcer');
  // Clearing first makes a repeated identical message be read again.
  el.textContent = '';
  setTimeout(() => { el.textContent = text; }, 50);
}

/**
 * Shows a message in a container: `where` is an element holding (or getting) a
 * `.msg` region, or null for the page-wide one. Errors are inserted as role=alert so
 * they are read at once; other messages go through the container's polite live region.
 */
function say(where, text, kind = 'error') {
  let box = $('#alert');
  if (where) {
    box = where.matches('.msg') ? where : $(':scope > .msg', where);
    if (!box) {
      box = h('div', { class: 'msg', 'aria-live': 'polite' });
      where.append(box);
    }
  }
  box.replaceChildren();
  if (!text) return;
  const p = h('p', { class: kind, role: kind === 'error' ? 'alert' : null, text });
  box.append(p);
}
const clearMsg = (where) => say(where, '');

/** What to tell the user for an exception from `api()` (or anything else). */
const errText = (e) => (e instanceof ApiError ? e.message : `Something went wrong: ${e.message || e}`);

/**
 * Runs an async action from a button or form: errors shown in `where`, the control
 * marked busy meanwhile (a second click is ignored). `aria-disabled` rather than
 * `disabled`, which would throw keyboard focus back to <body>.
 */
async function act(button, where, fn) {
  if (button) {
    if (button.getAttribute('aria-busy') === 'true') return undefined;
    button.setAttribute('aria-busy', 'true');
    button.setAttribute('aria-disabled', 'true');
  }
  clearMsg(where);
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof SessionEnded)) say(where, errText(e));
    return undefined;
  } finally {
    if (button) { button.removeAttribute('aria-busy'); button.removeAttribute('aria-disabled'); }
  }
}

/** A table in a scroll container (keyboard-scrollable at narrow widths). */
function table(caption, headers, rows) {
  const t = h('table', {},
    h('caption', { class: 'visually-hidden', text: caption }),
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x || sr('Actions'))))),
    h('tbody', {}, rows));
  labelCells(t);
  return h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': caption }, t);
}

/**
 * Copies each column's header text into its body cells' `data-label`: on narrow
 * screens the CSS lays rows out as cards and shows the label before each value.
 */
function labelCells(t) {
  const heads = $$('thead th', t).map((th) => (th.querySelector('.visually-hidden') ? '' : th.textContent.trim()));
  for (const tr of $$('tbody tr', t)) {
    Array.from(tr.children).forEach((cell, i) => { cell.dataset.label = heads[i] ?? ''; });
  }
}

// ----------------------------------------------------------------------------------
// api
// ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** Thrown after a 401 signed the user out; callers need not show anything else. */
class SessionEnded extends Error {}

/** A 404 for a route this server does not have (planned routes may be missing). */
const isMissing = (e) => e instanceof ApiError && e.status === 404 && e.code === 'not_found';
const NOT_AVAILABLE = 'Not available on this server.';

async function errorFrom(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const err = body && body.error;
  if (err && err.message) return new ApiError(res.status, err.code || 'error', err.message, err);
  return new ApiError(res.status, 'http_' + res.status, `The server answered ${res.status} ${res.statusText}.`.trim());
}

const authHeader = (token) => (token ? { authorization: `Bearer ${token}` } : {});

/**
 * Calls the API. `json`: a body to send as JSON. `token`: overrides the session's.
 * Returns the parsed JSON, the text for other types, or null for 204.
 * A 401 with the session's token ends the session.
 */
async function api(method, path, { json, token } = {}) {
  const usesSession = token === undefined;
  const headers = { accept: 'application/json', ...authHeader(usesSession ? session?.token : token) };
  let body;
  if (json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch {
    throw new ApiError(0, 'network', 'The server could not be reached. Check the connection and try again.');
  }
  if (!res.ok) {
    const e = await errorFrom(res);
    if (res.status === 401 && usesSession && session) {
      signOut(session.kind === 'operator'
        ? `The operator token was refused: ${e.message}`
        : 'Your session has ended. Please sign in again.');
      throw new SessionEnded(e.message);
    }
    throw e;
  }
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/**
 * POSTs a multipart form with XMLHttpRequest (fetch has no upload progress).
 * `onProgress(fraction, loaded, total)`. Resolves with `{status, body}` on any HTTP
 * answer; rejects with ApiError on a network failure or abort. `xhr` is returned
 * through `onStart` so the caller can cancel.
 */
function upload(path, form, { onProgress, onStart } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.responseType = 'json';
    if (session?.token) xhr.setRequestHeader('authorization', `Bearer ${session.token}`);
    xhr.setRequestHeader('accept', 'application/json');
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total, e.loaded, e.total);
    };
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response });
    // Also what a browser reports when the server refuses a large body early (413) and
    // closes the connection before the browser has read its answer.
    xhr.onerror = () => reject(new ApiError(0, 'network',
      'The upload failed: the connection closed before the server answered (the server may be unreachable, or the file over the upload limit).'));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', 'Upload cancelled.'));
    xhr.send(form);
    if (onStart) onStart(xhr);
  });
}

/** Turns an `upload()` answer that is not 2xx into an ApiError. */
function uploadError({ status, body }) {
  const err = body && body.error;
  if (err && err.message) return new ApiError(status, err.code, err.message, err);
  return new ApiError(status, 'http_' + status, `The server answered ${status}.`);
}

// ----------------------------------------------------------------------------------
// session and routing
// ----------------------------------------------------------------------------------

const STORE_KEY = 'tapedeck.session';

/** `{kind: 'user', token, claims}` or `{kind: 'operator', token}`, or null. */
let session = null;
let expiryTimer = null;

/** The claims of a JWT (its middle, base64url part). The server verifies; this only reads. */
function jwtClaims(token) {
  const part = token.split('.')[1] || '';
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

const isAdmin = () => session?.kind === 'user' && session.claims.role === 'admin';

function setSession(s) {
  session = s;
  clearTimeout(expiryTimer);
  if (s) {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(s));
    const left = s.claims?.exp ? s.claims.exp * 1000 - Date.now() : null;
    if (left !== null && left < 2 ** 31) {
      expiryTimer = setTimeout(() => signOut('Your session has ended. Please sign in again.'), Math.max(left, 0));
    }
  } else {
    sessionStorage.removeItem(STORE_KEY);
  }
  renderSession();
}

function restoreSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE_KEY));
    if (!s || !s.token) return;
    if (s.kind === 'user') {
      s.claims = jwtClaims(s.token);
      if (s.claims.exp && s.claims.exp * 1000 <= Date.now()) {
        sessionStorage.removeItem(STORE_KEY);
        return;
      }
    }
    setSession(s);
  } catch {
    sessionStorage.removeItem(STORE_KEY);
  }
}

function renderSession() {
  const who = $('#who');
  $('#session').hidden = !session;
  $('#nav').hidden = !session;
  if (!session) { who.textContent = ''; return; }
  who.textContent = session.kind === 'operator'
    ? 'Signed in as operator'
    : `Signed in as ${session.claims.email} (${session.claims.tenant}${isAdmin() ? ', admin' : ''})`;
  for (const li of $$('#nav li')) {
    const role = li.dataset.role;
    li.hidden = !(role === 'operator' ? session.kind === 'operator'
      : role === 'admin' ? isAdmin()
        : session.kind === 'user');
  }
  $('#joblist-h').textContent = isAdmin() ? 'Jobs of your organisation' : 'Your jobs';
}

async function signIn(form, submitter) {
  const tenant = form.tenant.value.trim();
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email || !password) {
    say(form, 'Enter your e-mail and password.');
    (email ? form.password : form.email).focus();
    return;
  }
  const creds = { email, password, ...(tenant ? { tenant } : {}) };
  await act(submitter, form, async () => {
    if (submitter?.value === 'register') {
      await api('POST', '/v1/auth/register', { json: creds, token: null });
      announce('Account created.');
    }
    const { token } = await api('POST', '/v1/auth/login', { json: creds, token: null });
    form.password.value = '';
    setSession({ kind: 'user', token, claims: jwtClaims(token) });
    go('jobs');
  });
}

async function operatorSignIn(form, submitter) {
  const token = form.token.value.trim();
  if (!token) { say(form, 'Paste the operator token.'); form.token.focus(); return; }
  await act(submitter, form, async () => {
    // Any operator route checks the token; the tenant list is small.
    await api('GET', '/v1/admin/tenants', { token });
    form.token.value = '';
    setSession({ kind: 'operator', token });
    go('tenants');
  });
}

/** Ends the session; `message` is shown on the sign-in view (`kind`: 'error' or 'ok'). */
function signOut(message, kind = 'error') {
  for (const v of Object.values(VIEWS)) v.leave?.();
  resetJobs();
  setSession(null);
  if (location.hash) history.replaceState(null, '', location.pathname);
  route(true);
  if (message) say(null, message, kind);
}

/** Every view: who may see it, its title, and what happens when it is shown or left. */
const VIEWS = {
  signin: { role: null, title: 'Sign in' },
  jobs: { role: 'user', title: 'Jobs', enter: enterJobs },
  users: { role: 'admin', title: 'Users', enter: enterUsers },
  notifications: { role: 'admin', title: 'Notifications', enter: enterNotifications },
  usage: { role: 'admin', title: 'Usage', enter: enterUsage },
  tenants: { role: 'operator', title: 'Tenants', enter: enterTenants },
  plugins: { role: 'operator', title: 'Plugins', enter: enterPlugins, leave: leavePlugins },
  dead: { role: 'operator', title: 'Dead letters', enter: enterDead },
  outbox: { role: 'operator', title: 'Outbox', enter: enterOutbox },
};
let current = null;

function allowed(name) {
  const v = VIEWS[name];
  if (!v) return false;
  if (!session) return v.role === null;
  if (v.role === 'operator') return session.kind === 'operator';
  if (v.role === 'admin') return isAdmin();
  if (v.role === 'user') return session.kind === 'user';
  return false;
}

const homeView = () => (!session ? 'signin' : session.kind === 'operator' ? 'tenants' : 'jobs');

function go(name) {
  if (location.hash === `#${name}`) route(true);
  else location.hash = name; // hashchange → route
}

/** Shows the view the URL names (or the home view); `focus`: move focus to its heading. */
function route(focus = false) {
  let name = location.hash.slice(1);
  if (!allowed(name)) name = homeView();
  if (current && current !== name) VIEWS[current].leave?.();
  const changed = current !== name;
  current = name;
  for (const s of $$('.view')) s.hidden = s.id !== `view-${name}`;
  for (const a of $$('#nav a')) {
    if (a.getAttribute('href') === `#${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${VIEWS[name].title} · Tapedeck`;
  if (changed) clearMsg(null);
  VIEWS[name].enter?.();
  if (focus) $(`#view-${name} h1`)?.focus();
}

// ----------------------------------------------------------------------------------
// jobs: uploads
// ----------------------------------------------------------------------------------

const MAX_PARALLEL_UPLOADS = 2;
const uploadQueue = [];
const activeUploads = new Set(); // XMLHttpRequests in flight

/** The options form as multipart fields (empty ones left out: the server decides). */
function readOptions() {
  const opts = {};
  const vbr = $('#opt-vbr').value;
  const bitrate = $('#opt-bitrate').value;
  if (vbr !== '') opts.vbr = vbr;
  else if (bitrate !== '') opts.bitrate = bitrate;
  if ($('#opt-rate').value) opts.sample_rate = $('#opt-rate').value;
  if ($('#opt-mono').checked) opts.mono = 'true';
  return opts;
}

function addFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const opts = readOptions();
  $('#uploads-box').hidden = false;
  for (const file of files) {
    const item = {
      file,
      opts,
      xhr: null,
      progress: h('progress', { max: 1, value: 0, 'aria-label': `Upload of ${file.name}` }),
      status: h('span', { class: 'upload-status', text: 'Waiting…' }),
      button: null,
      el: null,
    };
    item.button = h('button', {
      type: 'button', class: 'secondary small',
      on: { click: () => cancelUpload(item) },
    }, 'Cancel', sr(` upload of ${file.name}`));
    item.el = h('li', { class: 'upload' },
      h('div', { class: 'row' },
        h('span', { class: 'name', text: file.name }),
        h('span', { class: 'size', text: fmtBytes(file.size) })),
      item.progress,
      h('div', { class: 'row' }, item.status, item.button),
      h('div', { class: 'msg', 'aria-live': 'polite' }));
    $('#uploads').append(item.el);
    uploadQueue.push(item);
  }
  announce(files.length === 1 ? `Uploading ${files[0].name}.` : `Uploading ${files.length} files.`);
  pumpUploads();
}

function pumpUploads() {
  while (activeUploads.size < MAX_PARALLEL_UPLOADS && uploadQueue.length) {
    startUpload(uploadQueue.shift());
  }
}

async function startUpload(item) {
  const form = new FormData();
  for (const [k, v] of Object.entries(item.opts)) form.append(k, v);
  form.append('file', item.file, item.file.name);
  item.status.textContent = 'Uploading… 0%';
  let xhr = null;
  try {
    const res = await upload('/v1/jobs', form, {
      onStart: (x) => { xhr = x; item.xhr = x; activeUploads.add(x); },
      onProgress: (f, loaded, total) => {
        item.progress.value = f;
        item.status.textContent = `Uploading… ${Math.floor(f * 100)}% (${fmtBytes(loaded)} of ${fmtBytes(total)})`;
      },
    });
    if (res.status === 401 && session) { signOut('Your session has ended. Please sign in again.'); return; }
    if (res.status !== 202 && res.status !== 201) throw uploadError(res);
    // Accepted: the job takes over in the list below.
    item.el.remove();
    $('#uploads-box').hidden = !$('#uploads').children.length;
    announce(`${item.file.name} uploaded; the conversion is queued.`);
    addJob(res.body, { top: true, live: true });
  } catch (e) {
    item.progress.hidden = true;
    item.status.textContent = e.code === 'aborted' ? 'Cancelled' : 'Not uploaded';
    say(item.el, e.code === 'aborted' ? '' : `${item.file.name}: ${errText(e)}`);
    // The Cancel button becomes Dismiss (a fresh element: it had the cancel listener).
    const dismiss = h('button', {
      type: 'button', class: 'secondary small',
      on: {
        click: () => {
          item.el.remove();
          $('#uploads-box').hidden = !$('#uploads').children.length;
          $('#file-input').focus();
        },
      },
    }, 'Dismiss', sr(` ${item.file.name}`));
    const hadFocus = document.activeElement === item.button;
    item.button.replaceWith(dismiss);
    item.button = dismiss;
    if (hadFocus) dismiss.focus();
  } finally {
    if (xhr) activeUploads.delete(xhr);
    pumpUploads();
  }
}

function cancelUpload(item) {
  const queued = uploadQueue.indexOf(item);
  if (queued >= 0) {
    uploadQueue.splice(queued, 1);
    item.el.remove();
    $('#uploads-box').hidden = !$('#uploads').children.length;
    announce(`Upload of ${item.file.name} cancelled.`);
    $('#file-input').focus();
  } else if (item.xhr) {
    item.xhr.abort();
  }
}

function setupUploadForm() {
  const input = $('#file-input');
  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = ''; // choosing the same file again fires `change` again
  });
  $('#upload-form').addEventListener('submit', (e) => e.preventDefault());

  // Bitrate and VBR exclude each other (the API refuses both).
  const vbr = $('#opt-vbr');
  const bitrate = $('#opt-bitrate');
  vbr.addEventListener('change', () => {
    bitrate.disabled = vbr.value !== '';
    if (bitrate.disabled) bitrate.value = '';
  });

  // Drag and drop onto the drop zone; elsewhere on the page a dropped file is ignored
  // instead of the browser navigating away to it.
  const zone = $('#dropzone');
  let depth = 0;
  const hasFiles = (e) => Array.from(e.dataTransfer?.types || []).includes('Files');
  zone.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    zone.classList.add('over');
  });
  zone.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove('over');
  });
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove('over');
    addFiles(e.dataTransfer.files);
  });
  window.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener('drop', (e) => { if (hasFiles(e)) e.preventDefault(); });
}

// ----------------------------------------------------------------------------------
// jobs: the list, live status, player, download
// ----------------------------------------------------------------------------------

/** id → entry: `{job, el, parts: {...}, blobUrl, shownStatus}` */
const jobs = new Map();
let jobsCursor = null;
let jobsLoaded = false;

const STATUS_TEXT = {
  queued: 'Queued', converting: 'Converting', done: 'Done', failed: 'Failed', expired: 'Expired',
};
const finished = (job) => ['done', 'failed', 'expired'].includes(job.status);

const mp3Name = (job) => `${(job.input?.name || job.id).replace(/\.[^.]*$/, '')}.mp3`;

function enterJobs() {
  if (!jobsLoaded) loadJobs(true);
}

async function loadJobs(reset) {
  const more = $('#jobs-more');
  const button = reset ? $('#jobs-refresh') : more;
  await act(button, null, async () => {
    const q = new URLSearchParams({ limit: '20' });
    if (!reset && jobsCursor) q.set('cursor', jobsCursor);
    const page = await api('GET', `/v1/jobs?${q}`);
    if (reset) {
      // Keep entries (players, streams) of jobs still listed; drop the others.
      const listed = new Set(page.jobs.map((j) => j.id));
      for (const [id, entry] of jobs) if (!listed.has(id)) dropJob(entry);
    }
    for (const job of page.jobs) addJob(job, { top: false, live: false });
    jobsCursor = page.next_cursor || null;
    more.hidden = !jobsCursor;
    jobsLoaded = true;
    if (reset) sortJobs();
    $('#jobs-empty').hidden = jobs.size > 0;
  });
}

/** Newest first, as the API lists them (after a refresh merged old and new entries). */
function sortJobs() {
  const list = $('#jobs');
  const entries = Array.from(jobs.values()).sort((a, b) => (b.job.created_at - a.job.created_at) || (a.job.id < b.job.id ? 1 : -1));
  for (const e of entries) list.append(e.el);
}

/** Adds a job to the list or updates the one there; starts watching it if unfinished. */
function addJob(job, { top, live }) {
  let entry = jobs.get(job.id);
  if (!entry) {
    entry = createJobEntry(job);
    jobs.set(job.id, entry);
    if (top) $('#jobs').prepend(entry.el);
    else $('#jobs').append(entry.el);
  }
  updateJob(entry, job, live);
  $('#jobs-empty').hidden = true;
  if (!finished(job)) watch(job.id);
}

function createJobEntry(job) {
  const name = job.input?.name || job.id;
  const parts = {
    badge: h('span', { class: 'badge' }),
    progress: h('progress', { max: 1, value: 0, 'aria-label': `Conversion of ${name}` }),
    meta: h('p', { class: 'meta' }),
    error: h('p', { class: 'job-error', hidden: true }),
    player: h('div', { class: 'player' }),
    actions: h('div', { class: 'actions' }),
  };
  const el = h('li', { class: 'job', data: { id: job.id } },
    h('div', { class: 'row' }, h('h3', { class: 'name', text: name }), parts.badge),
    parts.progress, parts.meta, parts.error, parts.player, parts.actions,
    h('div', { class: 'msg', 'aria-live': 'polite' }));
  return { job, el, parts, blobUrl: null, shownStatus: null };
}

/** Re-renders an entry for a new job state; `live`: announce a status change. */
function updateJob(entry, job, live) {
  const prev = entry.shownStatus;
  entry.job = job;
  const { parts } = entry;
  const name = job.input?.name || job.id;
  const pct = Math.round((job.progress || 0) * 100);

  parts.badge.className = `badge status-${job.status}`;
  parts.badge.textContent = job.status === 'converting' ? `Converting ${pct}%` : (STATUS_TEXT[job.status] || job.status);
  parts.progress.hidden = finished(job);
  parts.progress.value = job.progress || 0;

  const bits = [`${fmtBytes(job.input?.bytes)} in`];
  if (job.output) {
    bits.push(`MP3 ${fmtBytes(job.output.bytes)}`, fmtDuration(job.output.duration_ms));
    if (job.output.bitrate_kbps) bits.push(`${job.output.bitrate_kbps} kbit/s`);
  }
  const o = job.options || {};
  const opt = [o.vbr !== undefined && o.vbr !== null ? `VBR ${o.vbr}` : o.bitrate ? `${o.bitrate} kbit/s` : null,
    o.sample_rate ? `${o.sample_rate / 1000} kHz` : null, o.mono ? 'mono' : null].filter(Boolean);
  if (opt.length) bits.push(`asked: ${opt.join(', ')}`);
  bits.push(`created ${fmtTime(job.created_at)}`);
  if (job.attempts > 1) bits.push(plural(job.attempts, 'attempt'));
  parts.meta.textContent = bits.join(' · ');

  parts.error.hidden = !job.error;
  parts.error.textContent = job.error ? `Error: ${job.error}` : '';

  if (prev !== job.status) {
    renderJobActions(entry);
    if (job.status !== 'done') dropPlayer(entry);
    if (live && prev !== null) {
      announce(`${name}: ${STATUS_TEXT[job.status] || job.status}${job.error ? ` — ${job.error}` : ''}.`);
    }
  }
  entry.shownStatus = job.status;
}

function renderJobActions(entry) {
  const { job } = entry;
  const name = job.input?.name || job.id;
  const buttons = [];
  const btn = (label, cls, onClick) => h('button', { type: 'button', class: cls, on: { click: onClick } }, label, sr(` ${name}`));
  if (job.status === 'done') {
    buttons.push(btn('Listen', 'small', (e) => listen(entry, e.currentTarget)));
    buttons.push(btn('Download', 'small', (e) => downloadJob(entry, e.currentTarget)));
  }
  if (job.status === 'failed') buttons.push(btn('Retry', 'small', (e) => retryJob(entry, e.currentTarget)));
  buttons.push(btn('Delete', 'small danger', (e) => deleteJob(entry, e.currentTarget)));
  // Keep keyboard focus in the card when the button that had it goes (e.g. Retry).
  const hadFocus = entry.parts.actions.contains(document.activeElement);
  entry.parts.actions.replaceChildren(...buttons);
  if (hadFocus) buttons[0].focus();
}

/** The MP3 as an object URL (fetched once with the token; `<audio src>` cannot send it). */
async function outputUrl(entry) {
  if (entry.blobUrl) return entry.blobUrl;
  let res;
  try {
    res = await fetch(`/v1/jobs/${entry.job.id}/output`, { headers: authHeader(session?.token) });
  } catch {
    throw new ApiError(0, 'network', 'The server could not be reached.');
  }
  if (!res.ok) throw await errorFrom(res);
  const blob = await res.blob();
  entry.blobUrl = URL.createObjectURL(blob);
  return entry.blobUrl;
}

async function listen(entry, button) {
  const name = entry.job.input?.name || entry.job.id;
  const existing = $('audio', entry.parts.player);
  if (existing) { existing.focus(); existing.play().catch(() => {}); return; }
  await act(button, entry.el, async () => {
    const url = await outputUrl(entry);
    const audio = h('audio', { controls: true, preload: 'metadata', src: url, 'aria-label': `MP3 of ${name}` });
    entry.parts.player.replaceChildren(audio);
    audio.focus();
    // Started by a click, so autoplay rules allow it; a refusal just leaves the controls.
    audio.play().catch(() => {});
  });
}

async function downloadJob(entry, button) {
  await act(button, entry.el, async () => {
    const url = await outputUrl(entry);
    const a = h('a', { href: url, download: mp3Name(entry.job), class: 'visually-hidden' }, 'download');
    document.body.append(a);
    a.click();
    a.remove();
    announce(`Downloading ${mp3Name(entry.job)}.`);
  });
}

async function retryJob(entry, button) {
  await act(button, entry.el, async () => {
    const job = await api('POST', `/v1/jobs/${entry.job.id}/retry`);
    updateJob(entry, job, true);
    watch(job.id);
  });
}

async function deleteJob(entry, button) {
  const name = entry.job.input?.name || entry.job.id;
  if (!confirm(`Delete ${name} and its MP3?`)) return;
  await act(button, entry.el, async () => {
    try {
      await api('DELETE', `/v1/jobs/${entry.job.id}`);
    } catch (e) {
      if (!isMissing(e)) throw e; // already gone: remove it here too
    }
    removeJob(entry, `${name} deleted.`);
  });
}

/** Removes an entry from the list, keeping keyboard focus somewhere sensible. */
function removeJob(entry, message) {
  const next = entry.el.nextElementSibling || entry.el.previousElementSibling;
  const hadFocus = entry.el.contains(document.activeElement);
  dropJob(entry);
  $('#jobs-empty').hidden = jobs.size > 0;
  if (hadFocus) ($('button', next || document.body) || $('#file-input')).focus();
  if (message) announce(message);
}

function dropJob(entry) {
  unwatch(entry.job.id);
  dropPlayer(entry);
  entry.el.remove();
  jobs.delete(entry.job.id);
}

function dropPlayer(entry) {
  entry.parts.player.replaceChildren();
  if (entry.blobUrl) URL.revokeObjectURL(entry.blobUrl);
  entry.blobUrl = null;
}

function resetJobs() {
  for (const entry of Array.from(jobs.values())) dropJob(entry);
  for (const x of activeUploads) x.abort();
  uploadQueue.length = 0;
  $('#uploads').replaceChildren();
  $('#uploads-box').hidden = true;
  jobsCursor = null;
  jobsLoaded = false;
}

// Live status. `GET /v1/jobs/{id}/events` needs the Authorization header, which
// EventSource cannot send, so the stream is read with fetch and parsed here. Browsers
// allow ~6 connections per host over HTTP/1.1, so at most MAX_STREAMS jobs are watched
// at once; the others wait for a free slot (uploads and clicks must not starve).

const MAX_STREAMS = 3;
const streams = new Map(); // job id → AbortController
const waitingStreams = [];

function watch(id) {
  if (streams.has(id) || waitingStreams.includes(id)) return;
  if (streams.size < MAX_STREAMS) openStream(id);
  else waitingStreams.push(id);
}

function unwatch(id) {
  streams.get(id)?.abort();
  streams.delete(id);
  const i = waitingStreams.indexOf(id);
  if (i >= 0) waitingStreams.splice(i, 1);
}

function nextStream() {
  while (streams.size < MAX_STREAMS && waitingStreams.length) {
    const id = waitingStreams.shift();
    if (jobs.has(id)) openStream(id);
  }
}

async function openStream(id, failures = 0) {
  const ctl = new AbortController();
  streams.set(id, ctl);
  try {
    const res = await fetch(`/v1/jobs/${id}/events`, {
      headers: { accept: 'text/event-stream', ...authHeader(session?.token) },
      signal: ctl.signal,
    });
    if (res.status === 404) { const e = jobs.get(id); if (e) removeJob(e, null); return; }
    if (res.status === 401) { if (session) signOut('Your session has ended. Please sign in again.'); return; }
    if (!res.ok) throw await errorFrom(res);
    await readEvents(res.body, (event, data) => onJobEvent(id, event, data));
    failures = 0;
  } catch (e) {
    if (ctl.signal.aborted) return;
    failures += 1;
  } finally {
    if (streams.get(id) === ctl) streams.delete(id);
  }
  // The stream ended (normally after done/failed). If the job is still unfinished,
  // e.g. the connection dropped, watch it again after a pause that grows on failures.
  const entry = jobs.get(id);
  if (entry && !finished(entry.job) && !ctl.signal.aborted && session) {
    const retryAfter = Math.min(30000, 1000 * 2 ** Math.min(failures, 5));
    setTimeout(() => { if (jobs.has(id) && session) watch(id); }, retryAfter);
  }
  nextStream();
}

/** Reads a text/event-stream body, calling `onEvent(name, data)` per dispatched event. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let event = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    const lines = buf.split(/\r\n|\r|\n/);
    buf = lines.pop(); // an unfinished line waits for more
    for (const line of lines) {
      if (line === '') {
        if (data.length) onEvent(event || 'message', data.join('\n'));
        event = '';
        data = [];
      } else if (!line.startsWith(':')) { // ':' starts a comment (keep-alive)
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') event = val;
        else if (field === 'data') data.push(val);
      }
    }
  }
}

function onJobEvent(id, event, data) {
  const entry = jobs.get(id);
  if (!entry) return;
  let payload = null;
  try { payload = data ? JSON.parse(data) : null; } catch { return; }
  if (event === 'status' && payload) {
    updateJob(entry, payload, true);
  } else if (event === 'progress' && payload) {
    const job = { ...entry.job, progress: payload.progress };
    if (job.status === 'queued') job.status = 'converting';
    updateJob(entry, job, true);
  } else if (event === 'deleted') {
    removeJob(entry, `${entry.job.input?.name || id} was deleted.`);
  }
}

// ----------------------------------------------------------------------------------
// tenant admin: users, notifications, usage
// ----------------------------------------------------------------------------------

async function enterUsers() {
  const tbody = $('#users-table tbody');
  await act(null, null, async () => {
    const { users } = await api('GET', '/v1/tenant/users');
    users.sort((a, b) => a.email.localeCompare(b.email));
    tbody.replaceChildren(...users.map(userRow));
    labelCells($('#users-table'));
  });
}

function userRow(user) {
  const self = user.email === session.claims.email;
  const role = h('select', {
    'aria-label': `Role of ${user.email}`,
    on: {
      change: async (e) => {
        const sel = e.currentTarget;
        const before = user.role;
        const ok = await act(sel, $('#view-users'), async () => {
          const { user: u } = await api('PATCH', `/v1/tenant/users/${encodeURIComponent(user.email)}`, { json: { role: sel.value } });
          user.role = u.role;
          say($('#view-users'), `${user.email} is now ${u.role === 'admin' ? 'an admin' : 'a user'} (from their next sign-in).`, 'ok');
          return true;
        });
        if (!ok) sel.value = before;
        sel.focus();
      },
    },
  }, h('option', { value: 'user', selected: user.role === 'user' }, 'User'),
  h('option', { value: 'admin', selected: user.role === 'admin' }, 'Admin'));
  const remove = self
    ? h('span', { class: 'hint', text: 'you' })
    : h('button', {
      type: 'button', class: 'small danger',
      on: {
        click: async (e) => {
          if (!confirm(`Remove the account ${user.email}? Their jobs stay with the organisation.`)) return;
          await act(e.currentTarget, $('#view-users'), async () => {
            await api('DELETE', `/v1/tenant/users/${encodeURIComponent(user.email)}`);
            say($('#view-users'), `${user.email} removed.`, 'ok');
            await enterUsers();
            $('#user-add-email').focus();
          });
        },
      },
    }, 'Remove', sr(` ${user.email}`));
  return h('tr', {},
    h('td', { class: 'break', text: user.email }),
    h('td', {}, role),
    h('td', { text: fmtTime(user.created_at) }),
    h('td', {}, remove));
}

async function addUser(form, submitter, path, after) {
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email || !password) { say(form, 'Enter an e-mail and a password.'); return; }
  await act(submitter, form, async () => {
    const { user } = await api('POST', path, { json: { email, password, role: form.role.value } });
    form.reset();
    say(form, `Account ${user.email} created (${user.role}).`, 'ok');
    await after?.();
  });
}

async function enterNotifications() {
  const form = $('#notif-form');
  $('#notif-generated').hidden = true;
  await act(null, form, async () => {
    const { settings } = await api('GET', '/v1/tenant/notifications');
    fillNotifications(settings);
  });
}

function fillNotifications(s) {
  const form = $('#notif-form');
  form.email.checked = !!s.email;
  form.webhook.checked = !!s.webhook;
  form.webhook_url.value = s.webhook_url || '';
  form.webhook_secret.value = '';
  form.max_per_hour.value = s.max_per_hour ?? '';
  $('#notif-secret-state').textContent = s.webhook_secret_set ? 'A secret is set.' : 'No secret set yet (one is generated when webhooks are turned on).';
}

async function saveNotifications(form, submitter) {
  const change = {
    email: form.email.checked,
    webhook: form.webhook.checked,
    webhook_url: form.webhook_url.value.trim(), // "" removes the URL
  };
  if (form.webhook_secret.value) change.webhook_secret = form.webhook_secret.value;
  const max = form.max_per_hour.value.trim();
  if (max !== '') {
    const n = Number(max);
    if (!Number.isInteger(n) || n < 1) { say(form, 'Messages per hour must be a whole number, at least 1.'); form.max_per_hour.focus(); return; }
    change.max_per_hour = n;
  }
  await act(submitter, form, async () => {
    const res = await api('PUT', '/v1/tenant/notifications', { json: change });
    fillNotifications(res.settings);
    const gen = $('#notif-generated');
    gen.hidden = !res.webhook_secret;
    if (res.webhook_secret) $('#notif-generated-secret').textContent = res.webhook_secret;
    say(form, res.webhook_secret ? 'Saved. A webhook secret was generated: copy it from below.' : 'Saved.', 'ok');
  });
}

async function enterUsage() {
  const body = $('#usage-body');
  await act(null, null, async () => {
    body.replaceChildren(usageView(await api('GET', '/v1/tenant/usage')));
  });
}

/** A USAGE object as a summary and two tables (last 24 hours, last 30 days). */
function usageView(u) {
  const j = u.jobs || {};
  const stat = (label, value) => h('div', { class: 'stat' }, h('dt', { text: label }), h('dd', { text: String(value) }));
  const periods = (caption, rows, fmt) => (rows?.length
    ? table(caption, ['Period', 'Jobs', 'Done', 'Failed', 'CPU seconds', 'In', 'Out'],
      rows.map((r) => h('tr', {},
        h('td', { text: fmt(r.start) }), h('td', { text: String(r.jobs) }), h('td', { text: String(r.done) }),
        h('td', { text: String(r.failed) }), h('td', { text: nf.format(r.cpu_seconds) }),
        h('td', { text: fmtBytes(r.bytes_in) }), h('td', { text: fmtBytes(r.bytes_out) }))))
    : h('p', { class: 'empty', text: 'No activity.' }));
  const hour = new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: 'numeric', minute: '2-digit' });
  const day = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
  return h('div', {},
    h('dl', { class: 'stats' },
      stat('Queued', j.queued ?? 0), stat('Converting', j.converting ?? 0), stat('Done', j.done ?? 0),
      stat('Failed', j.failed ?? 0), stat('Expired', j.expired ?? 0), stat('Running now', u.running ?? 0),
      stat('Stored', fmtBytes(u.stored_bytes))),
    h('h2', { text: 'Last 24 hours' }),
    periods('Usage by hour, last 24 hours', u.hours, (s) => hour.format(new Date(s * 1000))),
    h('h2', { text: 'Last 30 days' }),
    periods('Usage by day, last 30 days', u.days, (s) => day.format(new Date(s * 1000))));
}

// ----------------------------------------------------------------------------------
// operator: tenants and limits
// ----------------------------------------------------------------------------------

/**
 * The tenant limits as the API describes them (`TenantLimits` in /openapi.json, made from
 * the one declaration of the limits in the server): `{key, label, hint, max}` each, the
 * label the description's first clause. Loaded once.
 */
let limitFields = null;
async function loadLimitFields() {
  if (limitFields) return limitFields;
  const spec = await api('GET', '/openapi.json');
  const props = spec?.components?.schemas?.TenantLimits?.properties;
  if (!props) throw new Error('The server’s API description lists no tenant limits.');
  limitFields = Object.entries(props).map(([key, p]) => {
    const hint = p.description || key;
    return { key, label: hint.replace(/( \(.*)?\.?$/, ''), hint, max: p.maximum };
  });
  return limitFields;
}
/** A limit's value as people read it: bytes in decimal units, MiB named. */
const fmtLimit = (v, key) => {
  if (v === undefined || v === null) return '—';
  if (key.endsWith('_bytes')) return fmtBytes(v);
  if (key.endsWith('_mib')) return `${v} MiB`;
  return String(v);
};

let tenantNames = [];
let openTenant = null; // name whose limits are shown
let loadedLimits = {};

async function enterTenants() {
  await act(null, null, loadTenants);
}

async function loadTenants() {
  const [{ tenants }, usage] = await Promise.all([
    api('GET', '/v1/admin/tenants'),
    api('GET', '/v1/admin/usage').catch(() => ({ tenants: [] })),
  ]);
  const byName = new Map((usage.tenants || []).map((u) => [u.tenant, u]));
  tenantNames = tenants.map((t) => t.name);
  fillTenantNames();
  $('#tenants-table tbody').replaceChildren(...tenants.map((t) => tenantRow(t, byName.get(t.name))));
  labelCells($('#tenants-table'));
  if (openTenant && !tenantNames.includes(openTenant)) closeTenant();
}

function fillTenantNames() {
  $('#tenant-names').replaceChildren(...tenantNames.map((n) => h('option', { value: n })));
}

function tenantRow(t, u) {
  const where = $('#view-tenants');
  const selfReg = h('input', {
    type: 'checkbox', checked: !!t.self_register, disabled: t.deleting,
    'aria-label': `Anyone may register in ${t.name}`,
    on: {
      change: async (e) => {
        const box = e.currentTarget;
        const want = box.checked;
        const ok = await act(box, where, async () => {
          await api('PATCH', `/v1/admin/tenants/${encodeURIComponent(t.name)}`, { json: { self_register: want } });
          say(where, `Self-registration ${want ? 'on' : 'off'} for ${t.name}.`, 'ok');
          return true;
        });
        if (!ok) box.checked = !want;
        box.focus();
      },
    },
  });
  const j = u?.jobs;
  const actions = t.deleting
    ? h('span', { class: 'badge status-failed', text: 'being deleted' })
    : h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'small', on: { click: () => showTenant(t.name) } }, 'Limits and accounts', sr(` of ${t.name}`)),
      h('button', {
        type: 'button', class: 'small danger',
        on: {
          click: async (e) => {
            if (!confirm(`Delete tenant ${t.name} with all its users, jobs and files? This cannot be undone.`)) return;
            await act(e.currentTarget, where, async () => {
              await api('DELETE', `/v1/admin/tenants/${encodeURIComponent(t.name)}`);
              say(where, `Tenant ${t.name} is being deleted.`, 'ok');
              await loadTenants();
              $('#tenants-h').focus();
            });
          },
        },
      }, 'Delete', sr(` tenant ${t.name}`)));
  return h('tr', {},
    h('th', { scope: 'row', class: 'break', text: t.name }),
    h('td', {}, selfReg),
    h('td', { text: j ? `${j.queued + j.converting} / ${j.done} / ${j.failed}` : '—' }),
    h('td', { text: u ? fmtBytes(u.stored_bytes) : '—' }),
    h('td', {}, actions));
}

async function showTenant(name) {
  const box = $('#tenant-detail');
  await act(null, $('#view-tenants'), async () => {
    const [res, fields] = await Promise.all([
      api('GET', `/v1/admin/tenants/${encodeURIComponent(name)}/limits`),
      loadLimitFields(),
    ]);
    openTenant = name;
    loadedLimits = res.limits || {};
    $('#tenant-detail-h').textContent = `Tenant ${name}`;
    $('#limits-body').replaceChildren(...fields.map(({ key, label, hint, max }) => {
      const id = `limit-${key}`;
      return h('tr', {},
        h('th', { scope: 'row' }, h('label', { for: id, text: label, title: hint })),
        h('td', {}, h('input', {
          id, name: key, type: 'number', min: 1, max, step: 1, inputmode: 'numeric', class: 'num',
          value: res.limits?.[key] ?? '',
        })),
        h('td', { text: fmtLimit(res.server?.[key], key) }),
        h('td', { text: fmtLimit(res.effective?.[key], key) }));
    }));
    labelCells($('#limits-form table'));
    clearMsg($('#limits-form'));
    clearMsg($('#tenant-admin-form'));
    box.hidden = false;
    $('#tenant-detail-h').focus();
  });
}

function closeTenant() {
  openTenant = null;
  $('#tenant-detail').hidden = true;
}

async function saveLimits(form, submitter) {
  const change = {};
  for (const { key, label, max } of limitFields) {
    const raw = form.elements[key].value.trim();
    const before = loadedLimits[key] ?? null;
    if (raw === '') {
      if (before !== null) change[key] = null; // clears the tenant's own value
      continue;
    }
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || (max !== undefined && n > max)) {
      say(form, `${label}: a whole number, at least 1${max !== undefined ? ` and at most ${max}` : ''} (or empty).`);
      form.elements[key].focus();
      return;
    }
    if (n !== before) change[key] = n;
  }
  if (!Object.keys(change).length) { say(form, 'Nothing changed.', 'ok'); return; }
  await act(submitter, form, async () => {
    await api('PATCH', `/v1/admin/tenants/${encodeURIComponent(openTenant)}/limits`, { json: change });
    const name = openTenant;
    await showTenant(name);
    say(form, `Limits of ${name} saved.`, 'ok');
  });
}

async function createTenant(form, submitter) {
  const name = form.name.value.trim();
  if (!/^[a-z0-9_-]{1,64}$/.test(name)) {
    say(form, 'A tenant name is 1–64 of a–z, 0–9, “-” and “_”.');
    form.name.focus();
    return;
  }
  await act(submitter, form, async () => {
    await api('POST', '/v1/admin/tenants', { json: { name, self_register: form.self_register.checked } });
    form.reset();
    say(form, `Tenant ${name} created.`, 'ok');
    await loadTenants();
  });
}

// ----------------------------------------------------------------------------------
// operator: plugins
// ----------------------------------------------------------------------------------

let plugins = []; // every published component, newest first
let canaryTimer = null;
let canaryRows = new Map(); // scope → {tr, cells, buttons}
let canariesAvailable = true;

async function enterPlugins() {
  canariesAvailable = true;
  await act(null, null, async () => {
    await Promise.all([loadPlugins(), loadActive(), loadHistory(),
      api('GET', '/v1/admin/tenants').then(({ tenants }) => { tenantNames = tenants.map((t) => t.name); fillTenantNames(); })]);
  });
  pollCanaries();
}

function leavePlugins() {
  clearTimeout(canaryTimer);
  canaryTimer = null;
}

async function loadPlugins(select) {
  const filter = $('#plugins-filter').value;
  const all = await api('GET', '/v1/admin/plugins');
  plugins = all.plugins || [];
  const shown = filter ? (await api('GET', `/v1/admin/plugins?stage=${encodeURIComponent(filter)}`)).plugins : plugins;

  // The roll-out form's component list (keeps the choice unless told otherwise).
  const sel = $('#rollout-digest');
  const keep = select || sel.value;
  sel.replaceChildren(...plugins.map((p) => h('option', {
    value: p.digest, selected: p.digest === keep,
  }, `${p.stage} · ${shortDigest(p.digest)}${p.owner ? ` · ${p.owner}’s` : ''} · ${fmtTime(p.published_at)}`)));
  if (!plugins.length) sel.append(h('option', { value: '' }, 'Nothing published yet'));

  $('#plugins-body').replaceChildren(shown.length
    ? table('Published components', ['Digest', 'Stage', 'Owner', 'Size', 'Published', 'Compile', ''],
      shown.map((p) => h('tr', {},
        h('td', {}, h('code', { text: shortDigest(p.digest) })),
        h('td', { text: p.stage }),
        h('td', { text: p.owner || 'operator' }),
        h('td', { text: fmtBytes(p.bytes) }),
        h('td', { text: fmtTime(p.published_at) }),
        h('td', { text: `${p.compile_ms} ms` }),
        h('td', {}, h('button', {
          type: 'button', class: 'small secondary',
          on: { click: () => { sel.value = p.digest; $('#rollout-tenant').focus(); announce(`${shortDigest(p.digest)} chosen for roll-out.`); } },
        }, 'Roll out…', sr(` ${p.stage} ${shortDigest(p.digest)}`))))))
    : h('p', { class: 'empty', text: 'No components published.' }));
}

async function loadActive() {
  const res = await api('GET', '/v1/admin/plugins/active');
  const active = res.active || [];
  const procs = res.processes || [];
  const now = Date.now();
  $('#active-body').replaceChildren(
    active.length
      ? table('Active components', ['Stage', 'For', 'Component'],
        active.map((a) => h('tr', {},
          h('td', { text: a.stage }),
          h('td', { text: a.tenant || 'everyone' }),
          h('td', {}, a.digest ? h('code', { text: shortDigest(a.digest) }) : 'built-in'))))
      : h('p', { class: 'empty', text: 'Every stage runs its built-in component.' }),
    h('p', { class: 'hint' }, `Registry version ${res.version ?? '—'}. `,
      procs.length
        ? `Processes: ${procs.map((p) => `${p.process} at version ${p.version}${p.version === res.version ? ' (current)' : ''}, seen ${Math.max(0, Math.round((now - p.seen_ms) / 1000))} s ago`).join('; ')}.`
        : 'No process has reported yet.'));
}

async function loadHistory() {
  const { history } = await api('GET', '/v1/admin/plugins/history');
  $('#history-body').replaceChildren(history?.length
    ? table('Registry history', ['When', 'Action', 'Stage', 'For', 'Component', 'Reason'],
      history.map((e) => h('tr', {},
        h('td', { text: fmtTime(e.at) }),
        h('td', { text: e.action }),
        h('td', { text: e.stage }),
        h('td', { text: e.tenant || 'everyone' }),
        h('td', {}, e.digest ? h('code', { text: shortDigest(e.digest) }) : 'built-in'),
        h('td', { class: 'break', text: e.reason || '' }))))
    : h('p', { class: 'empty', text: 'Nothing yet.' }));
}

async function publishPlugin(form, submitter) {
  const file = form.file.files[0];
  if (!file) { say(form, 'Choose a .wasm component.'); form.file.focus(); return; }
  const data = new FormData();
  data.append('stage', form.stage.value);
  data.append('file', file, file.name);
  const bar = $('#publish-progress');
  await act(submitter, form, async () => {
    bar.hidden = false;
    bar.value = 0;
    let res;
    try {
      res = await upload('/v1/admin/plugins', data, { onProgress: (f) => { bar.value = f; } });
    } finally {
      bar.hidden = true;
    }
    if (res.status === 401) { signOut('The operator token was refused.'); throw new SessionEnded(); }
    if (res.status !== 201 && res.status !== 200) throw uploadError(res);
    const p = res.body.plugin;
    form.file.value = '';
    say(form, `${res.status === 201 ? 'Published' : 'Already published'}: ${p.stage} ${shortDigest(p.digest)} (${fmtBytes(p.bytes)}, compiled in ${p.compile_ms} ms).`, 'ok');
    await Promise.all([loadPlugins(p.digest), loadHistory()]);
  });
}

/** The roll-out form as `{digest, body}` for activate and canary, or null (message shown). */
function rolloutTarget(form) {
  const digest = form.digest.value;
  const p = plugins.find((x) => x.digest === digest);
  if (!p) { say(form, 'Choose a published component.'); form.digest.focus(); return null; }
  const tenant = form.tenant.value.trim();
  return { p, body: { stage: p.stage, ...(tenant ? { tenant } : {}) } };
}

async function rollout(form, submitter) {
  const t = rolloutTarget(form);
  if (!t) return;
  const scope = `${t.p.stage} for ${t.body.tenant || 'everyone'}`;
  if (submitter?.value === 'canary') {
    const percent = Number(form.percent.value);
    if (!(percent > 0 && percent <= 100)) { say(form, 'The share is a percentage: more than 0, at most 100.'); form.percent.focus(); return; }
    const body = { ...t.body, percent, sticky: form.sticky.value };
    const after = form.promote_after.value.trim();
    if (after) {
      const n = Number(after);
      if (!Number.isInteger(n) || n < 1) { say(form, 'Promote after: a whole number of jobs, at least 1 (or empty).'); form.promote_after.focus(); return; }
      body.promote_after = n;
    }
    await act(submitter, form, async () => {
      try {
        await api('POST', `/v1/admin/plugins/${t.p.digest}/canary`, { json: body });
      } catch (e) {
        if (isMissing(e)) throw new ApiError(404, 'not_found', `Canary rollouts: ${NOT_AVAILABLE}`);
        throw e;
      }
      say(form, `Canary started: ${shortDigest(t.p.digest)} takes ${percent}% of new jobs (${scope}).`, 'ok');
      canariesAvailable = true;
      await Promise.all([pollCanaries(), loadHistory()]);
    });
    return;
  }
  await act(submitter, form, async () => {
    await api('POST', `/v1/admin/plugins/${t.p.digest}/activate`, { json: t.body });
    say(form, `Activated ${shortDigest(t.p.digest)}: ${scope}.`, 'ok');
    await Promise.all([loadActive(), loadHistory()]);
  });
}

async function rollback(form, submitter) {
  const tenant = form.tenant.value.trim();
  const body = { stage: form.stage.value, ...(tenant ? { tenant } : {}) };
  await act(submitter, form, async () => {
    const { active } = await api('POST', '/v1/admin/plugins/rollback', { json: body });
    say(form, `Rolled back: ${active.stage} for ${active.tenant || 'everyone'} now runs ${active.digest ? shortDigest(active.digest) : 'the built-in component'}.`, 'ok');
    await Promise.all([loadActive(), loadHistory()]);
  });
}

// Canaries: polled every 2 s while the view is shown. Rows are keyed by scope and
// updated in place, so keyboard focus on Promote/Abort survives the refresh.

async function pollCanaries() {
  clearTimeout(canaryTimer);
  canaryTimer = null;
  if (current !== 'plugins' || session?.kind !== 'operator') return;
  const body = $('#canaries-body');
  try {
    const { canaries } = await api('GET', '/v1/admin/plugins/canaries');
    renderCanaries(canaries || []);
    $('#canaries-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof SessionEnded) return;
    if (isMissing(e)) {
      canariesAvailable = false;
      canaryRows = new Map();
      body.replaceChildren(h('p', { class: 'empty', text: `Canary rollouts: ${NOT_AVAILABLE}` }));
      $('#canaries-updated').textContent = '';
      return; // no more polling
    }
    say(body.parentElement, errText(e));
  }
  // One timer at a time, also when a manual refresh ran meanwhile; slower when hidden.
  if (current === 'plugins' && canariesAvailable && !canaryTimer) {
    canaryTimer = setTimeout(pollCanaries, document.visibilityState === 'hidden' ? 10000 : 2000);
  }
}

const canaryScope = (c) => `${c.stage}:${c.tenant || ''}`;
const armText = (a) => (a ? `${a.jobs} jobs, ${a.failures} failed, ${a.invalid} invalid, p95 ${a.p95_ms} ms` : '—');

function renderCanaries(list) {
  const body = $('#canaries-body');
  const seen = new Set();
  let tbody = $('tbody', body);
  if (!list.length) {
    if (canaryRows.size) {
      announce('No canary running any more; see the history for how it ended.');
      loadActive().catch(() => {});
      loadHistory().catch(() => {});
    }
    canaryRows = new Map();
    body.replaceChildren(h('p', { class: 'empty', text: 'No canary running.' }));
    return;
  }
  if (!tbody) {
    const t = table('Running canaries', ['For', 'Component', 'Share', 'State', 'Canary', 'Stable', ''], []);
    body.replaceChildren(t);
    tbody = $('tbody', t);
  }
  for (const c of list) {
    const key = canaryScope(c);
    seen.add(key);
    let row = canaryRows.get(key);
    if (!row) {
      const cells = Array.from({ length: 6 }, () => h('td'));
      const who = `${c.stage} canary for ${c.tenant || 'everyone'}`;
      const target = { stage: c.stage, ...(c.tenant ? { tenant: c.tenant } : {}) };
      const end = (verb, label) => h('button', {
        type: 'button', class: `small ${verb === 'abort' ? 'danger' : ''}`,
        on: {
          click: async (e) => {
            if (verb === 'abort' && !confirm(`Abort the ${who}?`)) return;
            await act(e.currentTarget, body.parentElement, async () => {
              try {
                await api('POST', `/v1/admin/plugins/canary/${verb}`, { json: target });
              } catch (err) {
                if (isMissing(err)) throw new ApiError(404, 'not_found', `${label}: ${NOT_AVAILABLE}`);
                throw err;
              }
              say(body.parentElement, `${who}: ${verb === 'promote' ? 'promoted' : 'aborted'}.`, 'ok');
              await Promise.all([pollCanaries(), loadActive(), loadHistory()]);
              $('#canaries-h').setAttribute('tabindex', '-1');
              $('#canaries-h').focus();
            });
          },
        },
      }, label, sr(` the ${who}`));
      const tr = h('tr', {}, cells, h('td', {}, h('div', { class: 'actions' }, end('promote', 'Promote'), end('abort', 'Abort'))));
      row = { tr, cells, state: c.state };
      canaryRows.set(key, row);
      tbody.append(tr);
      labelCells(tbody.closest('table'));
    } else if (row.state !== c.state) {
      announce(`${c.stage} canary for ${c.tenant || 'everyone'}: ${c.state}.`);
      row.state = c.state;
    }
    const [scope, digest, share, state, canary, stable] = row.cells;
    scope.textContent = `${c.stage} · ${c.tenant || 'everyone'}`;
    digest.replaceChildren(h('code', { text: shortDigest(c.digest) }));
    share.textContent = `${c.percent}% by ${c.sticky || 'job'}${c.promote_after ? `, promote after ${c.promote_after}` : ''}`;
    state.textContent = `${c.state}${c.reason ? `: ${c.reason}` : ''} (since ${fmtTime(c.started_at)})`;
    canary.textContent = armText(c.canary);
    stable.textContent = armText(c.stable);
  }
  for (const [key, row] of canaryRows) {
    if (!seen.has(key)) { row.tr.remove(); canaryRows.delete(key); }
  }
}

// ----------------------------------------------------------------------------------
// operator: dead letters, outbox
// ----------------------------------------------------------------------------------

async function enterDead() {
  const sel = $('#dead-tenant');
  await act(null, null, async () => {
    const { tenants } = await api('GET', '/v1/admin/tenants');
    tenantNames = tenants.map((t) => t.name);
    const keep = sel.value || (tenantNames.includes('default') ? 'default' : tenantNames[0]);
    sel.replaceChildren(...tenantNames.map((n) => h('option', { value: n, selected: n === keep }, n)));
    await loadDead();
  });
}

async function loadDead() {
  const tenant = $('#dead-tenant').value;
  const body = $('#dead-body');
  if (!tenant) { body.replaceChildren(h('p', { class: 'empty', text: 'No tenants.' })); return; }
  let entries;
  try {
    ({ entries } = await api('GET', `/v1/admin/dead?tenant=${encodeURIComponent(tenant)}`));
  } catch (e) {
    if (isMissing(e)) { body.replaceChildren(h('p', { class: 'empty', text: `Dead letters: ${NOT_AVAILABLE}` })); return; }
    throw e;
  }
  body.replaceChildren(entries?.length
    ? table(`Dead letters of ${tenant}`, ['When', 'Job', 'Reason', ''],
      entries.map((d) => h('tr', {},
        h('td', { text: fmtTime(d.at) }),
        h('td', {}, h('code', { class: 'break', text: d.job_id })),
        h('td', { class: 'break', text: d.reason || '' }),
        h('td', {}, h('button', {
          type: 'button', class: 'small',
          on: {
            click: async (e) => {
              await act(e.currentTarget, $('#view-dead'), async () => {
                await api('POST', '/v1/admin/dead/replay', { json: { tenant: d.tenant || tenant, job_id: d.job_id } });
                say($('#view-dead'), `Job ${d.job_id} replayed: it is back on the queue.`, 'ok');
                await loadDead();
                $('#dead-h').focus();
              });
            },
          },
        }, 'Replay', sr(` job ${d.job_id}`))))))
    : h('p', { class: 'empty', text: `No dead letters for ${tenant}.` }));
}

async function enterOutbox() {
  $('#outbox-message').hidden = true;
  await act($('#outbox-refresh'), null, loadOutbox);
}

async function loadOutbox() {
  const body = $('#outbox-body');
  let messages;
  try {
    ({ messages } = await api('GET', '/v1/admin/outbox'));
  } catch (e) {
    if (isMissing(e)) { body.replaceChildren(h('p', { class: 'empty', text: `Outbox: ${NOT_AVAILABLE}` })); return; }
    throw e;
  }
  body.replaceChildren(messages?.length
    ? table('Messages in the outbox', ['When', 'To', 'Subject', ''],
      messages.map((m) => h('tr', {},
        h('td', { text: fmtTime(m.at) }),
        h('td', { class: 'break', text: m.to || '' }),
        h('td', { class: 'break', text: m.subject || '' }),
        h('td', {}, h('button', {
          type: 'button', class: 'small secondary',
          on: { click: (e) => openMessage(m, e.currentTarget) },
        }, 'Open', sr(` message “${m.subject || m.name}” to ${m.to || 'unknown'}`))))))
    : h('p', { class: 'empty', text: 'The outbox is empty.' }));
}

async function openMessage(m, button) {
  await act(button, $('#view-outbox'), async () => {
    const text = await api('GET', `/v1/admin/outbox/${encodeURIComponent(m.name)}`);
    $('#outbox-message-h').textContent = m.subject || m.name;
    $('#outbox-message-text').textContent = typeof text === 'string' ? text : JSON.stringify(text, null, 2);
    $('#outbox-message').hidden = false;
    $('#outbox-message-h').focus();
  });
}

// ----------------------------------------------------------------------------------
// wiring
// ----------------------------------------------------------------------------------

/** Submit handler for a form: no page load, the pressed button passed along. */
function onSubmit(sel, fn) {
  const form = $(sel);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    fn(form, e.submitter || $('button[type=submit]', form));
  });
}

function init() {
  onSubmit('#login-form', signIn);
  onSubmit('#operator-form', operatorSignIn);
  $('#signout').addEventListener('click', () => {
    if (activeUploads.size && !confirm('Uploads are still running. Sign out and cancel them?')) return;
    // End the session on the server too: the token stops working everywhere, not only here.
    if (session?.kind !== 'operator' && session?.token) {
      fetch('/v1/auth/logout', { method: 'POST', headers: { authorization: `Bearer ${session.token}` } })
        .catch(() => {});
    }
    signOut('You are signed out.', 'ok');
  });

  setupUploadForm();
  $('#jobs-refresh').addEventListener('click', () => loadJobs(true));
  $('#jobs-more').addEventListener('click', () => loadJobs(false));

  onSubmit('#user-add-form', (f, b) => addUser(f, b, '/v1/tenant/users', enterUsers));
  onSubmit('#notif-form', saveNotifications);

  onSubmit('#tenant-create-form', createTenant);
  onSubmit('#limits-form', saveLimits);
  onSubmit('#tenant-admin-form', (f, b) => addUser(f, b, `/v1/admin/tenants/${encodeURIComponent(openTenant)}/users`));

  onSubmit('#publish-form', publishPlugin);
  onSubmit('#rollout-form', rollout);
  onSubmit('#rollback-form', rollback);
  $('#plugins-filter').addEventListener('change', () => act(null, null, () => loadPlugins()));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && current === 'plugins' && canariesAvailable) pollCanaries();
  });

  onSubmit('#dead-form', (f, b) => act(b, null, loadDead));
  $('#dead-tenant').addEventListener('change', () => act(null, null, loadDead));
  $('#outbox-refresh').addEventListener('click', (e) => act(e.currentTarget, null, loadOutbox));

  // Each form gets its message region up front, so the first message is announced.
  for (const form of $$('form')) if (!$(':scope > .msg', form)) form.append(h('div', { class: 'msg', 'aria-live': 'polite' }));
  // Static scrollable tables: reachable (and scrollable) from the keyboard.
  for (const wrap of $$('.table-wrap')) {
    wrap.tabIndex = 0;
    wrap.setAttribute('role', 'region');
    wrap.setAttribute('aria-label', $('caption', wrap)?.textContent || 'Table');
  }

  window.addEventListener('hashchange', () => route(true));
  restoreSession();
  route(false);
}

init();
