//! Small crypto helpers: random tokens, SHA-256, constant-time comparison and the original's signed-token
//! format `<base64url(json)>.<base64url(hmac-sha256)>` (refresh tokens, OAuth cookies).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub mod envelope;

type HmacSha256 = Hmac<Sha256>;

/// `n` random bytes from the OS CSPRNG, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 as raw bytes (no allocation).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    mac(key, msg)
}

fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// Signs `payload` as `<p>.<s>`.
pub fn sign<T: Serialize>(key: &[u8], payload: &T) -> String {
    let json = serde_json::to_vec(payload).unwrap_or_default();
    let p = URL_SAFE_NO_PAD.encode(json);
    let s = URL_SAFE_NO_PAD.encode(mac(key, p.as_bytes()));
    format!("{p}.{s}")
}

/// Verifies a `<p>.<s>` token's signature in constant time and decodes its payload.
pub fn verify<T: DeserializeOwned>(key: &[u8], token: &str) -> Option<T> {
    let (p, s) = token.split_once('.')?;
    if s.contains('.') {
        return None;
    }
    let given = URL_SAFE_NO_PAD.decode(s).ok()?;
    if !ct_eq(&given, &mac(key, p.as_bytes())) {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(p).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The 32-byte key of [`seal_with_secret`]: SHA-256 over a purpose label and the secret.
fn derived_key(label: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(secret);
    h.finalize().into()
}

/// Seals `plaintext` so that only a holder of `secret` can open it: XChaCha20-Poly1305 under a key
/// derived from `label` and `secret`, the random nonce in front.
pub fn seal_with_secret(label: &str, secret: &[u8], plaintext: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let key = zeroize::Zeroizing::new(derived_key(label, secret));
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.as_ref().into());
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    match cipher.encrypt(&nonce.into(), plaintext) {
        Ok(ct) => [nonce.as_slice(), ct.as_slice()].concat(),
        // Encryption of an in-memory buffer cannot fail; an empty result simply never opens.
        Err(_) => Vec::new(),
    }
}

/// Opens what [`seal_with_secret`] sealed with the same `label` and `secret`.
pub fn open_with_secret(label: &str, secret: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    if sealed.len() < 24 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(24);
    let key = zeroize::Zeroizing::new(derived_key(label, secret));
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.as_ref().into());
    cipher
        .decrypt(chacha20poly1305::XNonce::from_slice(nonce), ct)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct P {
        a: String,
    }

    #[test]
    fn sealed_with_a_secret_opens_only_with_it() {
        let sealed = seal_with_secret("t", b"old-token", b"new-token");
        assert_eq!(
            open_with_secret("t", b"old-token", &sealed).as_deref(),
            Some(&b"new-token"[..])
        );
        assert_eq!(open_with_secret("t", b"other", &sealed), None);
        assert_eq!(open_with_secret("u", b"old-token", &sealed), None);
        assert_eq!(open_with_secret("t", b"old-token", &sealed[..10]), None);
    }

    #[test]
    fn signed_token_round_trip_and_tamper() {
        let t = sign(b"k1", &P { a: "x".into() });
        assert_eq!(verify::<P>(b"k1", &t), Some(P { a: "x".into() }));
        assert_eq!(verify::<P>(b"k2", &t), None);
        let mut bad = t.clone();
        bad.insert(0, 'A');
        assert_eq!(verify::<P>(b"k1", &bad), None);
        assert_eq!(verify::<P>(b"k1", "nodot"), None);
    }
}
