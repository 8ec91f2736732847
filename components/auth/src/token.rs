//! Session tokens: HS256 JWTs with the host's key, checked against the host's clock.
//!
//! jsonwebtoken checks the signature, the algorithm (HS256 only: `none`, RS256 and the
//! rest are refused before any key is used) and the issuer. Expiry is checked here rather
//! than by jsonwebtoken, whose clock would be the guest's own (`wasi:clocks`) instead of
//! the host's `clock` import that issued the token.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Account, AuthError, Role};

/// The `iss` of every token: keeps tokens of this stage apart from anything else the host
/// might sign with the same key.
pub const ISSUER: &str = "tapedeck-auth";
/// Shortest signing key accepted: HS256 wants at least the hash's 256 bits.
pub const MIN_KEY_BYTES: usize = 32;
/// Longest signing key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest token lifetime accepted: 30 days.
pub const MAX_LIFETIME_SECONDS: u32 = 30 * 24 * 3600;
/// Longest token accepted by `verify`; ours are about 350 bytes. Bounds guest work on junk.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// How the host wants tokens made (WIT `token-settings`).
#[derive(Clone)]
pub struct TokenSettings {
    /// The HS256 secret, [`MIN_KEY_BYTES`]..=[`MAX_KEY_BYTES`] bytes.
    pub signing_key: Vec<u8>,
    /// Validity of issued tokens, 1..=[`MAX_LIFETIME_SECONDS`].
    pub token_lifetime_seconds: u32,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field(
                "signing_key",
                &format_args!("<{} bytes>", self.signing_key.len()),
            )
            .field("token_lifetime_seconds", &self.token_lifetime_seconds)
            .finish()
    }
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The bearer's user id.
    pub user_id: String,
    /// The tenant the bearer belongs to.
    pub tenant: String,
    /// Normalised address at the time of login.
    pub email: String,
    /// What the bearer may do.
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
    /// Seconds since the Unix epoch; refused from this second on.
    pub expires_at: u64,
}

/// The JSON payload: registered claim names where they exist.
#[derive(Serialize, Deserialize)]
struct Payload {
    sub: String,
    tenant: String,
    email: String,
    role: Role,
    iat: u64,
    exp: u64,
    iss: String,
}

/// Issues and verifies tokens with one key.
pub struct SessionTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime_seconds: u64,
}

