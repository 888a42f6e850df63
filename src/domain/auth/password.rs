//! Password hashing: argon2id (PHC strings) for new hashes; the original's scrypt `<salthex>:<dkhex>` format
//! is still verified so imported users can log in, and is re-hashed on their next successful login.
//! Hashing runs on the blocking pool so it never stalls the async workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use argon2::password_hash::{
    self, rand_core::OsRng, Output, ParamsString, PasswordHash, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::platform::crypto;

/// Longest password accepted, so hashing cannot be used for DoS.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

/// Argon2's working memory (m_cost KiB: 19 MiB with the default parameters). A hashing thread keeps it
/// across the hashes of a burst, so the memory is not mapped, faulted in and zeroed again for every hash,
/// and gives it back as soon as no hash is queued. Argon2's first pass writes every block before any is
/// read, so reused blocks need no clearing.
#[derive(Default)]
struct Scratch(Vec<Block>);

impl Scratch {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        // Never empty here; an empty slice would only make argon2 fail with MemoryTooLittle.
        self.0.get_mut(..count).unwrap_or_default()
    }

    fn release(&mut self) {
        self.0 = Vec::new();
    }
}

/// Argon2 of `password` and `salt` (the PHC salt, B64) into `out`, in `scratch`'s memory.
fn argon2_into(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    out: &mut [u8],
    scratch: &mut Scratch,
) -> password_hash::Result<()> {
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let blocks = scratch.blocks(argon2.params().block_count());
    argon2.hash_password_into_with_memory(password, salt, out, blocks)?;
    Ok(())
}

/// A new argon2id PHC string with the default parameters and a random salt: the same string
/// `PasswordHasher::hash_password` makes, computed in `scratch`.
fn hash_blocking(password: &str, scratch: &mut Scratch) -> Result<String, HashError> {
    hash_with_salt(password, &SaltString::generate(&mut OsRng), scratch)
}

fn hash_with_salt(
    password: &str,
    salt: &SaltString,
    scratch: &mut Scratch,
) -> Result<String, HashError> {
    let (algorithm, version, params) = (Algorithm::Argon2id, Version::V0x13, Params::DEFAULT);
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        &argon2,
        password.as_bytes(),
        salt.as_salt(),
        &mut out,
        scratch,
    )
    .map_err(|_| HashError)?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(|_| HashError)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|_| HashError)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the argon2 PHC string `stored` (any argon2 variant, version and parameters
/// the string names), computed in `scratch`; the comparison is constant-time (`Output`'s equality).
fn verify_argon2(password: &str, stored: &str, scratch: &mut Scratch) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut buf = [0u8; Output::MAX_LENGTH];
    let Some(out) = buf.get_mut(..expected.len()) else {
        return false;
    };
    if argon2_into(&argon2, password.as_bytes(), salt, out, scratch).is_err() {
        return false;
    }
    Output::new(out).is_ok_and(|computed| computed == expected)
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// Jobs sent to the pool and not yet taken by a thread.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// A fixed pool of hashing threads, one per core: a login or signup burst queues here instead of
/// spreading over tokio's elastic blocking pool, so the pool holds at most one argon2 working memory per
/// core at a time. Each thread reuses its memory while hashes are queued and frees it when the queue is empty;
/// whether freed memory goes back to the OS is the allocator's business (see `main.rs`).
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
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        QUEUED.fetch_sub(1, Ordering::AcqRel);
                        job(&mut scratch);
                        if QUEUED.load(Ordering::Acquire) == 0 {
                            scratch.release();
                        }
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
async fn on_pool<T: Send + 'static>(
    f: impl FnOnce(&mut Scratch) -> T + Send + 'static,
) -> Option<T> {
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |scratch| {
        let _ = tx.send(span.in_scope(|| f(scratch)));
    });
    match pool().and_then(|p| p.lock().ok()) {
        Some(sender) => {
            QUEUED.fetch_add(1, Ordering::AcqRel);
            if sender.send(job).is_err() {
                QUEUED.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
        }
        None => {
            return tokio::task::spawn_blocking(move || job(&mut Scratch::default()))
                .await
                .ok()
                .and(rx.await.ok());
        }
    }
    rx.await.ok()
}

pub async fn hash(password: String) -> Result<String, HashError> {
    on_pool(move |scratch| hash_blocking(&password, scratch))
        .await
        .ok_or(HashError)?
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok { needs_rehash: bool },
    Wrong,
}

