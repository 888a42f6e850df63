//! Secrets as nodes see them: by id (connector actions, with the row's connector for the mismatch check)
//! or by name (`{{secret:<name>}}` in `http.request` headers), decrypted under the org's context. Failures
//! come back as the node's outcome; internal causes are logged here, values never.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::RunQueryDsl;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{ExecDeps, Outcome};
use crate::domain::secrets::model::SealedRow;
use crate::domain::secrets::SecretAccessError;
use crate::platform::crypto::envelope::EnvelopeError;
use crate::platform::db::schema::connector_secrets as cs;
use crate::platform::db::{self, TenantCtx};

pub struct Revealed {
    pub connector_id: String,
    pub value: Zeroizing<String>,
}

/// The secret `id` of `org`; another org's secret is invisible (RLS and the explicit org filter).
pub async fn by_id(deps: &ExecDeps, org: Uuid, id: Uuid) -> Result<Revealed, Outcome> {
    let row = db::tenant_tx(&deps.db, TenantCtx::org(org), |c| {
        async move {
            cs::table
                .filter(cs::id.eq(id))
                .filter(cs::organization_id.eq(org))
                .select((cs::connector_id, SealedRow::as_select()))
                .first::<(String, SealedRow)>(c)
                .await
                .optional()
                .map_err(SecretAccessError::from)
        }
        .scope_boxed()
    })
    .await
    .map_err(|e| access_failure(org, &e))?
    .ok_or_else(|| Outcome::fail("SECRET_NOT_FOUND", false))?;
    open(deps, org, row)
}

/// The org's secret called `name`, whatever its connector. Names are unique per connector only, so a
/// name used under two connectors is ambiguous and refused rather than guessed.
pub async fn by_name(deps: &ExecDeps, org: Uuid, name: &str) -> Result<Revealed, Outcome> {
    let name = name.to_string();
    let mut rows = db::tenant_tx(&deps.db, TenantCtx::org(org), |c| {
        async move {
            cs::table
                .filter(cs::organization_id.eq(org))
                .filter(cs::name.eq(name))
                .select((cs::connector_id, SealedRow::as_select()))
                .limit(2)
                .load::<(String, SealedRow)>(c)
                .await
                .map_err(SecretAccessError::from)
        }
        .scope_boxed()
    })
    .await
    .map_err(|e| access_failure(org, &e))?;
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) => open(deps, org, row),
        (Some(_), false) => Err(Outcome::fail("SECRET_AMBIGUOUS", false)),
        (None, _) => Err(Outcome::fail("SECRET_NOT_FOUND", false)),
    }
}

fn open(
    deps: &ExecDeps,
    org: Uuid,
    (connector_id, row): (String, SealedRow),
) -> Result<Revealed, Outcome> {
    let plain = deps
        .secrets
        .open(org, row.id, &row.sealed())
        .map_err(|e| access_failure(org, &SecretAccessError::Crypto(e)))?;
    let value = String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| access_failure(org, &SecretAccessError::Encoding))?;
    Ok(Revealed {
        connector_id,
        value,
    })
}

/// Key problems are deterministic (a retry cannot fix them); an unreachable database is not.
fn access_failure(org: Uuid, e: &SecretAccessError) -> Outcome {
    match e {
        SecretAccessError::NotFound => Outcome::fail("SECRET_NOT_FOUND", false),
        SecretAccessError::Crypto(c) => {
            tracing::error!(org_id = %org, error = %c, "secret cannot be decrypted");
            let code = match c {
                EnvelopeError::NotConfigured(_) => "SECRETS_KEK_NOT_CONFIGURED",
                EnvelopeError::UnknownKek(_) => "SECRETS_KEK_NOT_FOUND",
                EnvelopeError::Decrypt | EnvelopeError::Alg(_) => "SECRET_DECRYPT_FAILED",
            };
            Outcome::fail(code, false)
        }
        SecretAccessError::Encoding => Outcome::fail("SECRET_DECRYPT_FAILED", false),
        SecretAccessError::Db(d) => {
            tracing::error!(org_id = %org, error = %d, "secret lookup failed");
            Outcome::fail("SECRET_LOOKUP_FAILED", true)
        }
    }
}
