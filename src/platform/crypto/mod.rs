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

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct P {
        a: String,
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
