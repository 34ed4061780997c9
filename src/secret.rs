//! A wrapper that keeps credentials out of logs, errors and `Debug` dumps.

use std::fmt;

/// A sensitive string (a data-source password, a decrypted credential).
///
/// Exists so that a stray `{:?}` on a record, a `tracing` field or an error
/// message can never leak a credential: both `Debug` and `Display` print
/// `<redacted>`, and the only way to get at the value is the explicit
/// [`Secret::expose`], which is easy to grep for in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; callers should drop their own copy as soon as possible.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the plaintext. Call only at the point of use (building a
    /// connection config, encrypting); never to format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string, which callers treat as "no
    /// password" rather than a real credential.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort only (no zeroize dependency): overwrite the heap copy so
        // it does not linger in freed memory; black_box stops the compiler
        // from eliding the dead store.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
