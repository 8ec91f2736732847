//! Randomness for salts and user ids: the OS generator natively, `wasi:random/random` in
//! the component (both through `getrandom`).

/// Fills `bytes` with cryptographically secure random bytes.
pub(crate) fn fill(bytes: &mut [u8]) {
    // Without randomness no salt or id is safe: trapping is the only right answer, and a
    // host that links wasi:random (every wasmtime-wasi host does) never gets here.
    getrandom::fill(bytes).expect("the host provides no secure randomness (wasi:random)");
}
