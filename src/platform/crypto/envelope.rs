//! Envelope encryption of connector secrets: a fresh 256-bit DEK per write seals the value with
//! XChaCha20-Poly1305 (AAD = org id || secret id); the DEK is wrapped by the active KEK (AAD = kek id ||
//! org id || secret id), so a row copied to another org or secret id fails to decrypt. Rows written by the
//! original (AES-256-GCM, no AAD) still decrypt. Plaintext and DEK buffers are zeroized after use.

use std::collections::HashMap;

use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

pub const ALG_XCHACHA: &str = "xchacha20poly1305";
pub const ALG_AES_GCM: &str = "aes-256-gcm";
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("secrets KEK is not configured: {0}")]
    NotConfigured(String),
    #[error("no key with id {0} in the keyring")]
    UnknownKek(String),
    #[error("decryption failed")]
    Decrypt,
    #[error("unsupported algorithm {0}")]
    Alg(String),
}

/// What is stored per secret (the columns of `connector_secrets`).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kek_id: String,
    pub enc_alg: String,
    pub dek_ciphertext: Vec<u8>,
    pub dek_iv: Vec<u8>,
    pub dek_tag: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
    pub secret_iv: Vec<u8>,
    pub secret_tag: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealed {{ kek_id: {}, enc_alg: {}, .. }}",
            self.kek_id, self.enc_alg
        )
    }
}

struct Kek(Zeroizing<[u8; 32]>);

/// The active KEK plus decrypt-only previous keys.
pub struct Keyring {
    active: Result<(String, Kek), String>,
    keys: HashMap<String, Kek>,
}

fn decode_key(b64: &str) -> Result<Kek, String> {
    let mut bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| "SECRETS_KEK_BASE64_INVALID: not valid base64".to_string())?;
    if bytes.len() != 32 {
        bytes.zeroize();
        return Err("SECRETS_KEK_BASE64_INVALID: must decode to exactly 32 bytes".into());
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    bytes.zeroize();
    Ok(Kek(key))
}

