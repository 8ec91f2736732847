//! E-mail delivery: SMTP through a pooled lettre transport, or `.eml` objects in the
//! outbox of the blob store when no SMTP server is configured (the embedded default).
//!
//! Headers are built by lettre from checked values only: the recipient is parsed as an
//! address (a CR or LF makes it invalid), the subject was cleaned to one line by the
//! plugin host, and lettre encodes it as a header value. No guest text becomes a header
//! of its own.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::DeliveryError;
use tapedeck_blobs::Outbox;
use tapedeck_blobs::outbox::file_safe;
use tapedeck_model::notify::{OutgoingMail, clean_subject};

/// Where mail goes.
#[derive(Clone)]
enum Transport {
    /// An SMTP server; connections are pooled and reused.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `outbox/<notification id>.eml` in the blob store, one object per message.
    Outbox(Outbox),
}

/// Sends the notifier's e-mails.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    /// The `From` of every message.
    from: Mailbox,
}

#[derive(Debug, thiserror::Error)]
pub enum MailConfigError {
    #[error("bad SMTP URL: {0}")]
    SmtpUrl(#[from] lettre::transport::smtp::Error),
    #[error("bad sender address `{0}`")]
    From(String),
}

impl Mailer {
    /// Mail through the SMTP server of `url`: `smtp://host:25` (plain),
    /// `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465` (TLS), with
    /// optional `user:password@` for AUTH.
    pub fn smtp(url: &str, from: &str, timeout: Duration) -> Result<Self, MailConfigError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(8)
                    .idle_timeout(Duration::from_secs(30)),
            )
            .build();
        Ok(Self {
            transport: Transport::Smtp(transport),
            from: parse_from(from)?,
        })
    }

    /// Mail written as `.eml` objects into `outbox`.
    pub fn outbox(outbox: Outbox, from: &str) -> Result<Self, MailConfigError> {
        Ok(Self {
            transport: Transport::Outbox(outbox),
            from: parse_from(from)?,
        })
    }

    /// Builds the RFC 5322 message for `mail`; `id` becomes its Message-ID.
    pub fn build(&self, id: &str, mail: &OutgoingMail) -> Result<Message, DeliveryError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| DeliveryError::Permanent(format!("bad recipient address: {e}")))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(clean_subject(&mail.subject))
            .message_id(Some(format!("<{}@tapedeck>", file_safe(id))));
        let built = match &mail.html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                mail.text_body.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(mail.text_body.clone())),
        };
        built.map_err(|e| DeliveryError::Permanent(format!("cannot build the message: {e}")))
    }

    /// Delivers `mail`. Writing the same `id` to the outbox twice leaves one file.
    pub async fn send(&self, id: &str, mail: &OutgoingMail) -> Result<(), DeliveryError> {
        let message = self.build(id, mail)?;
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => {
                    Err(DeliveryError::Permanent(format!("SMTP refused: {e}")))
                }
                Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
            },
            Transport::Outbox(outbox) => outbox
                .put(&Outbox::name_for(id), message.formatted().into())
                .await
                .map_err(|e| DeliveryError::Transient(format!("writing to the outbox: {e}"))),
        }
    }
}

fn parse_from(from: &str) -> Result<Mailbox, MailConfigError> {
    from.parse()
        .map_err(|_| MailConfigError::From(from.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outbox in a fresh blob store under `dir`.
    fn outbox(dir: &std::path::Path) -> Outbox {
        Outbox::new(tapedeck_blobs::BlobStore::open(dir.to_str().unwrap()).unwrap())
    }

    fn mail(subject: &str) -> OutgoingMail {
        OutgoingMail {
            to: "ann@example.com".into(),
            subject: subject.into(),
            text_body: "hello\n".into(),
            html_body: Some("<p>hello</p>".into()),
        }
    }

    #[test]
    fn crlf_in_a_subject_adds_no_header() {
        let dir = tempfile::tempdir().unwrap();
        let mailer =
            Mailer::outbox(outbox(dir.path()), "Tapedeck <noreply@tapedeck.test>").unwrap();
        let message = mailer
            .build(
                "1-0:0",
                &mail("Ready: a.mp4\r\nBcc: evil@example.com\r\nX-Evil: 1"),
            )
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let headers = text.split("\r\n\r\n").next().unwrap();
        assert!(
            !headers
                .lines()
                .any(|l| l.starts_with("Bcc:") || l.starts_with("X-Evil:")),
            "{headers}"
        );
        assert!(headers.contains("Message-ID: <1-0_0@tapedeck>"));
    }

    #[test]
    fn a_recipient_with_a_line_break_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::outbox(outbox(dir.path()), "noreply@tapedeck.test").unwrap();
        let bad = OutgoingMail {
            to: "ann@example.com\r\nBcc: evil@example.com".into(),
            ..mail("x")
        };
        assert!(matches!(
            mailer.build("1", &bad),
            Err(DeliveryError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn outbox_keeps_one_object_per_notification() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::outbox(outbox(dir.path()), "noreply@tapedeck.test").unwrap();
        mailer.send("7-0:0", &mail("one")).await.unwrap();
        mailer.send("7-0:0", &mail("one")).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["7-0_0.eml"]);
    }
}
