// A Tapedeck notifier in JavaScript: the `notifier` world of `tapedeck:plugin@0.1.0`,
// built into a component by componentize-js (`npm run build`, see README.md).
//
// Turns a finished or failed job into an e-mail for its owner and a JSON webhook for the
// tenant, with the same messages as the default (Rust) notifier in components/notifier.
//
// Bindings, as componentize-js maps the WIT: the export `notification` is the exported
// object of that name; records are objects with camelCase fields; `u64` is a BigInt;
// `option<T>` is T or undefined; enums are strings ('done'); variants are
// `{ tag, val }`; an import's `result` err is thrown (the variant in `error.payload`)
// and an export's err is the value thrown.
//
// File names come from uploaders and are untrusted: every place they appear is cleaned
// for its context (one line for subjects, HTML escaping, JSON encoding). The host cleans
// subjects again; neither side relies on the other.

import { send } from 'tapedeck:plugin/mail@0.1.0';
import { post } from 'tapedeck:plugin/webhook@0.1.0';
import { log } from 'tapedeck:plugin/logging@0.1.0';

/** Longest file name shown in a subject, in characters (code points). */
const SUBJECT_NAME_CHARS = 80;

// Rust's `char::is_whitespace` (Unicode White_Space), spelled out: JS's `trim` and `\s`
// differ (they take U+FEFF, leave U+0085). All in the BMP, so no `u` flag is needed.
const WS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const TRIM = new RegExp(`^[${WS}]+|[${WS}]+$`, 'g');
// Runs of whitespace or control characters (Rust's `char::is_control`, category Cc).
const BREAKS = new RegExp(`[${WS}\\u0000-\\u001f\\u007f-\\u009f]+`, 'g');

/** Rust's `str::trim`: strips Unicode White_Space from both ends. */
function trim(s) {
  return s.replace(TRIM, '');
}

/**
 * `s` on one line: every control character (CR, LF, TAB, ...) and every run of
 * whitespace becomes one space; none at either end.
 */
function oneLine(s) {
  const out = trim(s).replace(BREAKS, ' ');
  const from = out.startsWith(' ') ? 1 : 0;
  const to = out.length > from && out.endsWith(' ') ? out.length - 1 : out.length;
  return out.slice(from, to);
}

/** The first `max` characters (code points, as Rust counts) of `s`, then "…". */
function truncateChars(s, max) {
  if (s.length <= max) return s; // UTF-16 units: never fewer than code points
  let units = 0;
  for (let n = 0; n < max; n++) {
    if (units >= s.length) return s;
    units += s.codePointAt(units) > 0xffff ? 2 : 1;
  }
  return units >= s.length ? s : s.slice(0, units) + '…';
}

