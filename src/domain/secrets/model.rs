//! Connector secrets as stored and as shown (metadata only, never the value).

use crate::domain::common::ids::{OrgId, SecretId, UserId};
use crate::domain::common::time::iso;
use crate::platform::crypto::envelope::Sealed;
use crate::platform::db::schema::connector_secrets;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = connector_secrets)]
pub struct SecretMeta {
    pub id: SecretId,
    pub organization_id: OrgId,
    pub connector_id: String,
    pub name: String,
    pub created_by_user_id: UserId,
    pub updated_by_user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Secret)]
pub struct SecretView {
    pub id: SecretId,
    pub organization_id: OrgId,
    pub connector_id: String,
    pub name: String,
    pub created_by_user_id: UserId,
    pub updated_by_user_id: UserId,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&SecretMeta> for SecretView {
    fn from(s: &SecretMeta) -> Self {
        Self {
            id: s.id,
            organization_id: s.organization_id,
            connector_id: s.connector_id.clone(),
            name: s.name.clone(),
            created_by_user_id: s.created_by_user_id,
            updated_by_user_id: s.updated_by_user_id,
            created_at: iso(s.created_at),
            updated_at: iso(s.updated_at),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = connector_secrets)]
pub struct SealedRow {
    pub id: SecretId,
    pub organization_id: OrgId,
    pub connector_id: String,
    pub kek_id: String,
    pub enc_alg: String,
    pub dek_ciphertext: Vec<u8>,
    pub dek_iv: Vec<u8>,
    pub dek_tag: Vec<u8>,
    pub secret_ciphertext: Vec<u8>,
    pub secret_iv: Vec<u8>,
    pub secret_tag: Vec<u8>,
}

impl SealedRow {
    pub fn sealed(&self) -> Sealed {
        Sealed {
            kek_id: self.kek_id.clone(),
            enc_alg: self.enc_alg.clone(),
            dek_ciphertext: self.dek_ciphertext.clone(),
            dek_iv: self.dek_iv.clone(),
            dek_tag: self.dek_tag.clone(),
            secret_ciphertext: self.secret_ciphertext.clone(),
            secret_iv: self.secret_iv.clone(),
            secret_tag: self.secret_tag.clone(),
        }
    }
}

/// A secret decrypted for the runtime: its connector (for the mismatch check) and the value, wiped on drop.
pub struct Revealed {
    pub connector_id: String,
    pub value: zeroize::Zeroizing<String>,
}
