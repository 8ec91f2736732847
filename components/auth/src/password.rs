//! Passwords: the policy, and argon2id hashes in PHC string format.
//!
//! Parameters are OWASP's recommendation (19 MiB, 2 passes, 1 lane): about 20 MiB of guest
//! memory and tens of milliseconds per hash. Verification takes the parameters from the
//! stored hash, so raising them later keeps old hashes valid; a stored hash asking for
//! more than [`MAX_M_COST_KIB`]/[`MAX_T_COST`]/[`MAX_P_COST`] is refused so that a bad
//! record cannot make the guest work without bound.

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use crate::AuthError;

/// Fewest characters (Unicode scalar values) a new password may have.
pub const MIN_CHARS: usize = 8;
/// Most bytes a password may have: bounds the work one call can ask of the guest.
pub const MAX_BYTES: usize = 1024;

/// Memory cost of new hashes, in KiB (19 MiB).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Passes over memory of new hashes.
pub const T_COST: u32 = 2;
/// Lanes of new hashes.
pub const P_COST: u32 = 1;

/// Largest memory cost accepted in a stored hash, in KiB (64 MiB).
pub const MAX_M_COST_KIB: u32 = 64 * 1024;
/// Most passes accepted in a stored hash.
pub const MAX_T_COST: u32 = 10;
/// Most lanes accepted in a stored hash.
pub const MAX_P_COST: u32 = 4;

/// Hash of a random password nobody knows, with exactly the parameters of new hashes:
/// verifying against it when the user does not exist costs what a wrong password costs,
/// so the answer time does not tell whether an address is registered. Regenerate it
/// (`cargo test -p tapedeck-auth -- --ignored print_dummy_hash --nocapture`) when the
/// parameters change; a test checks that they match.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$CBD5ztLeBGE8svjahWSUOA$k+xKAkuekL+ULeKTThgAs6ekNDq69oZdOhp9PfjZovQ";

/// Checks a new password against the policy; the error says which rule it breaks.
pub fn check_policy(password: &str) -> Result<(), AuthError> {
    if password.len() > MAX_BYTES {
        return Err(AuthError::WeakPassword(format!(
            "longer than {MAX_BYTES} bytes"
        )));
    }
    if password.chars().count() < MIN_CHARS {
        return Err(AuthError::WeakPassword(format!(
            "shorter than {MIN_CHARS} characters"
        )));
    }
    Ok(())
}

/// Hashes new passwords and verifies given ones against stored hashes.
pub struct PasswordHasher {
    argon2: Argon2<'static>,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        // The constants are within argon2's bounds (checked by a test), so this cannot fail.
        let params =
            Params::new(M_COST_KIB, T_COST, P_COST, None).expect("valid argon2 parameters");
        PasswordHasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        }
    }
}

impl PasswordHasher {
    /// The PHC string of `password` with a fresh 16-byte random salt.
    pub fn hash(&self, password: &str) -> String {
        let mut salt = [0u8; 16];
        crate::random::fill(&mut salt);
        // 16 bytes is within the salt length PHC allows.
        let salt = SaltString::encode_b64(&salt).expect("a 16-byte salt encodes");
        // Only invalid parameters, salt or output length make hashing fail; ours are valid
        // and a password is bounded by the policy checked before.
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2id hashing with valid parameters")
            .to_string()
    }

    /// Whether `password` matches the stored PHC string `stored`. A hash that cannot be
    /// read, or asks for more work than the bounds, is a store problem, not a mismatch.
    pub fn verify(&self, password: &str, stored: &str) -> Result<bool, AuthError> {
        let unreadable = |why: &str| AuthError::Store(format!("stored password hash {why}"));
        let hash = PasswordHash::new(stored).map_err(|_| unreadable("is not a PHC string"))?;
        if hash.algorithm != Algorithm::Argon2id.ident() {
            return Err(unreadable("is not argon2id"));
        }
        let params = Params::try_from(&hash).map_err(|_| unreadable("has invalid parameters"))?;
        if params.m_cost() > MAX_M_COST_KIB
            || params.t_cost() > MAX_T_COST
            || params.p_cost() > MAX_P_COST
        {
            return Err(unreadable("asks for more work than allowed"));
        }
        Ok(self
            .argon2
            .verify_password(password.as_bytes(), &hash)
            .is_ok())
    }

    /// Verifies `password` against [`DUMMY_HASH`], for a user that does not exist: the
    /// same work as [`verify`](Self::verify) with current parameters, and never a match.
    pub fn verify_unknown_user(&self, password: &str) {
        // DUMMY_HASH is a valid argon2id hash (a test checks it); the result is discarded.
        let _ = self.verify(password, DUMMY_HASH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bounds_length() {
        assert!(matches!(
            check_policy("short"),
            Err(AuthError::WeakPassword(_))
        ));
        assert!(matches!(
            check_policy("1234567"),
            Err(AuthError::WeakPassword(_))
        ));
        assert_eq!(check_policy("12345678"), Ok(()));
        // Characters, not bytes, count towards the minimum: 8 × 'é' is 16 bytes.
        assert!(matches!(
            check_policy("ééé"),
            Err(AuthError::WeakPassword(_))
        ));
        assert_eq!(check_policy(&"é".repeat(8)), Ok(()));
        assert_eq!(check_policy(&"a".repeat(MAX_BYTES)), Ok(()));
        assert!(matches!(
            check_policy(&"a".repeat(MAX_BYTES + 1)),
            Err(AuthError::WeakPassword(_))
        ));
    }

    #[test]
    fn hash_is_argon2id_phc_with_owasp_parameters() {
        let hasher = PasswordHasher::default();
        let phc = hasher.hash("correct horse battery staple");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse battery staple", &phc).unwrap());
        assert!(
            !hasher
                .verify("correct horse battery stapler", &phc)
                .unwrap()
        );
        assert_ne!(
            phc,
            hasher.hash("correct horse battery staple"),
            "salts must differ"
        );
    }

    #[test]
    fn dummy_hash_has_the_parameters_of_new_hashes() {
        let hash = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(hash.algorithm, Algorithm::Argon2id.ident());
        let params = Params::try_from(&hash).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (M_COST_KIB, T_COST, P_COST)
        );
        assert_eq!(hash.hash.unwrap().len(), Params::DEFAULT_OUTPUT_LEN);
        assert!(
            !PasswordHasher::default()
                .verify("password", DUMMY_HASH)
                .unwrap()
        );
    }

    #[test]
    fn unreadable_or_too_costly_stored_hashes_are_store_errors() {
        let hasher = PasswordHasher::default();
        for stored in [
            "plaintext",
            "$argon2i$v=19$m=19456,t=2,p=1$2yMUDYVaP0RlUBSpmxbkEw$CwB3iazXYBLrPiGzJOshR0w12Ox3WzcdEB6bkgiIz7g",
            "$argon2id$v=19$m=4194304,t=2,p=1$2yMUDYVaP0RlUBSpmxbkEw$CwB3iazXYBLrPiGzJOshR0w12Ox3WzcdEB6bkgiIz7g",
        ] {
            assert!(
                matches!(hasher.verify("password", stored), Err(AuthError::Store(_))),
                "{stored}"
            );
        }
    }

    #[test]
    #[ignore = "a tool, not a test: prints a fresh DUMMY_HASH"]
    fn print_dummy_hash() {
        let mut secret = [0u8; 32];
        crate::random::fill(&mut secret);
        let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        println!("{}", PasswordHasher::default().hash(&password));
    }
}
