"""A Tapedeck notifier in Python: the `notifier` world of `tapedeck:plugin@0.1.0`.

Turns a finished or failed job into an e-mail for its owner and a JSON webhook for the
tenant, with the same messages as the default (Rust) notifier in components/notifier.

componentize-py generates the `wit_world` package from the WIT when it builds; this
module implements its `notification` export as the class `Notification` and calls the
`mail`, `webhook` and `logging` imports. Nothing here names the project: copy the folder
and change `name` in pyproject.toml.

File names come from uploaders and are untrusted: every place they appear is cleaned for
its context (one line for subjects, HTML escaping, JSON encoding). The host cleans
subjects again; neither side relies on the other.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.notification import (
    JobEvent,
    JobStatus,
    NotifyError_IncompleteEvent,
    NotifyError_Refused,
    Settings,
)
from wit_world.imports import logging, mail, webhook

# Longest file name shown in a subject, in characters.
SUBJECT_NAME_CHARS = 80

# What Rust's `char::is_whitespace` (Unicode White_Space) and `char::is_control`
# (category Cc) accept: spelled out, so the result does not depend on the Unicode
# tables of this Python.
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _is_space_or_control(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F or c in _WHITESPACE


def _trim(s: str) -> str:
    """Rust's `str::trim`: strips Unicode White_Space from both ends."""
    start, end = 0, len(s)
    while start < end and s[start] in _WHITESPACE:
        start += 1
    while end > start and s[end - 1] in _WHITESPACE:
        end -= 1
    return s[start:end]


def one_line(s: str) -> str:
    """`s` on one line: every control character (CR, LF, TAB, ...) and every run of
    whitespace becomes one space."""
    out = []
    space = False
    for c in _trim(s):
        if _is_space_or_control(c):
            space = True
            continue
        if space and out:
            out.append(" ")
        space = False
        out.append(c)
    return "".join(out)


def truncate_chars(s: str, limit: int) -> str:
    return s[:limit] + "…" if len(s) > limit else s


_HTML = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
)


def escape_html(s: str) -> str:
    return s.translate(_HTML)


_ASCII_LOWER = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
)


