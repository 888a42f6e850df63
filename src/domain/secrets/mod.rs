//! Org-scoped connector secrets: write-only values under envelope encryption. No response, error or log
//! ever carries a value; decryption happens only in the runtime (run nodes), through [`Secrets::reveal`]
//! and [`Secrets::reveal_by_name`], under the secret's org context.

pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod store;

use crate::domain::audit::{self, Action, Entry};
use crate::domain::common::ids::RunId;
use serde_json::json;
use std::sync::Arc;

use diesel_async::scoped_futures::ScopedFutureExt;
use zeroize::Zeroizing;

use crate::domain::common::access::OrgCtx;
use crate::domain::common::ids::{OrgId, SecretId};
use crate::platform::crypto::envelope::Keyring;
use crate::platform::db::{self, DbError, PgPool, TenantCtx};
pub use error::SecretError;
use model::{Revealed, SealedRow, SecretMeta};

/// What the secrets service is built from.
pub struct SecretsParts {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
    /// Connector ids a secret may be stored for (the connector catalog and the LLM providers).
    pub allowed_connectors: Vec<String>,
}

pub struct Secrets {
    db: PgPool,
    keyring: Arc<Keyring>,
    allowed_connectors: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RotateReport {
    pub orgs: usize,
    pub rewrapped: usize,
    pub failed: usize,
}

impl Secrets {
    pub fn new(parts: SecretsParts) -> Self {
        Self {
            db: parts.db,
            keyring: parts.keyring,
            allowed_connectors: parts.allowed_connectors,
        }
    }

    /// Why secrets cannot be written, if the keyring has no usable active key.
    pub fn not_configured_reason(&self) -> Option<&str> {
        self.keyring.active_error()
    }

    /// Whether the org has this secret (a session naming its provider key checks it; nothing is
    /// decrypted).
    pub async fn exists(&self, org: OrgId, id: SecretId) -> Result<bool, SecretError> {
        db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let row = store::sealed(c, org, id).await?;
                Ok::<_, SecretError>(row.is_some())
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn list(
        &self,
        ctx: &OrgCtx,
        connector: Option<String>,
    ) -> Result<Vec<SecretMeta>, SecretError> {
        let org = ctx.org_id;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                store::list(c, org, connector.as_deref())
                    .await
                    .map_err(SecretError::from)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn create(
        &self,
        ctx: &OrgCtx,
        connector_id: String,
        name: String,
        value: Zeroizing<String>,
    ) -> Result<SecretMeta, SecretError> {
        if !self.allowed_connectors.contains(&connector_id) {
            return Err(SecretError::ConnectorNotAllowed {
                connector: connector_id,
                allowed: self.allowed_connectors.clone(),
            });
        }
        let (org, user, id) = (ctx.org_id, ctx.user.user_id, SecretId::random());
        let sealed = self.keyring.seal(org.uuid(), id.uuid(), value.as_bytes())?;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let new = store::NewSecret {
                    id,
                    org,
                    connector_id: &connector_id,
                    name: &name,
                    by_user: user,
                    sealed: &sealed,
                };
                let meta = store::insert(c, new)
                    .await?
                    .ok_or(SecretError::AlreadyExists)?;
                let entry = Entry::by(user, org, Action::SecretCreate, "secret")
                    .target(id)
                    .details(json!({"connectorId": connector_id, "name": name}));
                audit::record(c, &entry).await?;
                Ok(meta)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn update_value(
        &self,
        ctx: &OrgCtx,
        id: SecretId,
        value: Zeroizing<String>,
    ) -> Result<SecretMeta, SecretError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        let sealed = self.keyring.seal(org.uuid(), id.uuid(), value.as_bytes())?;
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let meta = store::replace_value(c, id, Some(user), &sealed)
                    .await?
                    .ok_or(SecretError::NotFound)?;
                let entry = Entry::by(user, org, Action::SecretUpdate, "secret").target(id);
                audit::record(c, &entry).await?;
                Ok(meta)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn delete(&self, ctx: &OrgCtx, id: SecretId) -> Result<(), SecretError> {
        let (org, user) = (ctx.org_id, ctx.user.user_id);
        db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                // Nothing deleted, nothing recorded (and the answer is 404).
                if store::delete(c, id).await? == 0 {
                    return Err(SecretError::NotFound);
                }
                let entry = Entry::by(user, org, Action::SecretDelete, "secret").target(id);
                audit::record(c, &entry).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await
    }

    /// Decrypts secret `id` of `org` for the runtime. Another org's secret is invisible (RLS and the
    /// explicit org filter), and a row moved to another org does not decrypt (AAD).
    pub async fn reveal(&self, org: OrgId, id: SecretId) -> Result<Revealed, SecretError> {
        self.reveal_for(org, id, None).await
    }

    /// As [`Secrets::reveal`], for a run: the read and its `secret.decrypt` audit row commit together.
    pub async fn reveal_for(
        &self,
        org: OrgId,
        id: SecretId,
        run: Option<RunId>,
    ) -> Result<Revealed, SecretError> {
        let row = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let row = store::sealed(c, org, id).await?;
                if let (Some(row), Some(run)) = (&row, run) {
                    audit::record(c, &decrypt_entry(org, row, run)).await?;
                }
                Ok::<_, SecretError>(row)
            }
            .scope_boxed()
        })
        .await?
        .ok_or(SecretError::NotFound)?;
        self.open(org, row)
    }

