//! Secrets as nodes see them, through the secrets service (the one decryption path): by id (connector
//! actions) or by name (`{{secret:<name>}}` in `http.request` headers). Failures come back as the node's
//! outcome; internal causes are logged here, values never.

use super::context::{ExecDeps, Outcome};
use crate::domain::common::ids::{OrgId, RunId, SecretId};
use crate::domain::secrets::model::Revealed;
use crate::domain::secrets::SecretError;
use crate::platform::crypto::envelope::EnvelopeError;

pub async fn by_id(
    deps: &ExecDeps,
    org: OrgId,
    run: RunId,
    id: SecretId,
) -> Result<Revealed, Outcome> {
    deps.secrets
        .reveal_for(org, id, Some(run))
        .await
        .map_err(|e| failure(org, &e))
}

pub async fn by_name(
    deps: &ExecDeps,
    org: OrgId,
    run: RunId,
    name: &str,
) -> Result<Revealed, Outcome> {
    deps.secrets
        .reveal_by_name_for(org, name, Some(run))
        .await
        .map_err(|e| failure(org, &e))
}

/// Key problems are deterministic (a retry cannot fix them); an unreachable database is not.
fn failure(org: OrgId, e: &SecretError) -> Outcome {
    match e {
        SecretError::NotFound => Outcome::fail("SECRET_NOT_FOUND", false),
        SecretError::Ambiguous => Outcome::fail("SECRET_AMBIGUOUS", false),
        SecretError::NotConfigured => {
            tracing::error!(org_id = %org, error = %e, "secret cannot be decrypted");
            Outcome::fail("SECRETS_KEK_NOT_CONFIGURED", false)
        }
        SecretError::Crypto(c) => {
            tracing::error!(org_id = %org, error = %c, "secret cannot be decrypted");
            let code = match c {
                EnvelopeError::NotConfigured(_) => "SECRETS_KEK_NOT_CONFIGURED",
                EnvelopeError::UnknownKek(_) => "SECRETS_KEK_NOT_FOUND",
                EnvelopeError::Decrypt | EnvelopeError::Alg(_) => "SECRET_DECRYPT_FAILED",
            };
            Outcome::fail(code, false)
        }
        SecretError::Encoding => Outcome::fail("SECRET_DECRYPT_FAILED", false),
        SecretError::Db(d) => {
            tracing::error!(org_id = %org, error = %d, "secret lookup failed");
            Outcome::fail("SECRET_LOOKUP_FAILED", true)
        }
        // Write-side failures: a lookup cannot produce them.
        SecretError::AlreadyExists | SecretError::ConnectorNotAllowed { .. } => {
            tracing::error!(org_id = %org, error = %e, "unexpected secret lookup failure");
            Outcome::fail("SECRET_LOOKUP_FAILED", false)
        }
    }
}