function escapeHtml(s) {
  return s
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function asciiLowercase(s) {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

const pad2 = (n) => String(n).padStart(2, '0');

/** Sizes as the Rust notifier prints them: `{:.1} MB` (round half to even) or KB. */
function humanBytes(bytes) {
  const MB = 1n << 20n;
  // Rust divides `bytes as f64`: go through a double too (exact up to 2^53).
  const b = BigInt(Number(bytes));
  if (b < MB) return `${(b + 1023n) / 1024n} KB`;
  let tenths = (b * 10n) / MB;
  const rest = (b * 10n) % MB;
  if (2n * rest > MB || (2n * rest === MB && tenths % 2n === 1n)) tenths += 1n;
  return `${tenths / 10n}.${tenths % 10n} MB`;
}

function humanDuration(ms) {
  const s = BigInt(ms) / 1000n;
  const [h, m, sec] = [s / 3600n, (s / 60n) % 60n, s % 60n];
  return h === 0n ? `${m}:${pad2(sec)}` : `${h}:${pad2(m)}:${pad2(sec)}`;
}

/**
 * The `expires` query parameter of a signed download link, in unix seconds: undefined
 * when the link has none, has it twice, or it is not a plain number up to year 9999.
 */
function linkExpires(url) {
  const LAST = 253402300799n; // 9999-12-31 23:59:59 UTC
  const withoutFragment = url.split('#')[0];
  const q = withoutFragment.indexOf('?');
  if (q < 0) return undefined;
  let expires;
  for (const pair of withoutFragment.slice(q + 1).split('&')) {
    if (!pair.startsWith('expires=')) continue;
    const value = pair.slice('expires='.length);
    if (expires !== undefined || !/^[0-9]+$/.test(value)) return undefined;
    expires = BigInt(value);
    if (expires > 0xffffffffffffffffn) return undefined;
  }
  return expires !== undefined && expires <= LAST ? Number(expires) : undefined;
}

/** The Gregorian date `days` days after 1970-01-01 (Howard Hinnant's algorithm). */
function civilFromDays(days) {
  const div = (a, b) => Math.floor(a / b);
  const z = days + 719468;
  const era = div(z, 146097);
  const doe = z % 146097;
  const yoe = div(doe - div(doe, 1460) + div(doe, 36524) - div(doe, 146096), 365);
  const doy = doe - (365 * yoe + div(yoe, 4) - div(yoe, 100));
  const mp = div(5 * doy + 2, 153);
  const day = doy - div(153 * mp + 2, 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return [era * 400 + yoe + (month <= 2 ? 1 : 0), month, day];
}

/** Unix time `secs` as "2026-12-06 17:00 UTC" (seconds dropped). */
function utcMinute(secs) {
  const [y, mo, d] = civilFromDays(Math.floor(secs / 86400));
  const t = secs % 86400;
  return `${String(y).padStart(4, '0')}-${pad2(mo)}-${pad2(d)} ${pad2(Math.floor(t / 3600))}:${pad2(Math.floor(t / 60) % 60)} UTC`;
}

/** What the owner can do about a failure, from the pipeline's reason text. */
function advice(reason) {
  const r = asciiLowercase(reason);
  if (r.includes('no audio track')) {
    return 'the file contains no audio. Check that you uploaded the right file.';
  }
  if (r.includes('unsupported audio codec')) {
    if (r.includes('he-aac') || r.includes('sbr')) {
      return (
        'HE-AAC (also called AAC+, or AAC with SBR) is a kind of AAC this service cannot ' +
        'decode. Export the audio as AAC-LC ("plain" AAC, usually the default AAC ' +
        'profile) or in another supported format (ALAC, FLAC, MP3 or PCM), and upload ' +
        'it again.'
      );
    }
    if (r.includes('channel')) {
      return (
        "the audio's channel layout is one this service cannot decode. Export the audio " +
        'as stereo (or with at most 6 channels, as in 5.1) and upload it again.'
      );
    }
    return (
      'the audio is in a format this service cannot decode. It reads AAC-LC ' +
      '("plain" AAC), ALAC, FLAC, MP3 and PCM audio in MP4, M4A, MOV or 3GP files: ' +
      'export the audio in one of these formats and upload it again.'
    );
  }
  if (r.includes('drm')) {
    return 'the file is copy-protected and cannot be converted. Upload an unprotected copy.';
  }
  if (r.includes('corrupt') || r.includes('damaged')) {
    return 'the file seems damaged or incomplete. Upload it again from the original source.';
  }
  if (r.includes('invalid options')) {
    return 'the conversion options cannot be used with this file. Upload it again with other options.';
  }
  if (r.includes('limit of') && r.includes('exceed')) {
    return (
      'the file needs more than this service allows for one conversion. Try a shorter ' +
      "file or lower settings (bitrate, sample rate, mono), or ask the service's " +
      'operator to raise the limit named above.'
    );
  }
  return 'upload the file again. If it fails again, contact support and quote the job id below.';
}

function composeMail(event) {
  const name = oneLine(event.inputName);
  const short = truncateChars(name, SUBJECT_NAME_CHARS);
  let subject;
  let paragraphs; // [isLink, text]
  if (event.status === 'done') {
    const url = event.downloadUrl ?? '';
    let what = `Your file "${name}" has been converted to MP3`;
    const facts = [];
    if (event.durationMs != null) facts.push(humanDuration(event.durationMs));
    if (event.outputBytes != null) facts.push(humanBytes(event.outputBytes));
    if (facts.length > 0) what += ` (${facts.join(', ')})`;
    what += '.';
    paragraphs = [
      [false, what],
      [false, 'Download it here:'],
      [true, url],
    ];
    // An unsigned link (no `expires`) may need a session: then say nothing about it.
    const expires = linkExpires(url);
    if (expires !== undefined) {
      paragraphs.push([
        false,
        'The link works without signing in: anyone who has it can download this MP3, ' +
          `until ${utcMinute(expires)}.`,
      ]);
    }
    subject = `Your MP3 is ready: ${short}`;
  } else {
    const reason = oneLine(event.failureReason ?? '');
    paragraphs = [
      [false, `We could not convert your file "${name}" to MP3.`],
      [false, `Why: ${reason}.`],
      [false, `What to do: ${advice(reason)}`],
    ];
    subject = `Conversion failed: ${short}`;
  }
  const footer = `Job ${event.jobId} · tenant ${event.tenant}`;
  let text = 'Hello,\n\n';
  let html = '<!DOCTYPE html><html><body style="font-family:sans-serif"><p>Hello,</p>';
  for (const [isLink, p] of paragraphs) {
    text += p + '\n\n';
    if (isLink) {
      const u = escapeHtml(p);
      html += `<p><a href="${u}">${u}</a></p>`;
    } else {
      html += `<p>${escapeHtml(p)}</p>`;
    }
  }
  text += `-- \n${footer}\n`;
  html += `<p style="color:#666;font-size:small">${escapeHtml(footer)}</p></body></html>`;
  return { to: trim(event.ownerEmail), subject, textBody: text, htmlBody: html };
}

/**
 * The webhook's JSON document, as serde_json writes it for the Rust notifier: keys
 * sorted, compact, non-ASCII kept. Written by hand: JSON.stringify refuses BigInt.
 */
function webhookBody(event) {
  const status = event.status === 'done' ? 'done' : 'failed';
  const str = (s) => (s == null ? 'null' : JSON.stringify(s));
  const num = (n) => (n == null ? 'null' : BigInt(n).toString());
  const fields = [
    ['download_url', str(event.downloadUrl)],
    ['duration_ms', num(event.durationMs)],
    ['failure_reason', str(event.failureReason)],
    ['finished_at', num(event.finishedAt)],
    ['input_name', str(event.inputName)],
    ['job_id', str(event.jobId)],
    ['output_bytes', num(event.outputBytes)],
    ['owner_email', str(event.ownerEmail)],
    ['status', str(status)],
    ['tenant', str(event.tenant)],
    ['type', str(`job.${status}`)],
  ];
  return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
}

/** What `compose` throws when the event cannot make a useful message. */
class Incomplete {
  constructor(why) {
    this.why = why;
  }
}

/**
 * The mail and webhook request `settings` ask for, each possibly undefined. Throws
 * `Incomplete` (saying what is missing) when the event cannot make a useful message.
 */
function compose(event, settings) {
  if (event.status === 'done' && event.downloadUrl == null) {
    throw new Incomplete('a done job without a download URL');
  }
  if (event.status === 'failed' && event.failureReason == null) {
    throw new Incomplete('a failed job without a failure reason');
  }
  let mail;
  if (settings.emailEnabled) {
    if (trim(event.ownerEmail) === '') throw new Incomplete('no owner e-mail address');
    mail = composeMail(event);
  }
  let request;
  if (settings.webhookEnabled && settings.webhookUrl != null) {
    request = { url: settings.webhookUrl, body: webhookBody(event) };
  }
  return { mail, request };
}

/** The error variant of an import's `result`, from what the binding threw. */
function refusal(e) {
  const v = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
  return v && typeof v === 'object' && 'val' in v ? String(v.val) : String(v);
}

export const notification = {
  notify(event, settings) {
    let messages;
    try {
      messages = compose(event, settings);
    } catch (e) {
      if (!(e instanceof Incomplete)) throw e;
      throw { tag: 'incomplete-event', val: e.why };
    }
    if (messages.mail !== undefined) {
      try {
        send(messages.mail);
      } catch (e) {
        throw { tag: 'refused', val: `e-mail: ${refusal(e)}` };
      }
    }
    if (messages.request !== undefined) {
      // A refused webhook does not cost the owner their e-mail: log it, go on.
      try {
        post(messages.request);
      } catch (e) {
        log('warn', `webhook refused: ${refusal(e)}`);
      }
    }
  },
};
