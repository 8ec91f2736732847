//! The API's TCP listener, whose connections give hyper's own error answers the API's
//! JSON error shape.
//!
//! hyper answers a request it cannot parse before any handler runs: 414 for a URI over
//! 65534 bytes, 431 for a head over its buffer or with more than 100 header fields. It
//! writes those as a bare head with `content-length: 0`, which no middleware sees. Each
//! accepted connection is wrapped in [`JsonParseErrors`], which recognises exactly that
//! write (a lone head-only 414 or 431: the API itself never answers either) and writes
//! the same answer with a JSON body instead (`uri_too_long`, `headers_too_large`).
//! Everything else passes through untouched.
//!
//! Contact points: `serve` serves the API on [`ApiListener`] (with `tap_io`, so
//! `ConnectInfo<SocketAddr>` still names the peer).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{ApiError, ErrorCode};

/// A TCP listener whose connections answer hyper's parse errors in JSON.
pub struct ApiListener(pub TcpListener);

impl axum::serve::Listener for ApiListener {
    type Io = JsonParseErrors<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonParseErrors::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's head-only 414 and 431 answers into JSON ones.
pub struct JsonParseErrors<IO> {
    inner: IO,
    /// The answer being written in place of hyper's.
    rewrite: Option<Rewrite>,
}

/// An answer written instead of the `replaces` bytes hyper asked to write.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    replaces: usize,
}

impl<IO> JsonParseErrors<IO> {
    pub fn new(inner: IO) -> Self {
        JsonParseErrors {
            inner,
            rewrite: None,
        }
    }
}

/// The longest head hyper writes for a parse error (status line, `content-length: 0`,
/// `date`); anything longer is not one.
const MAX_ERROR_HEAD: usize = 256;

/// The JSON answer to write instead of `head`, if `head` is hyper's whole answer to a
/// request it could not parse: a head alone, 414 or 431, with an empty body.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > MAX_ERROR_HEAD || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let status_line = lines.next().filter(|l| l.starts_with("HTTP/1."))?;
    let error = match status_line.split(' ').nth(1)? {
        "414" => ApiError::Rejected(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            "the request URI is longer than the server accepts (65534 bytes)".into(),
        ),
        "431" => ApiError::Rejected(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            "the request's header fields are too large or too many (at most 100 fields \
             and about 400 KiB)"
                .into(),
        ),
        _ => return None,
    };
    let mut kept = Vec::new();
    let mut empty_body = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            empty_body = value.trim() == "0";
        } else if !name.eq_ignore_ascii_case("connection") {
            kept.push(line);
        }
    }
    if !empty_body {
        return None;
    }
    let body = error.body_bytes();
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n",
        body.len()
    );
    for line in kept {
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<IO: AsyncWrite + Unpin> JsonParseErrors<IO> {
    /// Writes the rest of the rewrite; then reports hyper's bytes as written.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let rewrite = self.rewrite.as_mut().expect("a rewrite is under way");
        while rewrite.written < rewrite.bytes.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &rewrite.bytes[rewrite.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            rewrite.written += n;
        }
        let replaces = rewrite.replaces;
        self.rewrite = None;
        Poll::Ready(Ok(replaces))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonParseErrors<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_none() {
            match json_answer(buf) {
                Some(bytes) => {
                    this.rewrite = Some(Rewrite {
                        bytes,
                        written: 0,
                        replaces: buf.len(),
                    })
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_rewrite(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_some() {
            return this.poll_rewrite(cx);
        }
        // hyper's error answer is one slice: its head, and no body.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && let Some(bytes) = json_answer(only)
        {
            this.rewrite = Some(Rewrite {
                bytes,
                written: 0,
                replaces: only.len(),
            });
            return this.poll_rewrite(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rewrite.is_some() {
            ready!(this.poll_rewrite(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rewrite.is_some() {
            ready!(this.poll_rewrite(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_head_only_414_or_431_is_rewritten() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\
                     date: Mon, 07 Dec 2026 06:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(json_answer(head).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("date: Mon, 07 Dec 2026"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "uri_too_long");

        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(
            String::from_utf8(json_answer(head).unwrap())
                .unwrap()
                .contains("headers_too_large")
        );
        // Not hyper's parse errors: an answer with a body, another status, a body chunk.
        assert!(json_answer(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 5\r\n\r\n").is_none());
        assert!(json_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_answer(b"ID3\x04\x00\r\n\r\n").is_none());
    }
}
