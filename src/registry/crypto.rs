//! AES-256-GCM encryption of stored credentials, byte-compatible with the
//! Node `DataSourceManager` so both can read and write the same column.
//!
//! Stored form: `base64(iv):base64(authTag):base64(ciphertext)` — the order
//! Node produces with `createCipheriv('aes-256-gcm', key, iv)`, then
//! `getAuthTag()`, then the ciphertext. Node wrote 16-byte IVs, so those must
//! be readable; 12-byte IVs (the GCM standard size) are accepted too.

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use std::fmt;

use crate::secret::Secret;

/// Environment variable holding the current key (64 hex characters).
pub const ENCRYPTION_KEY_ENV: &str = "ENCRYPTION_KEY";
/// Environment variable holding the key being rotated away from, if any.
pub const ENCRYPTION_KEY_PREVIOUS_ENV: &str = "ENCRYPTION_KEY_PREVIOUS";

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// IV length we write: matches what the Node code wrote, so a downgrade to
/// the Node tooling can still read rows encrypted by pgtenant.
const WRITE_IV_LEN: usize = 16;

type Gcm12 = AesGcm<Aes256, U12>;
type Gcm16 = AesGcm<Aes256, U16>;

/// Why a key could not be loaded or a value could not be decrypted.
///
/// Each cause gets its own variant because the operator's fix differs
/// (set the env var, fix the key, re-encrypt a plaintext row, restore the
/// previous key). No variant ever carries the key or the stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key environment variable is unset or empty.
    #[error("encryption key missing: set {var} to 64 hex characters (32 bytes)")]
    KeyMissing {
        /// Name of the variable that was looked up.
        var: String,
    },
    /// The key is present but unusable; `reason` describes the shape only.
    #[error("encryption key {which} is invalid: {reason}")]
    KeyInvalid {
        /// Which key (variable name or "current"/"previous").
        which: String,
        /// Shape problem, never the key material.
        reason: String,
    },
    /// The stored value is not `iv:tag:ciphertext` — typically a plaintext
    /// password written straight into the column.
    #[error("stored value is not in encrypted iv:authTag:ciphertext form (was a plaintext value stored? re-encrypt it with `pgtenant encrypt`)")]
    NotEncrypted,
    /// One of the three parts is not valid standard base64.
    #[error("stored value has invalid base64 in its {part} part")]
    BadBase64 {
        /// "iv", "authTag" or "ciphertext".
        part: &'static str,
    },
    /// The IV decoded to a length GCM here does not accept.
    #[error("stored value has a {len}-byte IV; expected 12 or 16 bytes")]
    BadIvLength {
        /// Decoded length.
        len: usize,
    },
    /// The auth tag is not the full 16 bytes Node emits.
    #[error("stored value has a {len}-byte auth tag; expected 16 bytes")]
    BadTagLength {
        /// Decoded length.
        len: usize,
    },
    /// GCM verification failed with every configured key: wrong key (e.g.
    /// rotated without ENCRYPTION_KEY_PREVIOUS) or the value was tampered.
    #[error("decryption failed: authentication tag mismatch (wrong ENCRYPTION_KEY, missing ENCRYPTION_KEY_PREVIOUS after a rotation, or tampered value)")]
    AuthenticationFailed,
    /// The plaintext decrypted fine but is not UTF-8, so it cannot be a
    /// password we wrote.
    #[error("decrypted value is not valid UTF-8")]
    NotUtf8,
    /// Encryption itself failed (only possible with absurd input sizes).
    #[error("encryption failed")]
    EncryptFailed,
}

/// 32 bytes of key material, zeroed on drop and never printed.
#[derive(Clone)]
struct Key([u8; KEY_LEN]);

