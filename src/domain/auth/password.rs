//! Password hashing: argon2id (PHC strings) for new hashes; the original's scrypt `<salthex>:<dkhex>` format
//! is still verified so imported users can log in, and is re-hashed on their next successful login.
//! Hashing runs on the blocking pool so it never stalls the async workers.

use std::sync::OnceLock;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

use crate::platform::crypto;

/// Longest password accepted, so hashing cannot be used for DoS.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| HashError)
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of hashing threads, one per core. Each argon2 hash holds ~19 MiB; on tokio's elastic
/// blocking pool a login burst spreads hashes over many threads, and glibc keeps a heap arena per thread,
/// so memory grows with the burst and stays. A fixed pool queues the burst and keeps memory flat.
fn pool() -> Option<&'static std::sync::Mutex<std::sync::mpsc::Sender<Job>>> {
    static POOL: OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vespid-hash-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if spawned.is_err() {
                return None;
            }
        }
        Some(std::sync::Mutex::new(tx))
    })
    .as_ref()
}

/// Runs `f` on the hashing pool (falling back to tokio's blocking pool if threads could not be made).
async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(span.in_scope(f));
    });
    match pool().and_then(|p| p.lock().ok()) {
        Some(sender) => {
            if sender.send(job).is_err() {
                return None;
            }
        }
        None => {
            return tokio::task::spawn_blocking(job)
                .await
                .ok()
                .and(rx.await.ok());
        }
    }
    rx.await.ok()
}

pub async fn hash(password: String) -> Result<String, HashError> {
    on_pool(move || hash_blocking(&password))
        .await
        .ok_or(HashError)?
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok { needs_rehash: bool },
    Wrong,
}

fn verify_blocking(password: &str, stored: &str) -> Verdict {
    if stored.starts_with("$argon2") {
        return match PasswordHash::new(stored) {
            Ok(parsed)
                if Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok() =>
            {
                Verdict::Ok {
                    needs_rehash: false,
                }
            }
            _ => Verdict::Wrong,
        };
    }
    if verify_legacy_scrypt(password, stored) {
        Verdict::Ok { needs_rehash: true }
    } else {
        Verdict::Wrong
    }
}

/// The original format: salt = 16 random bytes as 32 lowercase hex chars, and the KDF salt is that hex
/// string's ASCII; scrypt N=16384, r=8, p=1, 64-byte key. Malformed values never verify.
fn verify_legacy_scrypt(password: &str, stored: &str) -> bool {
    let Some((salt_hex, dk_hex)) = stored.split_once(':') else {
        return false;
    };
    if salt_hex.len() != 32 || !salt_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let Ok(expected) = hex::decode(dk_hex) else {
        return false;
    };
    if expected.len() != 64 {
        return false;
    }
    let Ok(params) = scrypt::Params::new(14, 8, 1, 64) else {
        return false;
    };
    let mut dk = [0u8; 64];
    if scrypt::scrypt(password.as_bytes(), salt_hex.as_bytes(), &params, &mut dk).is_err() {
        return false;
    }
    crypto::ct_eq(&dk, &expected)
}

pub async fn verify(password: String, stored: String) -> Verdict {
    on_pool(move || verify_blocking(&password, &stored))
        .await
        .unwrap_or(Verdict::Wrong)
}

/// A real argon2 hash of a random password: unknown emails are verified against it so that they take as
/// long as wrong passwords (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking(&crypto::random_token(24)).unwrap_or_default())
}

/// A hash nobody can log in with (OAuth-created users).
pub fn unusable_hash() -> String {
    format!("!oauth-only!{}", crypto::random_token(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash_blocking("Password123").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(
            verify_blocking("Password123", &h),
            Verdict::Ok {
                needs_rehash: false
            }
        );
        assert_eq!(verify_blocking("Password124", &h), Verdict::Wrong);
    }

    #[test]
    fn legacy_scrypt_verifies_and_asks_for_rehash() {
        // Built the original's way: salt hex string's ASCII as the KDF salt.
        let salt = "00112233445566778899aabbccddeeff";
        let params = scrypt::Params::new(14, 8, 1, 64).expect("params");
        let mut dk = [0u8; 64];
        scrypt::scrypt(b"Password123", salt.as_bytes(), &params, &mut dk).expect("kdf");
        let stored = format!("{salt}:{}", hex::encode(dk));
        assert_eq!(
            verify_blocking("Password123", &stored),
            Verdict::Ok { needs_rehash: true }
        );
        assert_eq!(verify_blocking("nope", &stored), Verdict::Wrong);
        assert_eq!(verify_blocking("Password123", "garbage"), Verdict::Wrong);
        assert_eq!(
            verify_blocking("Password123", &unusable_hash()),
            Verdict::Wrong
        );
    }
}
