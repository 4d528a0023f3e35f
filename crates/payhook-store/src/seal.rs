//! Secrets at rest: merchants' signing secrets (current and previous) and encryption keys are
//! stored sealed with the installation's master key, never in plain text.
//!
//! A sealed value is text: `sealed:v1:<base64 of nonce || ciphertext>`, where the cipher is
//! XChaCha20-Poly1305 (a 24-byte random nonce per value, so random nonces never collide in
//! practice, and a 16-byte tag, so a value altered or opened with another key is refused).
//!
//! How a store uses it (the SQLite store does exactly this; a new store must too):
//! - write: `sealer.seal(secret_text)` into the column; read: `sealer.open(column_text)?`.
//! - at open: [`Sealer::check_value`] is kept in the store's settings under [`CHECK_SETTING`];
//!   [`Sealer::verify_check`] on it at every start tells a wrong or missing master key apart
//!   from a healthy database before anything is read, and [`is_sealed`] finds values written
//!   before sealing existed, which are sealed in place once.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::fmt;
use std::sync::Arc;

/// The prefix of every sealed value (format version 1).
pub const PREFIX: &str = "sealed:v1:";
/// The settings key under which a store keeps [`Sealer::check_value`].
pub const CHECK_SETTING: &str = "master_key_check";
/// The plaintext sealed in the check value.
const CHECK_TEXT: &str = "payhook master key check v1";
const NONCE_LEN: usize = 24;
/// Master keys are 32 random bytes.
pub const KEY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be the base64 of exactly 32 bytes")]
    BadKey,
    #[error("the value is not sealed (expected the \"sealed:v1:\" form)")]
    NotSealed,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open with this master key (wrong key or altered value)")]
    WrongKey,
}

/// Seals and opens secrets with the master key. Cheap to clone; `Debug` never shows the key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<master key redacted>)")
    }
}

/// Whether a stored value is already in the sealed form.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

impl Sealer {
    pub fn new(key: &[u8; KEY_LEN]) -> Sealer {
        Sealer { cipher: Arc::new(XChaCha20Poly1305::new(&Key::from(*key))) }
    }

    /// A master key given as base64 (standard or URL-safe alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Sealer, SealError> {
        let text = text.trim();
        let bytes = B64
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .map_err(|_| SealError::BadKey)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Sealer::new(&key))
    }

    /// A fresh random master key, as base64 (what `serve` writes to the key file).
    pub fn generate_key() -> String {
        let mut key = [0u8; KEY_LEN];
        rand::thread_rng().fill_bytes(&mut key);
        B64.encode(key)
    }

    /// A sealer with a fresh random key (tests, throw-away stores).
    pub fn random() -> Sealer {
        let mut key = [0u8; KEY_LEN];
        rand::thread_rng().fill_bytes(&mut key);
        Sealer::new(&key)
    }

    /// `sealed:v1:<base64(nonce || ciphertext)>`; a fresh nonce every time.
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(&XNonce::from(nonce), plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// The plaintext of a sealed value.
    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let b64 = sealed.strip_prefix(PREFIX).ok_or(SealError::NotSealed)?;
        let bytes = B64.decode(b64).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }

    /// A value to keep beside the sealed data: only the same master key opens it.
    pub fn check_value(&self) -> String {
        self.seal(CHECK_TEXT)
    }

    /// Whether `check` (a stored [`Sealer::check_value`]) was made with this master key.
    pub fn verify_check(&self, check: &str) -> bool {
        self.open(check).is_ok_and(|text| text == CHECK_TEXT)
    }
}

/// What a store does about the master key when it opens, given the check value it holds
/// (`stored`) and whether any secret in it is sealed already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    /// The stored check value was made with this key.
    Matches,
    /// First use: record this check value (in the transaction that looked).
    Record(String),
}

/// The master-key rule both stores apply at open: a check value made with another key is
/// refused; so are sealed secrets without a check value (they were sealed with a key nobody
/// can vouch for); otherwise a missing check value is recorded.
pub(crate) fn check_master_key(
    sealer: &Sealer,
    stored: Option<&str>,
    any_sealed: bool,
) -> Result<KeyCheck, crate::StoreError> {
    let refuse = |why: &str| Err(crate::StoreError::MasterKey(why.to_owned()));
    match stored {
        Some(check) if sealer.verify_check(check) => Ok(KeyCheck::Matches),
        Some(_) => refuse("the master key does not open this database's sealed secrets"),
        None if any_sealed => refuse("the database holds sealed secrets but no master key check"),
        None => Ok(KeyCheck::Record(sealer.check_value())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn seal_then_open_round_trips_and_hides_the_plaintext() {
        let sealer = Sealer::random();
        let sealed = sealer.seal(SECRET);
        assert!(sealed.starts_with(PREFIX) && is_sealed(&sealed));
        assert!(!sealed.contains(SECRET) && !sealed.contains("MfKQ9r8G"));
        assert_eq!(sealer.open(&sealed), Ok(SECRET.to_owned()));
        assert_ne!(sealer.seal(SECRET), sealed, "a fresh nonce every time");
    }

    #[test]
    fn another_key_or_an_altered_value_does_not_open() {
        let (a, b) = (Sealer::random(), Sealer::random());
        let sealed = a.seal(SECRET);
        assert_eq!(b.open(&sealed), Err(SealError::WrongKey));
        let mut bytes = B64.decode(&sealed[PREFIX.len()..]).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{PREFIX}{}", B64.encode(bytes));
        assert_eq!(a.open(&altered), Err(SealError::WrongKey));
        assert_eq!(a.open(SECRET), Err(SealError::NotSealed));
        assert_eq!(a.open("sealed:v1:!!"), Err(SealError::Malformed));
        assert_eq!(a.open("sealed:v1:AAAA"), Err(SealError::Malformed));
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_only() {
        let key = Sealer::generate_key();
        let sealer = Sealer::from_base64(&key).expect("generated keys parse");
        let again = Sealer::from_base64(&format!("  {key}\n")).expect("whitespace is trimmed");
        assert_eq!(again.open(&sealer.seal("x")), Ok("x".to_owned()));
        assert_eq!(Sealer::from_base64("c2hvcnQ=").err(), Some(SealError::BadKey));
        assert_eq!(Sealer::from_base64("not base64 at all").err(), Some(SealError::BadKey));
    }

    #[test]
    fn the_check_value_tells_keys_apart() {
        let (a, b) = (Sealer::random(), Sealer::random());
        let check = a.check_value();
        assert!(a.verify_check(&check));
        assert!(!b.verify_check(&check));
        assert!(!a.verify_check(&a.seal("something else")));
    }

    #[test]
    fn debug_shows_no_key() {
        let key = Sealer::generate_key();
        let text = format!("{:?}", Sealer::from_base64(&key).expect("key"));
        assert!(!text.contains(&key) && text.contains("redacted"), "{text}");
    }
}
