//! Signed webhook POSTs to a tenant's URL, with the SSRF checks of `address.rs`.
//!
//! Every request carries
//! - `X-Tapedeck-Timestamp`: unix seconds when it was signed;
//! - `X-Tapedeck-Signature`: `v1=` and the hex HMAC-SHA256, keyed with the tenant's
//!   secret, of `"{timestamp}.{body}"`;
//! - `X-Tapedeck-Delivery`: the notification id, the same on every retry.
//!
//! A receiver recomputes the signature ([`verify_signature`]), rejects timestamps older
//! than a few minutes (replays), and may drop delivery ids it has seen (retries).

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::DeliveryError;
use tapedeck_model::net::{AddressPolicy, Refused};
use tapedeck_model::notify::OutgoingWebhook;

pub const TIMESTAMP_HEADER: &str = "x-tapedeck-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tapedeck-signature";
pub const DELIVERY_HEADER: &str = "x-tapedeck-delivery";

type HmacSha256 = Hmac<Sha256>;

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a receiver should reject a webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the timestamp header is missing or not a number")]
    BadTimestamp,
    #[error("the timestamp is {0} s away from now: a replay or a skewed clock")]
    Stale(u64),
    #[error("the signature does not match")]
    BadSignature,
}

/// Checks a received webhook the way a receiver should: the signature over timestamp and
/// body (in constant time), and a timestamp within `tolerance` of `now` (unix seconds).
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: u64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now.abs_diff(ts);
    if skew > tolerance.as_secs() {
        return Err(VerifyError::Stale(skew));
    }
    let given = signature
        .trim()
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::BadSignature)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)
}

/// Posts webhooks; one per tenant URL, checked and pinned each time.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    /// Which resolved addresses a webhook may connect to.
    policy: AddressPolicy,
    /// Connect, send and receive together must finish within this.
    timeout: Duration,
}

impl WebhookClient {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Self {
        Self { policy, timeout }
    }

    /// Resolves `url`'s host and checks every address; returns the one to connect to.
    pub async fn check_url(&self, url: &url::Url) -> Result<SocketAddr, DeliveryError> {
        self.policy
            .check_url(url, self.timeout)
            .await
            .map_err(|refused| match refused {
                Refused::Permanent(why) => DeliveryError::Permanent(why),
                Refused::Transient(why) => DeliveryError::Transient(why),
            })
    }

    pub async fn post(
        &self,
        delivery_id: &str,
        hook: &OutgoingWebhook,
        secret: &[u8],
    ) -> Result<(), DeliveryError> {
        let url = url::Url::parse(&hook.url)
            .map_err(|e| DeliveryError::Permanent(format!("bad webhook URL: {e}")))?;
        let addr = self.check_url(&url).await?;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .user_agent(concat!("tapedeck/", env!("CARGO_PKG_VERSION")));
        if let Some(url::Host::Domain(domain)) = url.host() {
            // Pins the name to the address just checked: no second lookup happens.
            client = client.resolve(domain, addr);
        }
        let client = client
            .build()
            .map_err(|e| DeliveryError::Transient(format!("building the HTTP client: {e}")))?;
        let timestamp = tapedeck_store::queue::now_ms() / 1000;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(secret, timestamp, hook.body.as_bytes()),
            )
            .header(DELIVERY_HEADER, delivery_id)
            .body(hook.body.clone())
            .send()
            .await
            .map_err(|e| {
                DeliveryError::Transient(format!("webhook POST failed: {}", error_chain(&e)))
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(DeliveryError::Transient(format!(
                "webhook answered {status}"
            )))
        } else {
            Err(DeliveryError::Permanent(format!(
                "webhook answered {status}"
            )))
        }
    }
}

/// An error and its sources on one line (reqwest's top level says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_replays() {
        let sig = sign(b"s3cret", 1000, b"{\"a\":1}");
        assert!(sig.starts_with("v1="));
        let ok = verify_signature(
            b"s3cret",
            "1000",
            b"{\"a\":1}",
            &sig,
            1010,
            Duration::from_secs(300),
        );
        assert_eq!(ok, Ok(()));
        let tampered = verify_signature(
            b"s3cret",
            "1000",
            b"{\"a\":2}",
            &sig,
            1010,
            Duration::from_secs(300),
        );
        assert_eq!(tampered, Err(VerifyError::BadSignature));
        let wrong_key = verify_signature(
            b"other",
            "1000",
            b"{\"a\":1}",
            &sig,
            1010,
            Duration::from_secs(300),
        );
        assert_eq!(wrong_key, Err(VerifyError::BadSignature));
        let replay = verify_signature(
            b"s3cret",
            "1000",
            b"{\"a\":1}",
            &sig,
            5000,
            Duration::from_secs(300),
        );
        assert_eq!(replay, Err(VerifyError::Stale(4000)));
        let moved = verify_signature(
            b"s3cret",
            "1001",
            b"{\"a\":1}",
            &sig,
            1010,
            Duration::from_secs(300),
        );
        assert_eq!(moved, Err(VerifyError::BadSignature));
    }

    #[tokio::test]
    async fn internal_and_non_http_urls_are_refused_before_connecting() {
        let client = WebhookClient::new(AddressPolicy::default(), Duration::from_secs(2));
        for url in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://localhost/",
            "http://[::ffff:10.0.0.1]/",
            "ftp://example.com/",
            "file:///etc/passwd",
        ] {
            let url = url::Url::parse(url).unwrap();
            let result = client.check_url(&url).await;
            assert!(
                matches!(result, Err(DeliveryError::Permanent(_))),
                "{url}: {result:?}"
            );
        }
        let allowed = WebhookClient::new(
            AddressPolicy::new(vec!["127.0.0.1".parse().unwrap()]),
            Duration::from_secs(2),
        );
        let url = url::Url::parse("http://127.0.0.1:9/hook").unwrap();
        assert_eq!(
            allowed.check_url(&url).await.unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
    }
}
