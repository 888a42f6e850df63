//! Org-scoped connector secrets: write-only values under envelope encryption. No response, error or log
//! ever carries a value; decryption happens only in the runtime, under the secret's org context.

pub mod model;
pub mod routes;
pub mod store;

use diesel_async::scoped_futures::ScopedFutureExt;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::app::state::AppState;
use crate::domain::orgs::OrgCtx;
use crate::platform::crypto::envelope::{EnvelopeError, Keyring};
use crate::platform::db::{self, PgPool, TenantCtx};
use crate::platform::http::ApiError;
use model::SecretMeta;

fn not_configured() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "SECRETS_NOT_CONFIGURED",
        "Secrets KEK is not configured",
    )
}

fn not_found() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "SECRET_NOT_FOUND",
        "Secret not found",
    )
}

fn seal_error(e: EnvelopeError) -> ApiError {
    match e {
        EnvelopeError::NotConfigured(_) => not_configured(),
        other => {
            tracing::error!(error = %other, "secret encryption failed");
            ApiError::internal()
        }
    }
}

pub async fn list(
    ctx: &OrgCtx,
    state: &AppState,
    connector: Option<String>,
) -> Result<Vec<SecretMeta>, ApiError> {
    let org = ctx.org_id;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::list(c, org, connector.as_deref())
                .await
                .map_err(ApiError::from)
        }
        .scope_boxed()
    })
    .await
}

pub async fn create(
    ctx: &OrgCtx,
    state: &AppState,
    connector_id: String,
    name: String,
    value: Zeroizing<String>,
) -> Result<SecretMeta, ApiError> {
    let (org, user, id) = (ctx.org_id, ctx.user.user_id, Uuid::new_v4());
    let sealed = state
        .secrets
        .seal(org, id, value.as_bytes())
        .map_err(seal_error)?;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::insert(
                c,
                store::NewSecret {
                    id,
                    org,
                    connector_id: &connector_id,
                    name: &name,
                    by_user: user,
                    sealed: &sealed,
                },
            )
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::CONFLICT,
                    "SECRET_ALREADY_EXISTS",
                    "Secret already exists",
                )
            })
        }
        .scope_boxed()
    })
    .await
}

pub async fn update_value(
    ctx: &OrgCtx,
    state: &AppState,
    id: Uuid,
    value: Zeroizing<String>,
) -> Result<SecretMeta, ApiError> {
    let (org, user) = (ctx.org_id, ctx.user.user_id);
    let sealed = state
        .secrets
        .seal(org, id, value.as_bytes())
        .map_err(seal_error)?;
    db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::replace_value(c, id, Some(user), &sealed)
                .await?
                .ok_or_else(not_found)
        }
        .scope_boxed()
    })
    .await
}

pub async fn delete(ctx: &OrgCtx, state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let n = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move { store::delete(c, id).await.map_err(ApiError::from) }.scope_boxed()
    })
    .await?;
    if n == 0 {
        return Err(not_found());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SecretAccessError {
    #[error("secret not found")]
    NotFound,
    #[error("secret cannot be decrypted: {0}")]
    Crypto(#[from] EnvelopeError),
    #[error("secret is not valid UTF-8")]
    Encoding,
    #[error(transparent)]
    Db(#[from] db::DbError),
}

impl From<diesel::result::Error> for SecretAccessError {
    fn from(e: diesel::result::Error) -> Self {
        SecretAccessError::Db(e.into())
    }
}

/// Decrypts one secret for the runtime (worker nodes, the gateway brain), under the org's context.
pub async fn reveal(
    db: &PgPool,
    keyring: &Keyring,
    org: Uuid,
    id: Uuid,
) -> Result<Zeroizing<String>, SecretAccessError> {
    let row = db::tenant_tx(db, TenantCtx::org(org), |c| {
        async move { store::sealed(c, id).await.map_err(SecretAccessError::from) }.scope_boxed()
    })
    .await?
    .ok_or(SecretAccessError::NotFound)?;
    let plain = keyring.open(org, id, &row.sealed())?;
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| SecretAccessError::Encoding)
}

/// KEK ids referenced by stored secrets that this keyring cannot open: start-up refuses to run with any.
pub async fn unknown_keks(db: &PgPool, keyring: &Keyring) -> Result<Vec<String>, db::DbError> {
    let mut conn = db::conn(db).await?;
    let ids = store::kek_ids_in_use(&mut conn).await?;
    Ok(ids.into_iter().filter(|id| !keyring.knows(id)).collect())
}

#[derive(Debug, Default)]
pub struct RotateReport {
    pub orgs: usize,
    pub rewrapped: usize,
    pub failed: usize,
}

/// Re-wraps every DEK not under the active KEK, org by org with that org's context. Idempotent and
/// resumable: each org commits on its own, and a re-run finds only what is left.
/// `owner` is a connection pool of the owner role (it lists the orgs to visit); the re-wrap itself runs
/// through `db` with each org's context.
pub async fn rotate_all(
    db: &PgPool,
    owner: &PgPool,
    keyring: &Keyring,
) -> Result<RotateReport, SecretAccessError> {
    let active = keyring
        .active_id()
        .ok_or_else(|| {
            SecretAccessError::Crypto(EnvelopeError::NotConfigured("no active KEK".into()))
        })?
        .to_string();
    let orgs = {
        let mut conn = db::conn(owner).await?;
        store::orgs_needing_rewrap(&mut conn, &active).await?
    };
    let mut report = RotateReport::default();
    for org in orgs {
        let active = active.clone();
        let (ok, failed) = db::tenant_tx(db, TenantCtx::org(org), |c| {
            async move {
                let rows = store::sealed_not_under(c, org, &active).await?;
                let (mut ok, mut failed) = (0usize, 0usize);
                for row in rows {
                    match keyring.rewrap(org, row.id, &row.sealed()) {
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
                Ok::<_, SecretAccessError>((ok, failed))
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