impl SessionTokens {
    /// Checks `settings` and prepares the keys; `Misconfigured` says what is wrong.
    pub fn new(settings: &TokenSettings) -> Result<Self, AuthError> {
        let key = &settings.signing_key;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(AuthError::Misconfigured(format!(
                "signing key has {} bytes, needs {MIN_KEY_BYTES} to {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        let lifetime = settings.token_lifetime_seconds;
        if !(1..=MAX_LIFETIME_SECONDS).contains(&lifetime) {
            return Err(AuthError::Misconfigured(format!(
                "token lifetime {lifetime} s is outside 1 to {MAX_LIFETIME_SECONDS} s"
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked against the host clock in `verify`
        validation.validate_aud = false; // the tenant claim is checked in `verify`
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[ISSUER]);
        Ok(SessionTokens {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            lifetime_seconds: u64::from(lifetime),
        })
    }

    /// A token for `account`, issued at `now` (Unix seconds), and what it says.
    pub fn issue(&self, account: &Account, now: u64) -> (String, Claims) {
        let payload = Payload {
            sub: account.user_id.clone(),
            tenant: account.tenant.clone(),
            email: account.email.clone(),
            role: account.role,
            iat: now,
            exp: now.saturating_add(self.lifetime_seconds),
            iss: ISSUER.to_owned(),
        };
        // HMAC signing of a serialisable struct with a valid secret cannot fail.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &payload, &self.encoding)
            .expect("HS256 signing of plain claims");
        (token, payload.into_claims())
    }

    /// What `token` says if it is genuine, unexpired at `now` and, given `tenant`, of that
    /// tenant.
    pub fn verify(&self, token: &str, tenant: Option<&str>, now: u64) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::InvalidToken("missing".into()));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let payload = jsonwebtoken::decode::<Payload>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::InvalidToken(rejection_reason(e.kind())))?
            .claims;
        if now >= payload.exp {
            return Err(AuthError::ExpiredToken);
        }
        if let Some(expected) = tenant
            && payload.tenant != expected
        {
            return Err(AuthError::InvalidToken("issued for another tenant".into()));
        }
        Ok(payload.into_claims())
    }
}

impl Payload {
    fn into_claims(self) -> Claims {
        Claims {
            user_id: self.sub,
            tenant: self.tenant,
            email: self.email,
            role: self.role,
            issued_at: self.iat,
            expires_at: self.exp,
        }
    }
}

/// A short reason for logs; the client is told only that the token is invalid.
fn rejection_reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "signature does not match".into(),
        ErrorKind::InvalidAlgorithm => "algorithm is not HS256".into(),
        ErrorKind::InvalidIssuer => format!("issuer is not {ISSUER}"),
        ErrorKind::MissingRequiredClaim(claim) => format!("claim `{claim}` missing"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "malformed".into(),
        // Also an unknown `alg` such as "none", which fails to parse in the header.
        ErrorKind::Json(e) => format!("malformed JSON: {e}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use serde_json::json;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn tokens(key: &[u8]) -> SessionTokens {
        SessionTokens::new(&TokenSettings {
            signing_key: key.to_vec(),
            token_lifetime_seconds: 3600,
        })
        .unwrap()
    }

    fn ann() -> Account {
        Account {
            user_id: "3f0c6a9e-8a4b-4c1e-9d2f-0a1b2c3d4e5f".into(),
            tenant: "acme".into(),
            email: "ann@example.org".into(),
            role: Role::User,
        }
    }

    fn payload_json() -> serde_json::Value {
        json!({
            "sub": "3f0c6a9e-8a4b-4c1e-9d2f-0a1b2c3d4e5f", "tenant": "acme",
            "email": "ann@example.org", "role": "admin",
            "iat": NOW, "exp": NOW + 3600, "iss": ISSUER,
        })
    }

    /// `header.payload.signature` from JSON parts and raw signature bytes.
    fn craft(header: serde_json::Value, payload: serde_json::Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string()),
            B64.encode(signature)
        )
    }

    fn sign_with(alg: Algorithm, payload: &serde_json::Value, key: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), payload, &EncodingKey::from_secret(key)).unwrap()
    }

    fn assert_invalid(result: Result<Claims, AuthError>, reason_part: &str) {
        match result {
            Err(AuthError::InvalidToken(reason)) => {
                assert!(
                    reason.contains(reason_part),
                    "reason {reason:?} lacks {reason_part:?}"
                )
            }
            other => panic!("expected invalid-token({reason_part}), got {other:?}"),
        }
    }

    #[test]
    fn issued_token_verifies_and_carries_the_claims() {
        let tokens = tokens(KEY);
        let (token, claims) = tokens.issue(&ann(), NOW);
        assert_eq!(claims.expires_at - claims.issued_at, 3600);
        assert_eq!(
            tokens.verify(&token, Some("acme"), NOW + 1).unwrap(),
            claims
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn missing_or_oversized_tokens_are_refused() {
        let tokens = tokens(KEY);
        assert_invalid(tokens.verify("", None, NOW), "missing");
        assert_invalid(tokens.verify("  ", None, NOW), "missing");
        assert_invalid(tokens.verify("not a jwt", None, NOW), "malformed");
        assert_invalid(tokens.verify(&"a.".repeat(3000), None, NOW), "longer than");
    }

    #[test]
    fn forged_signature_is_refused() {
        let forged = sign_with(
            Algorithm::HS256,
            &payload_json(),
            b"another key, 32 bytes or more!!!",
        );
        assert_invalid(tokens(KEY).verify(&forged, None, NOW), "signature");
    }

    #[test]
    fn alg_none_is_refused() {
        let payload = payload_json();
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "None"}),
            json!({"alg": "NONE"}),
        ] {
            let unsigned = craft(header.clone(), payload.clone(), b"");
            assert_invalid(tokens(KEY).verify(&unsigned, None, NOW), "malformed");
            // With a trailing signature of the right size, too.
            let padded = craft(header, payload.clone(), &[0; 32]);
            assert_invalid(tokens(KEY).verify(&padded, None, NOW), "malformed");
        }
    }

    #[test]
    fn other_algorithms_with_the_same_key_are_refused() {
        let hs512 = sign_with(Algorithm::HS512, &payload_json(), KEY);
        assert_invalid(tokens(KEY).verify(&hs512, None, NOW), "not HS256");
        // RS256 header over an HMAC signature: the classic key-confusion attempt.
        let (good, _) = tokens(KEY).issue(&ann(), NOW);
        let signature = B64.decode(good.rsplit('.').next().unwrap()).unwrap();
        let confused = craft(
            json!({"alg": "RS256", "typ": "JWT"}),
            payload_json(),
            &signature,
        );
        assert_invalid(tokens(KEY).verify(&confused, None, NOW), "not HS256");
    }

    #[test]
    fn tampered_claims_are_refused() {
        let tokens = tokens(KEY);
        let (token, _) = tokens.issue(&ann(), NOW);
        let parts: Vec<&str> = token.split('.').collect();
        // Same header and signature, payload promoted to admin of another tenant.
        let mut payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        payload["role"] = json!("admin");
        payload["tenant"] = json!("globex");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(payload.to_string()),
            parts[2]
        );
        assert_invalid(tokens.verify(&tampered, None, NOW), "signature");
        // Extending the expiry is tampering too.
        let mut payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        payload["exp"] = json!(NOW + 10 * 365 * 86400);
        let extended = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(payload.to_string()),
            parts[2]
        );
        assert_invalid(tokens.verify(&extended, None, NOW), "signature");
    }

    #[test]
    fn genuine_signature_over_wrong_claims_is_refused() {
        let tokens = tokens(KEY);
        let mut foreign = payload_json();
        foreign["iss"] = json!("someone-else");
        assert_invalid(
            tokens.verify(&sign_with(Algorithm::HS256, &foreign, KEY), None, NOW),
            "issuer",
        );
        let mut no_exp = payload_json();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_invalid(
            tokens.verify(&sign_with(Algorithm::HS256, &no_exp, KEY), None, NOW),
            "exp",
        );
        let mut bad_role = payload_json();
        bad_role["role"] = json!("root");
        assert_invalid(
            tokens.verify(&sign_with(Algorithm::HS256, &bad_role, KEY), None, NOW),
            "malformed",
        );
    }

    #[test]
    fn expiry_uses_the_given_clock() {
        let tokens = tokens(KEY);
        let (token, claims) = tokens.issue(&ann(), NOW);
        assert!(tokens.verify(&token, None, claims.expires_at - 1).is_ok());
        assert_eq!(
            tokens.verify(&token, None, claims.expires_at),
            Err(AuthError::ExpiredToken)
        );
        assert_eq!(
            tokens.verify(&token, None, u64::MAX),
            Err(AuthError::ExpiredToken)
        );
    }

    #[test]
    fn settings_debug_hides_the_key() {
        let settings = TokenSettings {
            signing_key: KEY.to_vec(),
            token_lifetime_seconds: 60,
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("32 bytes"));
    }
}