impl Key {
    fn from_hex(which: &str, hex_str: &str) -> Result<Key, CryptoError> {
        let trimmed = hex_str.trim();
        let invalid = |reason: String| CryptoError::KeyInvalid {
            which: which.to_string(),
            reason,
        };
        if trimmed.len() != KEY_LEN * 2 {
            return Err(invalid(format!(
                "expected 64 hex characters (32 bytes), got {} characters",
                trimmed.len()
            )));
        }
        let mut out = [0u8; KEY_LEN];
        // hex's own error message quotes the offending character; ours does not.
        hex::decode_to_slice(trimmed, &mut out)
            .map_err(|_| invalid("contains non-hex characters".to_string()))?;
        Ok(Key(out))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

/// Which configured key opened a value; lets `rotate-key` and diagnostics
/// tell rows still on the previous key apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// `ENCRYPTION_KEY`.
    Current,
    /// `ENCRYPTION_KEY_PREVIOUS`.
    Previous,
}

/// The current key plus an optional previous one.
///
/// Exists so key rotation needs no downtime: set the new key as current and
/// the old as previous, every row stays readable, then `rotate-key`
/// re-encrypts and the previous key can be dropped.
#[derive(Clone)]
pub struct SecretBox {
    current: Key,
    previous: Option<Key>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("current", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SecretBox {
    /// Reads `ENCRYPTION_KEY` (required) and `ENCRYPTION_KEY_PREVIOUS`
    /// (optional; empty counts as unset) — the same variables the Node app
    /// uses, so one deployment secret serves both.
    pub fn from_env() -> Result<SecretBox, CryptoError> {
        let current = std::env::var(ENCRYPTION_KEY_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| CryptoError::KeyMissing {
                var: ENCRYPTION_KEY_ENV.to_string(),
            })?;
        let previous = std::env::var(ENCRYPTION_KEY_PREVIOUS_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        Self::build(
            ENCRYPTION_KEY_ENV,
            &current,
            ENCRYPTION_KEY_PREVIOUS_ENV,
            previous.as_deref(),
        )
    }

    /// Builds from explicit hex strings, for tests and for callers that get
    /// keys from somewhere other than the environment.
    pub fn from_hex(current: &str, previous: Option<&str>) -> Result<SecretBox, CryptoError> {
        Self::build("current", current, "previous", previous)
    }

    fn build(
        cur_name: &str,
        current: &str,
        prev_name: &str,
        previous: Option<&str>,
    ) -> Result<SecretBox, CryptoError> {
        let current = Key::from_hex(cur_name, current)?;
        let previous = previous.map(|p| Key::from_hex(prev_name, p)).transpose()?;
        Ok(SecretBox { current, previous })
    }

    /// Whether a previous key is configured; `rotate-key` is pointless
    /// without one but still harmless.
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Encrypts with the current key and a fresh random 16-byte IV.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, CryptoError> {
        let mut iv = [0u8; WRITE_IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        encrypt_with(&self.current, &iv, plaintext)
    }

    /// Decrypts with the current key, falling back to the previous one.
    pub fn decrypt(&self, stored: &str) -> Result<Secret, CryptoError> {
        self.decrypt_with_slot(stored).map(|(s, _)| s)
    }

    /// Like [`SecretBox::decrypt`] but also says which key worked.
    pub fn decrypt_with_slot(&self, stored: &str) -> Result<(Secret, KeySlot), CryptoError> {
        let parts = parse_stored(stored)?;
        match decrypt_with(&self.current, &parts) {
            Ok(s) => Ok((s, KeySlot::Current)),
            Err(CryptoError::AuthenticationFailed) => match &self.previous {
                Some(prev) => decrypt_with(prev, &parts).map(|s| (s, KeySlot::Previous)),
                None => Err(CryptoError::AuthenticationFailed),
            },
            Err(e) => Err(e),
        }
    }
}

struct StoredParts {
    iv: Vec<u8>,
    tag: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn parse_stored(stored: &str) -> Result<StoredParts, CryptoError> {
    let mut it = stored.trim().split(':');
    let (Some(iv), Some(tag), Some(ct), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(CryptoError::NotEncrypted);
    };
    if iv.is_empty() || tag.is_empty() {
        return Err(CryptoError::NotEncrypted);
    }
    let dec = |part: &'static str, s: &str| {
        STANDARD
            .decode(s)
            .map_err(|_| CryptoError::BadBase64 { part })
    };
    let parts = StoredParts {
        iv: dec("iv", iv)?,
        tag: dec("authTag", tag)?,
        ciphertext: dec("ciphertext", ct)?,
    };
    if parts.iv.len() != 12 && parts.iv.len() != 16 {
        return Err(CryptoError::BadIvLength {
            len: parts.iv.len(),
        });
    }
    if parts.tag.len() != TAG_LEN {
        return Err(CryptoError::BadTagLength {
            len: parts.tag.len(),
        });
    }
    Ok(parts)
}

fn encrypt_with(key: &Key, iv: &[u8], plaintext: &str) -> Result<String, CryptoError> {
    let mut buf = plaintext.as_bytes().to_vec();
    let k = GenericArray::from_slice(&key.0);
    let tag = match iv.len() {
        12 => Gcm12::new(k).encrypt_in_place_detached(GenericArray::from_slice(iv), b"", &mut buf),
        16 => Gcm16::new(k).encrypt_in_place_detached(GenericArray::from_slice(iv), b"", &mut buf),
        len => return Err(CryptoError::BadIvLength { len }),
    }
    .map_err(|_| CryptoError::EncryptFailed)?;
    Ok(format!(
        "{}:{}:{}",
        STANDARD.encode(iv),
        STANDARD.encode(tag),
        STANDARD.encode(&buf)
    ))
}

fn decrypt_with(key: &Key, parts: &StoredParts) -> Result<Secret, CryptoError> {
    let mut buf = parts.ciphertext.clone();
    let k = GenericArray::from_slice(&key.0);
    let tag = GenericArray::from_slice(&parts.tag);
    let res = if parts.iv.len() == 12 {
        Gcm12::new(k).decrypt_in_place_detached(
            GenericArray::from_slice(&parts.iv),
            b"",
            &mut buf,
            tag,
        )
    } else {
        Gcm16::new(k).decrypt_in_place_detached(
            GenericArray::from_slice(&parts.iv),
            b"",
            &mut buf,
            tag,
        )
    };
    res.map_err(|_| CryptoError::AuthenticationFailed)?;
    String::from_utf8(buf)
        .map(Secret::new)
        .map_err(|_| CryptoError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    /// Produced by Node 20 `createCipheriv('aes-256-gcm', KEY, iv16)`.
    const NODE_IV16: &str =
        "oKGio6SlpqeoqaqrrK2urw==:RaGmZTDJrYoM0qXBt6V40w==:WZBAziu54AaD7WyRmiT/9KM=";
    /// Same, with a 12-byte IV.
    const NODE_IV12: &str = "sLGys7S1tre4ubq7:SP5ridh+Z/CTzdKxYe1IjA==:7SI/x5qolj0+jPKPpCs=";

    fn sb() -> SecretBox {
        SecretBox::from_hex(KEY, None).unwrap()
    }

    #[test]
    fn reads_node_vectors() {
        assert_eq!(
            sb().decrypt(NODE_IV16).unwrap().expose(),
            "s3cr3t-p@ss w0rd!"
        );
        assert_eq!(sb().decrypt(NODE_IV12).unwrap().expose(), "twelve-byte-iv");
    }

    #[test]
    fn deterministic_encrypt_matches_node() {
        let iv = hex::decode("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf").unwrap();
        let out =
            encrypt_with(&Key::from_hex("k", KEY).unwrap(), &iv, "s3cr3t-p@ss w0rd!").unwrap();
        assert_eq!(out, NODE_IV16);
    }

    #[test]
    fn round_trip_writes_16_byte_iv_and_random_ivs() {
        let a = sb().encrypt("pw").unwrap();
        let b = sb().encrypt("pw").unwrap();
        assert_ne!(a, b);
        let iv = STANDARD.decode(a.split(':').next().unwrap()).unwrap();
        assert_eq!(iv.len(), 16);
        assert_eq!(sb().decrypt(&a).unwrap().expose(), "pw");
        assert_eq!(
            sb().decrypt(&sb().encrypt("").unwrap()).unwrap().expose(),
            ""
        );
    }

    #[test]
    fn node_can_decrypt_ours() {
        let node_ok = std::process::Command::new("node")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !node_ok {
            eprintln!("node not installed; skipping cross-check");
            return;
        }
        let enc = sb().encrypt("from-rust ✓").unwrap();
        let script = r#"
const c=require('crypto');const [iv,tag,ct]=process.argv[2].split(':');
const d=c.createDecipheriv('aes-256-gcm',Buffer.from(process.argv[1],'hex'),Buffer.from(iv,'base64'));
d.setAuthTag(Buffer.from(tag,'base64'));
process.stdout.write(d.update(ct,'base64','utf8')+d.final('utf8'));"#;
        let out = std::process::Command::new("node")
            .args(["-e", script, KEY, &enc])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "from-rust ✓");
    }

    #[test]
    fn previous_key_fallback() {
        let old = SecretBox::from_hex(OTHER, None).unwrap();
        let enc = old.encrypt("old-pw").unwrap();
        let rotated = SecretBox::from_hex(KEY, Some(OTHER)).unwrap();
        let (s, slot) = rotated.decrypt_with_slot(&enc).unwrap();
        assert_eq!((s.expose(), slot), ("old-pw", KeySlot::Previous));
        let (_, slot) = rotated
            .decrypt_with_slot(&rotated.encrypt("x").unwrap())
            .unwrap();
        assert_eq!(slot, KeySlot::Current);
        assert!(rotated.has_previous());
    }

    #[test]
    fn wrong_key_and_tamper_fail_authentication() {
        let other = SecretBox::from_hex(OTHER, None).unwrap();
        assert_eq!(
            other.decrypt(NODE_IV16).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        let mut parts: Vec<String> = NODE_IV16.split(':').map(String::from).collect();
        let mut ct = STANDARD.decode(&parts[2]).unwrap();
        ct[0] ^= 1;
        parts[2] = STANDARD.encode(ct);
        assert_eq!(
            sb().decrypt(&parts.join(":")).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
    }

    #[test]
    fn plaintext_value_is_not_echoed() {
        for v in [
            "my-plain-password",
            "a:b",
            "",
            "x:y:z:w",
            "postgres://u:p@h/db",
        ] {
            let err = sb().decrypt(v).unwrap_err();
            assert!(
                matches!(
                    err,
                    CryptoError::NotEncrypted | CryptoError::BadBase64 { .. }
                ),
                "{v}: {err:?}"
            );
            if !v.is_empty() {
                assert!(!err.to_string().contains(v));
                assert!(!format!("{err:?}").contains(v));
            }
        }
        assert_eq!(
            sb().decrypt("plain-password").unwrap_err(),
            CryptoError::NotEncrypted
        );
    }

    #[test]
    fn bad_base64_and_sizes() {
        assert_eq!(
            sb().decrypt("!!!:RaGmZTDJrYoM0qXBt6V40w==:WZBA")
                .unwrap_err(),
            CryptoError::BadBase64 { part: "iv" }
        );
        assert_eq!(
            sb().decrypt("oKGio6SlpqeoqaqrrK2urw==:R$$:WZBA")
                .unwrap_err(),
            CryptoError::BadBase64 { part: "authTag" }
        );
        assert_eq!(
            sb().decrypt("oKGio6SlpqeoqaqrrK2urw==:RaGmZTDJrYoM0qXBt6V40w==:*")
                .unwrap_err(),
            CryptoError::BadBase64 { part: "ciphertext" }
        );
        let iv8 = STANDARD.encode([0u8; 8]);
        assert_eq!(
            sb().decrypt(&format!("{iv8}:RaGmZTDJrYoM0qXBt6V40w==:WZBA"))
                .unwrap_err(),
            CryptoError::BadIvLength { len: 8 }
        );
        let tag12 = STANDARD.encode([0u8; 12]);
        assert_eq!(
            sb().decrypt(&format!("oKGio6SlpqeoqaqrrK2urw==:{tag12}:WZBA"))
                .unwrap_err(),
            CryptoError::BadTagLength { len: 12 }
        );
    }

    #[test]
    fn key_errors() {
        let short = SecretBox::from_hex("abcd", None).unwrap_err();
        assert!(matches!(short, CryptoError::KeyInvalid { .. }));
        assert!(short.to_string().contains("got 4 characters"));
        let nonhex = "zz".repeat(32);
        let err = SecretBox::from_hex(&nonhex, None).unwrap_err();
        assert!(matches!(err, CryptoError::KeyInvalid { .. }));
        assert!(!err.to_string().contains("zz"));
        assert!(matches!(
            SecretBox::from_hex(KEY, Some("nope")).unwrap_err(),
            CryptoError::KeyInvalid { which, .. } if which == "previous"
        ));
        assert!(!format!("{:?}", sb()).contains("0102"));
    }

    #[test]
    fn env_loading() {
        // The only test touching these variables, so no cross-test races.
        std::env::remove_var(ENCRYPTION_KEY_ENV);
        std::env::remove_var(ENCRYPTION_KEY_PREVIOUS_ENV);
        assert_eq!(
            SecretBox::from_env().unwrap_err(),
            CryptoError::KeyMissing {
                var: ENCRYPTION_KEY_ENV.into()
            }
        );
        std::env::set_var(ENCRYPTION_KEY_ENV, "12345");
        assert!(matches!(
            SecretBox::from_env().unwrap_err(),
            CryptoError::KeyInvalid { which, .. } if which == ENCRYPTION_KEY_ENV
        ));
        std::env::set_var(ENCRYPTION_KEY_ENV, KEY);
        std::env::set_var(ENCRYPTION_KEY_PREVIOUS_ENV, OTHER);
        let b = SecretBox::from_env().unwrap();
        assert!(b.has_previous());
        assert_eq!(b.decrypt(NODE_IV16).unwrap().expose(), "s3cr3t-p@ss w0rd!");
        std::env::remove_var(ENCRYPTION_KEY_ENV);
        std::env::remove_var(ENCRYPTION_KEY_PREVIOUS_ENV);
    }
}