impl Keyring {
    /// `previous` is `"id1:base64,id2:base64"`. A missing or invalid active key is not an error here:
    /// writes then fail with "not configured" and start-up decides whether that is fatal.
    pub fn new(active_id: &str, active_b64: &str, previous: &str) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for entry in previous.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| "SECRETS_KEK_PREVIOUS entries must be id:base64".to_string())?;
            keys.insert(id.trim().to_string(), decode_key(b64)?);
        }
        let active = if active_b64.trim().is_empty() {
            Err("SECRETS_KEK_BASE64_REQUIRED".to_string())
        } else if active_id.trim().is_empty() {
            Err("SECRETS_KEK_ID is empty".to_string())
        } else {
            decode_key(active_b64).map(|k| (active_id.trim().to_string(), k))
        };
        if let Ok((id, k)) = &active {
            keys.insert(id.clone(), Kek(k.0.clone()));
        }
        Ok(Self { active, keys })
    }

    pub fn active_id(&self) -> Option<&str> {
        self.active.as_ref().ok().map(|(id, _)| id.as_str())
    }

    pub fn active_error(&self) -> Option<&str> {
        self.active.as_ref().err().map(String::as_str)
    }

    pub fn knows(&self, kek_id: &str) -> bool {
        self.keys.contains_key(kek_id)
    }

    fn active(&self) -> Result<(&str, &Kek), EnvelopeError> {
        self.active
            .as_ref()
            .map(|(id, k)| (id.as_str(), k))
            .map_err(|e| EnvelopeError::NotConfigured(e.clone()))
    }

    /// Seals `plaintext` for (org, secret) under a fresh DEK and the active KEK.
    pub fn seal(&self, org: Uuid, secret: Uuid, plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
        let (kek_id, kek) = self.active()?;
        let mut dek = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(dek.as_mut());
        let (secret_ciphertext, secret_iv, secret_tag) =
            xseal(dek.as_slice(), plaintext, &secret_aad(org, secret))?;
        let (dek_ciphertext, dek_iv, dek_tag) = xseal(
            kek.0.as_slice(),
            dek.as_slice(),
            &dek_aad(kek_id, org, secret),
        )?;
        Ok(Sealed {
            kek_id: kek_id.to_string(),
            enc_alg: ALG_XCHACHA.into(),
            dek_ciphertext,
            dek_iv,
            dek_tag,
            secret_ciphertext,
            secret_iv,
            secret_tag,
        })
    }

    fn unwrap_dek(
        &self,
        org: Uuid,
        secret: Uuid,
        s: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let kek = self
            .keys
            .get(&s.kek_id)
            .ok_or_else(|| EnvelopeError::UnknownKek(s.kek_id.clone()))?;
        match s.enc_alg.as_str() {
            ALG_XCHACHA => xopen(
                kek.0.as_slice(),
                &s.dek_ciphertext,
                &s.dek_iv,
                &s.dek_tag,
                &dek_aad(&s.kek_id, org, secret),
            ),
            ALG_AES_GCM => gcm_open(kek.0.as_slice(), &s.dek_ciphertext, &s.dek_iv, &s.dek_tag),
            other => Err(EnvelopeError::Alg(other.to_string())),
        }
    }

    /// Decrypts a stored secret; only the runtime calls this, with the secret's own org context.
    pub fn open(
        &self,
        org: Uuid,
        secret: Uuid,
        s: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let dek = self.unwrap_dek(org, secret, s)?;
        if dek.len() != 32 {
            return Err(EnvelopeError::Decrypt);
        }
        match s.enc_alg.as_str() {
            ALG_XCHACHA => xopen(
                &dek,
                &s.secret_ciphertext,
                &s.secret_iv,
                &s.secret_tag,
                &secret_aad(org, secret),
            ),
            ALG_AES_GCM => gcm_open(&dek, &s.secret_ciphertext, &s.secret_iv, &s.secret_tag),
            other => Err(EnvelopeError::Alg(other.to_string())),
        }
    }

    /// Re-wraps the DEK under the active KEK (the value's ciphertext is untouched). Legacy AES-GCM rows are
    /// re-sealed whole, since their value has no associated data to keep.
    pub fn rewrap(&self, org: Uuid, secret: Uuid, s: &Sealed) -> Result<Sealed, EnvelopeError> {
        if s.enc_alg != ALG_XCHACHA {
            let plain = self.open(org, secret, s)?;
            return self.seal(org, secret, &plain);
        }
        let (kek_id, kek) = self.active()?;
        let dek = self.unwrap_dek(org, secret, s)?;
        let (dek_ciphertext, dek_iv, dek_tag) =
            xseal(kek.0.as_slice(), &dek, &dek_aad(kek_id, org, secret))?;
        Ok(Sealed {
            kek_id: kek_id.to_string(),
            dek_ciphertext,
            dek_iv,
            dek_tag,
            ..s.clone()
        })
    }
}

fn secret_aad(org: Uuid, secret: Uuid) -> Vec<u8> {
    [org.as_bytes().as_slice(), secret.as_bytes().as_slice()].concat()
}

fn dek_aad(kek_id: &str, org: Uuid, secret: Uuid) -> Vec<u8> {
    [
        kek_id.as_bytes(),
        org.as_bytes().as_slice(),
        secret.as_bytes().as_slice(),
    ]
    .concat()
}

type Parts = (Vec<u8>, Vec<u8>, Vec<u8>);

fn xseal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Parts, EnvelopeError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| EnvelopeError::Decrypt)?;
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| EnvelopeError::Decrypt)?;
    let tag = out.split_off(out.len() - TAG_LEN);
    Ok((out, nonce.to_vec(), tag))
}