    /// The org's secret called `name`, whatever its connector. Names are unique per connector only, so
    /// a name used under two connectors is ambiguous and refused rather than guessed.
    pub async fn reveal_by_name(&self, org: OrgId, name: &str) -> Result<Revealed, SecretError> {
        self.reveal_by_name_for(org, name, None).await
    }

    /// As [`Secrets::reveal_by_name`], for a run (audited with the read, as [`Secrets::reveal_for`]).
    pub async fn reveal_by_name_for(
        &self,
        org: OrgId,
        name: &str,
        run: Option<RunId>,
    ) -> Result<Revealed, SecretError> {
        let name = name.to_string();
        let mut rows = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move {
                let rows = store::sealed_by_name(c, org, &name).await?;
                // Only an unambiguous name is decrypted, so only then is a decrypt recorded.
                if let ([row], Some(run)) = (rows.as_slice(), run) {
                    audit::record(c, &decrypt_entry(org, row, run)).await?;
                }
                Ok::<_, SecretError>(rows)
            }
            .scope_boxed()
        })
        .await?;
        match (rows.pop(), rows.is_empty()) {
            (Some(row), true) => self.open(org, row),
            (Some(_), false) => Err(SecretError::Ambiguous),
            (None, _) => Err(SecretError::NotFound),
        }
    }

    fn open(&self, org: OrgId, row: SealedRow) -> Result<Revealed, SecretError> {
        let plain = self
            .keyring
            .open(org.uuid(), row.id.uuid(), &row.sealed())
            .map_err(SecretError::Crypto)?;
        let value = String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| SecretError::Encoding)?;
        Ok(Revealed {
            connector_id: row.connector_id,
            value,
        })
    }

    /// KEK ids referenced by stored secrets that this keyring cannot open: start-up refuses to run with
    /// any.
    pub async fn unknown_keks(&self) -> Result<Vec<String>, DbError> {
        let mut conn = db::conn(&self.db).await?;
        let ids = store::kek_ids_in_use(&mut conn).await?;
        Ok(ids
            .into_iter()
            .filter(|id| !self.keyring.knows(id))
            .collect())
    }

    /// Re-wraps every DEK not under the active KEK, org by org with that org's context. Idempotent and
    /// resumable: each org commits on its own, and a re-run finds only what is left. `owner` is a pool of
    /// the owner role (it lists the orgs to visit); the re-wrap itself runs through the app pool with each
    /// org's context.
    pub async fn rotate_all(&self, owner: &PgPool) -> Result<RotateReport, SecretError> {
        let active = self
            .keyring
            .active_id()
            .ok_or(SecretError::NotConfigured)?
            .to_string();
        let orgs = {
            let mut conn = db::conn(owner).await?;
            store::orgs_needing_rewrap(&mut conn, &active).await?
        };
        let mut report = RotateReport::default();
        for org in orgs {
            let (active, keyring) = (active.clone(), &self.keyring);
            let (ok, failed) = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
                async move {
                    let rows = store::sealed_not_under(c, org, &active).await?;
                    let (mut ok, mut failed) = (0usize, 0usize);
                    for row in rows {
                        match keyring.rewrap(org.uuid(), row.id.uuid(), &row.sealed()) {
                            Ok(sealed) => {
                                store::replace_value(c, row.id, None, &sealed).await?;
                                ok += 1;
                            }
                            Err(e) => {
                                tracing::error!(org_id = %org, secret_id = %row.id, error = %e, "secret could not be re-wrapped");
                                failed += 1;
                            }
                        }
                    }
                    Ok::<_, SecretError>((ok, failed))
                }
                .scope_boxed()
            })
            .await?;
            report.orgs += 1;
            report.rewrapped += ok;
            report.failed += failed;
            tracing::info!(org_id = %org, rewrapped = ok, failed, "org secrets re-wrapped");
        }
        Ok(report)
    }
}

/// The platform decrypting a secret for a run's node.
fn decrypt_entry(org: OrgId, row: &SealedRow, run: RunId) -> Entry {
    Entry::system(org, Action::SecretDecrypt, "secret")
        .target(row.id)
        .details(json!({"runId": run, "connectorId": row.connector_id}))
}
