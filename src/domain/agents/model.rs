//! Executors (paired node agents) and pairing tokens, as stored and as shown. Tokens are
//! `<orgId>.<base64url secret>`; only their SHA-256 hex is ever stored.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::domain::common::ids::{ExecutorId, OrgId, UserId};
use crate::domain::common::time::iso;
use crate::platform::crypto;
use crate::platform::db::schema::{executor_pairing_tokens, organization_executors};
use crate::platform::validation::parse_uuid;

/// Random bytes after the dot of a pairing token (32 base64url chars).
pub const PAIRING_SECRET_BYTES: usize = 24;
/// Random bytes after the dot of an executor token.
pub const EXECUTOR_SECRET_BYTES: usize = 32;
/// At most this many labels, each 1..=64 chars.
pub const MAX_LABELS: usize = 50;
pub const MAX_LABEL_CHARS: usize = 64;

/// A new `<org>.<secret>` token with `n` random bytes.
pub fn new_token(org: OrgId, n: usize) -> String {
    format!("{org}.{}", crypto::random_token(n))
}

/// The org a token names: the text before the first `.`, if it is a UUID.
pub fn token_org(token: &str) -> Option<OrgId> {
    let (prefix, _) = token.split_once('.')?;
    parse_uuid(prefix).map(OrgId::from)
}

/// How a token is stored and looked up.
pub fn token_hash(token: &str) -> String {
    crypto::sha256_hex(token.as_bytes())
}

/// Trimmed, empties dropped, duplicates removed (the first occurrence wins).
pub fn normalize_labels(labels: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(labels.len());
    for label in labels {
        let label = label.trim();
        if !label.is_empty() && !out.iter().any(|l| l == label) {
            out.push(label.to_string());
        }
    }
    out
}

/// An executor row, without its token hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organization_executors)]
pub struct ExecutorRow {
    pub id: ExecutorId,
    pub organization_id: OrgId,
    pub name: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub capabilities: Option<Value>,
    pub labels: Vec<String>,
    pub created_by_user_id: UserId,
    pub created_at: DateTime<Utc>,
}

/// Shown status: `revoked` once revoked, else `online` exactly while the executor holds a gateway
/// connection (its live route record), else `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorStatus {
    Online,
    Offline,
    Revoked,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Executor)]
pub struct ExecutorView {
    pub id: ExecutorId,
    pub name: String,
    pub status: ExecutorStatus,
    pub last_seen_at: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Routing labels (control plane).
    pub labels: Vec<String>,
    /// What the agent said about itself at pairing (`capabilities.labels`): shown, never routed on.
    pub reported_labels: Vec<String>,
}

impl ExecutorRow {
    pub fn view(&self, connected: bool) -> ExecutorView {
        let status = match (self.revoked_at, connected) {
            (Some(_), _) => ExecutorStatus::Revoked,
            (None, true) => ExecutorStatus::Online,
            (None, false) => ExecutorStatus::Offline,
        };
        ExecutorView {
            id: self.id,
            name: self.name.clone(),
            status,
            last_seen_at: self.last_seen_at.map(iso),
            created_at: iso(self.created_at),
            revoked_at: self.revoked_at.map(iso),
            labels: self.labels.clone(),
            reported_labels: self.reported_labels(),
        }
    }

    /// The string items of `capabilities.labels`.
    pub fn reported_labels(&self) -> Vec<String> {
        self.capabilities
            .as_ref()
            .and_then(|c| c.get("labels"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = executor_pairing_tokens)]
pub struct PairingTokenRow {
    pub token_hash: String,
    pub labels: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub created_by_user_id: UserId,
}

/// A pairing token as handed to the admin, the only time its plaintext exists.
pub struct IssuedPairingToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// What pairing asks for.
pub struct PairRequest {
    pub pairing_token: String,
    pub name: String,
    /// A JSON object when given.
    pub capabilities: Option<Value>,
}

/// What a paired agent is told: its id and token (shown once), its org and where to connect.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PairedExecutor)]
pub struct Paired {
    pub executor_id: ExecutorId,
    pub executor_token: String,
    pub organization_id: OrgId,
    pub gateway_ws_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_deduplicated_and_kept_in_order() {
        let got = normalize_labels(vec![
            " gpu ".into(),
            "".into(),
            "  ".into(),
            "linux".into(),
            "gpu".into(),
        ]);
        assert_eq!(got, vec!["gpu".to_string(), "linux".to_string()]);
    }

    #[test]
    fn a_token_names_its_org_only_with_a_uuid_prefix() {
        let org = OrgId::random();
        let token = new_token(org, PAIRING_SECRET_BYTES);
        assert_eq!(token_org(&token), Some(org));
        assert_eq!(token.len(), 36 + 1 + 32);
        assert_eq!(token_org("nodot"), None);
        assert_eq!(token_org("not-a-uuid.abc"), None);
        assert_eq!(token_org(&format!("{}.x", org.uuid().simple())), None);
    }
}