fn xopen(
    key: &[u8],
    ct: &[u8],
    nonce: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if nonce.len() != 24 || tag.len() != TAG_LEN {
        return Err(EnvelopeError::Decrypt);
    }
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| EnvelopeError::Decrypt)?;
    let joined = [ct, tag].concat();
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: &joined, aad })
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Decrypt)
}

fn gcm_open(
    key: &[u8],
    ct: &[u8],
    iv: &[u8],
    tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if iv.len() != 12 || tag.len() != TAG_LEN {
        return Err(EnvelopeError::Decrypt);
    }
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| EnvelopeError::Decrypt)?;
    let joined = [ct, tag].concat();
    cipher
        .decrypt(aes_gcm::Nonce::from_slice(iv), joined.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn seal_open_and_aad_binding() {
        let ring = Keyring::new("k1", &key(7), "").expect("ring");
        let (org, other_org, id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let s = ring.seal(org, id, b"ghp_secret").expect("seal");
        assert_eq!(s.enc_alg, ALG_XCHACHA);
        assert!(!s.secret_ciphertext.windows(10).any(|w| w == b"ghp_secret"));
        assert_eq!(
            ring.open(org, id, &s).expect("open").as_slice(),
            b"ghp_secret"
        );
        assert_eq!(ring.open(other_org, id, &s), Err(EnvelopeError::Decrypt));
        assert_eq!(
            ring.open(org, Uuid::new_v4(), &s),
            Err(EnvelopeError::Decrypt)
        );
    }

    #[test]
    fn rotation_rewraps_dek_only() {
        let old = Keyring::new("k1", &key(7), "").expect("ring");
        let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
        let s = old.seal(org, id, b"v").expect("seal");
        let new = Keyring::new("k2", &key(9), &format!("k1:{}", key(7))).expect("ring");
        let r = new.rewrap(org, id, &s).expect("rewrap");
        assert_eq!(r.kek_id, "k2");
        assert_eq!(r.secret_ciphertext, s.secret_ciphertext);
        let only_new = Keyring::new("k2", &key(9), "").expect("ring");
        assert_eq!(only_new.open(org, id, &r).expect("open").as_slice(), b"v");
        assert_eq!(
            only_new.open(org, id, &s),
            Err(EnvelopeError::UnknownKek("k1".into()))
        );
    }

    #[test]
    fn missing_or_bad_key_means_not_configured() {
        let ring = Keyring::new("k1", "", "").expect("ring");
        assert!(matches!(
            ring.seal(Uuid::nil(), Uuid::nil(), b"x"),
            Err(EnvelopeError::NotConfigured(_))
        ));
        let ring = Keyring::new("k1", &STANDARD.encode([1u8; 16]), "").expect("ring");
        assert!(ring.active_error().is_some());
        assert!(Keyring::new("k1", &key(1), "broken").is_err());
    }

    #[test]
    fn legacy_aes_gcm_rows_decrypt() {
        use aes_gcm::aead::Aead as _;
        let kek = [7u8; 32];
        let dek = [3u8; 32];
        let seal = |k: &[u8], m: &[u8]| {
            let c = Aes256Gcm::new_from_slice(k).expect("key");
            let mut out = c
                .encrypt(aes_gcm::Nonce::from_slice(&[1u8; 12]), m)
                .expect("enc");
            let tag = out.split_off(out.len() - 16);
            (out, tag)
        };
        let (dct, dtag) = seal(&kek, &dek);
        let (sct, stag) = seal(&dek, b"legacy");
        let s = Sealed {
            kek_id: "k1".into(),
            enc_alg: ALG_AES_GCM.into(),
            dek_ciphertext: dct,
            dek_iv: vec![1; 12],
            dek_tag: dtag,
            secret_ciphertext: sct,
            secret_iv: vec![1; 12],
            secret_tag: stag,
        };
        let ring = Keyring::new("k1", &key(7), "").expect("ring");
        assert_eq!(
            ring.open(Uuid::nil(), Uuid::nil(), &s)
                .expect("open")
                .as_slice(),
            b"legacy"
        );
    }
}
