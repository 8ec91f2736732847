//! Signed download links, and the public URL they start with.
//!
//! A notification mail is read in a mail client, where there is no bearer token, so its
//! link carries its own authority: `{public}/v1/jobs/{id}/output?expires=T&sig=S`, where
//! `S` is HMAC-SHA256 under a server key over the job id, the output's blob key and `T`
//! (unix seconds). It downloads that one output until `T`, and nothing once the job is
//! deleted (the job, and so its output key, is looked up on every use).
//!
//! Keys (see redis/README.md): `td:linkkey` holds the HMAC key, created once by whichever
//! process needs it first (`SET NX`); `td:public_url` holds the base URL gateways
//! publish, so workers in a split deployment write links that reach a gateway.

use crate::Pool;
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use sha2::Sha256;

pub use crate::keys::{LINK_KEY, PUBLIC_URL_KEY};

/// Signs and checks download links; cheap to clone.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(..)")
    }
}

impl LinkSigner {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// The deployment's key from Redis, created on first use.
    pub async fn load_or_create(
        conn: &mut (impl redis::aio::ConnectionLike + Send + Sync),
    ) -> redis::RedisResult<Self> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let _: bool = conn.set_nx(LINK_KEY, &fresh).await?;
        let stored: String = conn.get(LINK_KEY).await?;
        let key = hex::decode(stored.trim()).map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "td:linkkey is not hex",
            ))
        })?;
        Ok(Self::new(key))
    }

    fn mac(&self, job_id: &str, output_key: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        // Newline-separated: none of the three may contain one (ids and keys are
        // alphanumeric with `/`, `.`, `-`).
        mac.update(format!("{job_id}\n{output_key}\n{expires}").as_bytes());
        mac
    }

    /// The signature of a link to `output_key` of `job_id` valid until `expires`.
    pub fn sign(&self, job_id: &str, output_key: &str, expires: u64) -> String {
        hex::encode(
            self.mac(job_id, output_key, expires)
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `sig` signs this link and `now` (unix seconds) is before `expires`.
    pub fn verify(
        &self,
        job_id: &str,
        output_key: &str,
        expires: u64,
        sig: &str,
        now: u64,
    ) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        now < expires
            && self
                .mac(job_id, output_key, expires)
                .verify_slice(&sig)
                .is_ok()
    }

    /// The whole link: `{base}/v1/jobs/{job_id}/output?tenant=..&expires=..&sig=..`. The
    /// tenant only says where to look the job up; the output key it signs is the
    /// tenant's own.
    pub fn url(
        &self,
        base: &str,
        tenant: &str,
        job_id: &str,
        output_key: &str,
        expires: u64,
    ) -> String {
        format!(
            "{}/v1/jobs/{job_id}/output?tenant={tenant}&expires={expires}&sig={}",
            base.trim_end_matches('/'),
            self.sign(job_id, output_key, expires)
        )
    }
}

/// Publishes a gateway's public URL for the workers' links.
pub async fn publish_public_url(pool: &Pool, url: &str) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: () = conn.set(PUBLIC_URL_KEY, url).await?;
    Ok(())
}

/// The public URL a gateway published, if any.
pub async fn published_public_url(
    conn: &mut (impl redis::aio::ConnectionLike + Send + Sync),
) -> redis::RedisResult<Option<String>> {
    conn.get(PUBLIC_URL_KEY).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_only_as_signed_and_until_they_expire() {
        let signer = LinkSigner::new(b"k".repeat(32));
        let sig = signer.sign("j1", "out/t/j1.mp3", 1000);
        assert!(signer.verify("j1", "out/t/j1.mp3", 1000, &sig, 999));
        assert!(
            !signer.verify("j1", "out/t/j1.mp3", 1000, &sig, 1000),
            "expired"
        );
        assert!(
            !signer.verify("j2", "out/t/j1.mp3", 1000, &sig, 1),
            "other job"
        );
        assert!(
            !signer.verify("j1", "out/t/j2.mp3", 1000, &sig, 1),
            "other output"
        );
        assert!(
            !signer.verify("j1", "out/t/j1.mp3", 2000, &sig, 1),
            "longer expiry"
        );
        assert!(!signer.verify("j1", "out/t/j1.mp3", 1000, "zz", 1));
        let other = LinkSigner::new(b"x".repeat(32));
        assert!(
            !other.verify("j1", "out/t/j1.mp3", 1000, &sig, 1),
            "other key"
        );
        assert_eq!(
            signer.url("https://a.example/", "t", "j1", "out/t/j1.mp3", 1000),
            format!("https://a.example/v1/jobs/j1/output?tenant=t&expires=1000&sig={sig}")
        );
    }
}
