//! E-mail addresses: one canonical form per address, so that `Bob@X.org ` and `bob@x.org`
//! are the same user and the same rate-limit key.
//!
//! Validation is deliberately minimal (the only real check is sending mail): it rejects
//! what cannot be an address or would make a bad store key, nothing more.

use crate::AuthError;

/// RFC 5321's limit on a forward path.
const MAX_LEN: usize = 254;
/// RFC 5321's limit on the local part.
const MAX_LOCAL_LEN: usize = 64;

/// Trims and lower-cases `email`, then checks it has the shape `local@domain.tld`.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    if email.len() > MAX_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthError::InvalidEmail);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(AuthError::InvalidEmail);
    };
    let local_ok = !local.is_empty() && local.len() <= MAX_LOCAL_LEN;
    // At least two labels, none empty: rules out `a@b`, `a@.b`, `a@b.`, `a@b..c` and a
    // second `@`.
    let domain_ok = !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty());
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(AuthError::InvalidEmail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            normalize_email("  Bob.Smith@Example.ORG\n").unwrap(),
            "bob.smith@example.org"
        );
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for bad in [
            "",
            "   ",
            "bob",
            "@example.org",
            "bob@",
            "bob@example",
            "bob@.org",
            "bob@example.",
            "bob@exa..mple.org",
            "bob@x@example.org",
            "bob smith@example.org",
            "bob\u{0}@example.org",
        ] {
            assert_eq!(
                normalize_email(bad),
                Err(AuthError::InvalidEmail),
                "{bad:?}"
            );
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(normalize_email(&long), Err(AuthError::InvalidEmail));
    }
}