def human_bytes(n: int) -> str:
    mb = 1024.0 * 1024.0
    if float(n) >= mb:
        return "%.1f MB" % (float(n) / mb)
    return "%d KB" % -(-n // 1024)


def human_duration(ms: int) -> str:
    s = ms // 1000
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return "%d:%02d" % (m, s) if h == 0 else "%d:%02d:%02d" % (h, m, s)


def link_expires(url: str):
    """The `expires` query parameter of a signed download link, in unix seconds: None
    when the link has none, has it twice, or it is not a plain number up to year 9999."""
    last = 253_402_300_799  # 9999-12-31 23:59:59 UTC
    without_fragment = url.split("#", 1)[0]
    if "?" not in without_fragment:
        return None
    query = without_fragment.split("?", 1)[1]
    expires = None
    for pair in query.split("&"):
        if not pair.startswith("expires="):
            continue
        value = pair[len("expires="):]
        if (
            expires is not None
            or not value
            or not all("0" <= c <= "9" for c in value)
        ):
            return None
        expires = int(value)
        if expires > 0xFFFF_FFFF_FFFF_FFFF:
            return None
    return expires if expires is not None and expires <= last else None


def civil_from_days(days: int):
    """The Gregorian date `days` days after 1970-01-01 (Howard Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z % 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return era * 400 + yoe + (1 if month <= 2 else 0), month, day


def utc_minute(secs: int) -> str:
    """Unix time `secs` as "2026-12-06 17:00 UTC" (seconds dropped)."""
    year, month, day = civil_from_days(secs // 86_400)
    t = secs % 86_400
    return "%04d-%02d-%02d %02d:%02d UTC" % (year, month, day, t // 3600, t // 60 % 60)


def advice(reason: str) -> str:
    """What the owner can do about a failure, from the pipeline's reason text."""
    reason = reason.translate(_ASCII_LOWER)
    if "no audio track" in reason:
        return "the file contains no audio. Check that you uploaded the right file."
    if "unsupported audio codec" in reason:
        if "he-aac" in reason or "sbr" in reason:
            return (
                "HE-AAC (also called AAC+, or AAC with SBR) is a kind of AAC this service "
                "cannot decode. Export the audio as AAC-LC (\"plain\" AAC, usually the "
                "default AAC profile) or in another supported format (ALAC, FLAC, MP3 or "
                "PCM), and upload it again."
            )
        if "channel" in reason:
            return (
                "the audio's channel layout is one this service cannot decode. Export the "
                "audio as stereo (or with at most 6 channels, as in 5.1) and upload it again."
            )
        return (
            "the audio is in a format this service cannot decode. It reads AAC-LC "
            "(\"plain\" AAC), ALAC, FLAC, MP3 and PCM audio in MP4, M4A, MOV or 3GP files: "
            "export the audio in one of these formats and upload it again."
        )
    if "drm" in reason:
        return "the file is copy-protected and cannot be converted. Upload an unprotected copy."
    if "corrupt" in reason or "damaged" in reason:
        return "the file seems damaged or incomplete. Upload it again from the original source."
    if "invalid options" in reason:
        return (
            "the conversion options cannot be used with this file. Upload it again with "
            "other options."
        )
    if "limit of" in reason and "exceed" in reason:
        return (
            "the file needs more than this service allows for one conversion. Try a shorter "
            "file or lower settings (bitrate, sample rate, mono), or ask the service's "
            "operator to raise the limit named above."
        )
    return (
        "upload the file again. If it fails again, contact support and quote the job id "
        "below."
    )


def compose_mail(event: JobEvent) -> mail.Message:
    name = one_line(event.input_name)
    short = truncate_chars(name, SUBJECT_NAME_CHARS)
    # Paragraphs: (is_link, text).
    if event.status == JobStatus.DONE:
        url = event.download_url or ""
        what = 'Your file "%s" has been converted to MP3' % name
        facts = []
        if event.duration_ms is not None:
            facts.append(human_duration(event.duration_ms))
        if event.output_bytes is not None:
            facts.append(human_bytes(event.output_bytes))
        if facts:
            what += " (%s)" % ", ".join(facts)
        what += "."
        paragraphs = [(False, what), (False, "Download it here:"), (True, url)]
        # An unsigned link (no `expires`) may need a session: then say nothing about it.
        expires = link_expires(url)
        if expires is not None:
            paragraphs.append(
                (
                    False,
                    "The link works without signing in: anyone who has it can download "
                    "this MP3, until %s." % utc_minute(expires),
                )
            )
        subject = "Your MP3 is ready: %s" % short
    else:
        reason = one_line(event.failure_reason or "")
        paragraphs = [
            (False, 'We could not convert your file "%s" to MP3.' % name),
            (False, "Why: %s." % reason),
            (False, "What to do: %s" % advice(reason)),
        ]
        subject = "Conversion failed: %s" % short
    footer = "Job %s · tenant %s" % (event.job_id, event.tenant)
    text = ["Hello,\n\n"]
    html = ['<!DOCTYPE html><html><body style="font-family:sans-serif"><p>Hello,</p>']
    for is_link, p in paragraphs:
        text.append(p)
        if is_link:
            u = escape_html(p)
            html.append('<p><a href="%s">%s</a></p>' % (u, u))
        else:
            html.append("<p>%s</p>" % escape_html(p))
        text.append("\n\n")
    text.append("-- \n%s\n" % footer)
    html.append(
        '<p style="color:#666;font-size:small">%s</p></body></html>' % escape_html(footer)
    )
    return mail.Message(
        to=_trim(event.owner_email),
        subject=subject,
        text_body="".join(text),
        html_body="".join(html),
    )


def webhook_body(event: JobEvent) -> str:
    """The webhook's JSON document: keys sorted, compact, non-ASCII kept, as serde_json
    writes it for the Rust notifier."""
    status = "done" if event.status == JobStatus.DONE else "failed"
    doc = {
        "type": "job." + status,
        "job_id": event.job_id,
        "tenant": event.tenant,
        "owner_email": event.owner_email,
        "status": status,
        "input_name": event.input_name,
        "output_bytes": event.output_bytes,
        "duration_ms": event.duration_ms,
        "download_url": event.download_url,
        "failure_reason": event.failure_reason,
        "finished_at": event.finished_at,
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def compose(event: JobEvent, settings: Settings):
    """The (mail, webhook request) `settings` ask for, each possibly None. Raises
    ValueError (with what is missing) when the event cannot make a useful message."""
    if event.status == JobStatus.DONE and event.download_url is None:
        raise ValueError("a done job without a download URL")
    if event.status == JobStatus.FAILED and event.failure_reason is None:
        raise ValueError("a failed job without a failure reason")
    message = None
    if settings.email_enabled:
        if not _trim(event.owner_email):
            raise ValueError("no owner e-mail address")
        message = compose_mail(event)
    request = None
    if settings.webhook_enabled and settings.webhook_url is not None:
        request = webhook.Request(url=settings.webhook_url, body=webhook_body(event))
    return message, request


class Notification(exports.Notification):
    def notify(self, event: JobEvent, settings: Settings) -> None:
        try:
            message, request = compose(event, settings)
        except ValueError as e:
            raise Err(NotifyError_IncompleteEvent(str(e)))
        if message is not None:
            try:
                mail.send(message)
            except Err as e:
                raise Err(NotifyError_Refused("e-mail: %s" % e.value.value))
        if request is not None:
            # A refused webhook does not cost the owner their e-mail: log it, go on.
            try:
                webhook.post(request)
            except Err as e:
                logging.log(logging.Level.WARN, "webhook refused: %s" % e.value.value)
