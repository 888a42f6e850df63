//! Access tokens (JWT HS256 with a key id, so the key can be rotated) and refresh tokens (the original's
//! signed `<p>.<s>` format; only their SHA-256 is stored).

use super::config::AuthConfig;
use crate::domain::common::ids::{SessionId, UserId};
use crate::platform::crypto;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub email: String,
    pub sid: SessionId,
    pub typ: String,
    pub iat: i64,
    pub exp: i64,
}

/// The `session` object of signup/login/refresh/OAuth responses (wire contract).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Session)]
pub struct SessionView {
    pub token: String,
    pub user_id: UserId,
    pub email: String,
    pub session_id: SessionId,
    pub token_type: &'static str,
    pub issued_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshPayload {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub token_nonce: String,
    pub expires_at: i64,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &str) -> Self {
        // The key id names the key without revealing it: a short hash.
        let kid = crypto::sha256_hex(secret.as_bytes())
            .chars()
            .take(12)
            .collect();
        Self {
            kid,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }
}

pub struct TokenKeys {
    active: Key,
    previous: Option<Key>,
    refresh_key: Vec<u8>,
    validation: Validation,
    access_ttl: i64,
}

impl TokenKeys {
    pub fn new(cfg: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let previous = (!cfg.token_secret_previous.is_empty())
            .then(|| Key::new(cfg.token_secret_previous.expose()));
        Self {
            active: Key::new(cfg.token_secret.expose()),
            previous,
            refresh_key: cfg.refresh_key().expose().as_bytes().to_vec(),
            validation,
            access_ttl: cfg.access_ttl_secs,
        }
    }

    pub fn mint_access(
        &self,
        user_id: UserId,
        email: &str,
        session_id: SessionId,
        now: i64,
    ) -> SessionView {
        let claims = AccessClaims {
            sub: user_id,
            email: email.to_string(),
            sid: session_id,
            typ: "access".into(),
            iat: now,
            exp: now + self.access_ttl,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.active.kid.clone());
        // Encoding HS256 claims of plain types cannot fail; an empty token would simply not verify.
        let token =
            jsonwebtoken::encode(&header, &claims, &self.active.encoding).unwrap_or_default();
        SessionView {
            token,
            user_id,
            email: claims.email,
            session_id,
            token_type: "access",
            issued_at: claims.iat,
            expires_at: claims.exp,
        }
    }

    /// Signature, expiry and type; the session's liveness is checked by the caller.
    pub fn verify_access(&self, token: &str) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.kid.as_deref() {
            Some(kid) if kid == self.active.kid => &self.active,
            Some(kid) => self.previous.as_ref().filter(|k| k.kid == kid)?,
            None => return None,
        };
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation).ok()?;
        let c = data.claims;
        (c.typ == "access" && !c.email.is_empty()).then_some(c)
    }

    pub fn mint_refresh(&self, session_id: SessionId, user_id: UserId, expires_at: i64) -> String {
        crypto::sign(
            &self.refresh_key,
            &RefreshPayload {
                session_id,
                user_id,
                token_nonce: crypto::random_token(24),
                expires_at,
            },
        )
    }

    pub fn verify_refresh(&self, token: &str, now: i64) -> Option<RefreshPayload> {
        let p: RefreshPayload = crypto::verify(&self.refresh_key, token)?;
        (p.expires_at > now && !p.token_nonce.is_empty()).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auth::config::CookieSecure;
    use crate::platform::secret::Secret;

    fn keys(secret: &str, previous: &str) -> TokenKeys {
        TokenKeys::new(&AuthConfig {
            token_secret: Secret::new(secret),
            token_secret_previous: Secret::new(previous),
            refresh_secret: Secret::default(),
            oauth_state_secret: Secret::new("state"),
            access_ttl_secs: 900,
            session_ttl_secs: 3600,
            session_absolute_ttl_secs: 7200,
            oauth_context_ttl_secs: 600,
            session_cookie_name: "vespid_session".into(),
            cookie_secure: CookieSecure::Auto,
            session_cache_ttl_secs: 5,
            login_max_failures: 10,
            login_failure_window_secs: 900,
            login_max_failures_per_ip: 100,
            login_account_max_failures: 200,
            login_account_window_secs: 3600,
            login_trusted_client_days: 30,
            refresh_reuse_grace_secs: 5,
        })
    }

    #[test]
    fn access_round_trip_and_wrong_secret() {
        let now = chrono::Utc::now().timestamp();
        let (u, s) = (UserId::random(), SessionId::random());
        let k = keys("secret-one", "");
        let v = k.mint_access(u, "a@b.c", s, now);
        let c = k.verify_access(&v.token).expect("verifies");
        assert_eq!((c.sub, c.sid, c.email.as_str()), (u, s, "a@b.c"));
        assert!(keys("secret-two", "").verify_access(&v.token).is_none());
        // Rotation: the new key accepts tokens of the previous one.
        assert!(keys("secret-two", "secret-one")
            .verify_access(&v.token)
            .is_some());
        // Expired.
        let old = k.mint_access(u, "a@b.c", s, now - 10_000);
        assert!(k.verify_access(&old.token).is_none());
    }

    #[test]
    fn refresh_round_trip() {
        let now = chrono::Utc::now().timestamp();
        let k = keys("secret-one", "");
        let t = k.mint_refresh(SessionId::random(), UserId::random(), now + 60);
        assert!(k.verify_refresh(&t, now).is_some());
        assert!(k.verify_refresh(&t, now + 61).is_none());
        assert!(keys("other", "").verify_refresh(&t, now).is_none());
    }
}
