//! How a webhook caller proves it knows the trigger's token, without sending it when it can avoid to.
//!
//! - Preferred: `X-Vespid-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(token, "<t>.<raw body>")>`.
//!   The timestamp must be within the tolerance of our clock (default 5 min), and a signature is
//!   accepted once (the route remembers it for twice the tolerance), so a captured delivery cannot be
//!   replayed. Several `v1=` values are allowed (a sender rotating its token signs with both).
//! - For simple clients: `X-Vespid-Webhook-Token: <token>` (no replay protection beyond TLS; use an
//!   `Idempotency-Key` to make retries safe).
//!
//! Every comparison is constant-time.

use crate::platform::crypto::{ct_eq, hmac_sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof<'a> {
    Signature(&'a str),
    Token(&'a str),
    None,
}

/// Why a delivery was refused (all are 401 to the caller, with the reason's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("WEBHOOK_SIGNATURE_REQUIRED")]
    Missing,
    #[error("WEBHOOK_SIGNATURE_MALFORMED")]
    Malformed,
    #[error("WEBHOOK_SIGNATURE_EXPIRED")]
    Expired,
    #[error("WEBHOOK_SIGNATURE_INVALID")]
    Invalid,
}

/// A verified signature: its timestamp and the signature value (the replay key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub signed: Option<(i64, String)>,
}

pub fn verify(
    proof: &Proof<'_>,
    token: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<Verified, Refused> {
    match proof {
        Proof::None => Err(Refused::Missing),
        Proof::Token(given) => {
            if ct_eq(given.trim().as_bytes(), token.as_bytes()) {
                Ok(Verified { signed: None })
            } else {
                Err(Refused::Invalid)
            }
        }
        Proof::Signature(header) => {
            let (t, candidates) = parse(header)?;
            if (now_secs - t).abs() > tolerance_secs {
                return Err(Refused::Expired);
            }
            let mut msg = Vec::with_capacity(body.len() + 16);
            msg.extend_from_slice(t.to_string().as_bytes());
            msg.push(b'.');
            msg.extend_from_slice(body);
            let expected = hmac_sha256(token.as_bytes(), &msg);
            // Every candidate is compared (no early exit on the first match).
            let mut matched = None;
            for c in candidates {
                if let Ok(bytes) = hex::decode(c) {
                    if ct_eq(&bytes, &expected) && matched.is_none() {
                        matched = Some(c.to_ascii_lowercase());
                    }
                }
            }
            matched
                .map(|sig| Verified {
                    signed: Some((t, sig)),
                })
                .ok_or(Refused::Invalid)
        }
    }
}

/// `t=<secs>,v1=<hex>[,v1=<hex>…]` (other schemes are ignored, as a newer sender might add one).
fn parse(header: &str) -> Result<(i64, Vec<&str>), Refused> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',').take(16) {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim().parse::<i64>().map_err(|_| Refused::Malformed)?),
            Some(("v1", v)) => v1.push(v.trim()),
            _ => {}
        }
    }
    match t {
        Some(t) if !v1.is_empty() => Ok((t, v1)),
        _ => Err(Refused::Malformed),
    }
}

/// What a sender computes (tests, docs and the benchmark use it).
pub fn sign(token: &str, t: i64, body: &[u8]) -> String {
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(hmac_sha256(token.as_bytes(), &msg))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn a_fresh_signature_over_the_body_is_accepted_once_computed_right() {
        let header = sign("tok", NOW, b"{\"a\":1}");
        let ok = verify(&Proof::Signature(&header), "tok", b"{\"a\":1}", NOW, 300).unwrap();
        assert_eq!(ok.signed.map(|(t, _)| t), Some(NOW));
        // Another body, another token, a stale or future time: refused.
        let p = Proof::Signature(&header);
        assert_eq!(
            verify(&p, "tok", b"{\"a\":2}", NOW, 300),
            Err(Refused::Invalid)
        );
        assert_eq!(
            verify(&p, "other", b"{\"a\":1}", NOW, 300),
            Err(Refused::Invalid)
        );
        assert_eq!(
            verify(&p, "tok", b"{\"a\":1}", NOW + 301, 300),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(&p, "tok", b"{\"a\":1}", NOW - 301, 300),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn rotation_signs_twice_and_garbage_is_malformed() {
        let good = sign("new", NOW, b"x");
        let v1 = good.split("v1=").nth(1).unwrap();
        let header = format!("t={NOW},v1={},v1={v1}", "00".repeat(32));
        assert!(verify(&Proof::Signature(&header), "new", b"x", NOW, 300).is_ok());
        for bad in ["", "t=abc,v1=00", "v1=00", "t=1", "nonsense"] {
            assert_eq!(
                verify(&Proof::Signature(bad), "new", b"x", NOW, 300),
                Err(Refused::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_bare_token_works_and_nothing_is_refused() {
        assert!(verify(&Proof::Token("tok"), "tok", b"", NOW, 300).is_ok());
        assert_eq!(
            verify(&Proof::Token("tok2"), "tok", b"", NOW, 300),
            Err(Refused::Invalid)
        );
        assert_eq!(
            verify(&Proof::None, "tok", b"", NOW, 300),
            Err(Refused::Missing)
        );
    }
}
