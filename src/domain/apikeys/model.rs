//! API keys as stored and as shown, and the key format `vsk_<orgId hex><keyId hex>_<secret>`: the public
//! part names the org (so the key is looked up under that org's row-level security) and the key; the
//! secret is 32 random bytes, base64url. Only the SHA-256 hex of the whole key is ever stored.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::common::access::{Role, API_KEY_PREFIX};
use crate::domain::common::ids::{ApiKeyId, OrgId, UserId};
use crate::domain::common::scope::{Scope, Scopes};
use crate::domain::common::time::iso;
use crate::platform::crypto;
use crate::platform::db::schema::api_keys;

/// Random bytes of a key's secret (43 base64url chars).
pub const SECRET_BYTES: usize = 32;
pub const MAX_NAME_CHARS: usize = 120;
/// Length of the hex ids in the public part.
const HEX_ID: usize = 32;

/// The public part of a key: `vsk_<org><id>` (shown in listings, safe to log).
pub fn prefix(org: OrgId, id: ApiKeyId) -> String {
    format!(
        "{API_KEY_PREFIX}{}{}",
        org.uuid().simple(),
        id.uuid().simple()
    )
}

/// A new key for `id` in `org`: the full key, shown once.
pub fn new_key(org: OrgId, id: ApiKeyId) -> String {
    format!("{}_{}", prefix(org, id), crypto::random_token(SECRET_BYTES))
}

/// The org and key a presented key names, if it has the shape of one (the secret is checked later).
pub fn parse(key: &str) -> Option<(OrgId, ApiKeyId)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let org = rest.get(..HEX_ID)?;
    let id = rest.get(HEX_ID..2 * HEX_ID)?;
    let secret = rest.get(2 * HEX_ID..)?.strip_prefix('_')?;
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(org) || !hex(id) || secret.is_empty() {
        return None;
    }
    let org = Uuid::try_parse(org).ok()?;
    let id = Uuid::try_parse(id).ok()?;
    Some((OrgId::from(org), ApiKeyId::from(id)))
}

/// How a key is stored and compared.
pub fn key_hash(key: &str) -> String {
    crypto::sha256_hex(key.as_bytes())
}

/// A key to create: already validated.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key row as listings see it (never the hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by_user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What authenticating a key needs to know about it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyAuthRow {
    pub organization_id: OrgId,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub creator_role: Role,
    pub created_by_user_id: UserId,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The `apiKey` object on the wire: never the secret or its hash.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_by_user_id: UserId,
}

impl From<&ApiKeyRow> for ApiKeyView {
    fn from(r: &ApiKeyRow) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            scopes: Scopes::from_names(r.scopes.iter().map(String::as_str))
                .iter()
                .collect(),
            created_at: iso(r.created_at),
            expires_at: r.expires_at.map(iso),
            last_used_at: r.last_used_at.map(iso),
            revoked_at: r.revoked_at.map(iso),
            created_by_user_id: r.created_by_user_id,
        }
    }
}

/// A key just created: its row, and the full key (the only time it is shown).
#[derive(Debug)]
pub struct CreatedKey {
    pub row: ApiKeyRow,
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_back_to_its_org_and_id() {
        let (org, id) = (OrgId::random(), ApiKeyId::random());
        let key = new_key(org, id);
        assert!(key.starts_with(&prefix(org, id)));
        assert_eq!(parse(&key), Some((org, id)));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let (org, id) = (OrgId::random(), ApiKeyId::random());
        let p = prefix(org, id);
        for bad in [
            String::new(),
            "vsk_".to_string(),
            p.clone(),
            format!("{p}_"),
            format!("{p}x"),
            format!("{}_secret", p.to_uppercase()),
            format!("vsk_{}_secret", "z".repeat(64)),
            format!("vsk_é{}_secret", "a".repeat(63)),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