fn verify_blocking(password: &str, stored: &str, scratch: &mut Scratch) -> Verdict {
    if stored.starts_with("$argon2") {
        return if verify_argon2(password, stored, scratch) {
            Verdict::Ok {
                needs_rehash: false,
            }
        } else {
            Verdict::Wrong
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
    on_pool(move |scratch| verify_blocking(&password, &stored, scratch))
        .await
        .unwrap_or(Verdict::Wrong)
}

/// A real argon2 hash of a random password: unknown emails are verified against it so that they take as
/// long as wrong passwords (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_blocking(&crypto::random_token(24), &mut Scratch::default()).unwrap_or_default()
    })
}

/// A hash nobody can log in with (OAuth-created users).
pub fn unusable_hash() -> String {
    format!("!oauth-only!{}", crypto::random_token(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::password_hash::PasswordHasher;

    #[test]
    fn argon2_round_trip() {
        let mut scratch = Scratch::default();
        let h = hash_blocking("Password123", &mut scratch).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        // The same scratch, reused without clearing, for every computation below.
        assert_eq!(
            verify_blocking("Password123", &h, &mut scratch),
            Verdict::Ok {
                needs_rehash: false
            }
        );
        assert_eq!(
            verify_blocking("Password124", &h, &mut scratch),
            Verdict::Wrong
        );
        let again = hash_blocking("Password123", &mut scratch).expect("hash");
        assert_ne!(again, h, "a fresh salt each time");
        assert_eq!(
            verify_blocking("Password123", &again, &mut scratch),
            Verdict::Ok {
                needs_rehash: false
            }
        );
    }

    #[test]
    fn same_strings_as_the_argon2_crate() {
        let mut scratch = Scratch::default();
        let salt = SaltString::generate(&mut OsRng);
        let ours = hash_with_salt("Password123", &salt, &mut scratch).expect("hash");
        let theirs = Argon2::default()
            .hash_password(b"Password123", &salt)
            .expect("hash")
            .to_string();
        assert_eq!(ours, theirs);

        // Hashes made elsewhere with other variants, versions and parameters still verify, with a scratch
        // that is larger or smaller than they need.
        for (alg, ver, m, t, p, len) in [
            (Algorithm::Argon2id, Version::V0x13, 65536, 1, 2, 32),
            (Algorithm::Argon2i, Version::V0x10, 4096, 3, 1, 64),
            (Algorithm::Argon2d, Version::V0x13, 8192, 2, 4, 16),
        ] {
            let params = Params::new(m, t, p, Some(len)).expect("params");
            let stored = Argon2::new(alg, ver, params)
                .hash_password(b"Password123", &salt)
                .expect("hash")
                .to_string();
            assert_eq!(
                verify_blocking("Password123", &stored, &mut scratch),
                Verdict::Ok {
                    needs_rehash: false
                },
                "{stored}"
            );
            assert_eq!(
                verify_blocking("Password12", &stored, &mut scratch),
                Verdict::Wrong
            );
        }
        assert_eq!(
            verify_blocking(
                "Password123",
                "$argon2id$v=19$m=19456,t=2,p=1$bm9wZQ",
                &mut scratch
            ),
            Verdict::Wrong
        );
    }

    #[test]
    fn legacy_scrypt_verifies_and_asks_for_rehash() {
        // Built the original's way: salt hex string's ASCII as the KDF salt.
        let salt = "00112233445566778899aabbccddeeff";
        let params = scrypt::Params::new(14, 8, 1, 64).expect("params");
        let mut dk = [0u8; 64];
        scrypt::scrypt(b"Password123", salt.as_bytes(), &params, &mut dk).expect("kdf");
        let stored = format!("{salt}:{}", hex::encode(dk));
        let mut scratch = Scratch::default();
        assert_eq!(
            verify_blocking("Password123", &stored, &mut scratch),
            Verdict::Ok { needs_rehash: true }
        );
        assert_eq!(
            verify_blocking("nope", &stored, &mut scratch),
            Verdict::Wrong
        );
        assert_eq!(
            verify_blocking("Password123", "garbage", &mut scratch),
            Verdict::Wrong
        );
        assert_eq!(
            verify_blocking("Password123", &unusable_hash(), &mut scratch),
            Verdict::Wrong
        );
    }
}
