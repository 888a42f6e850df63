//! Queries for `connector_secrets` (org context) and `secret_kek_refs`.

use super::model::{SealedRow, SecretMeta};
use crate::domain::common::ids::{OrgId, SecretId, UserId};
use crate::platform::crypto::envelope::Sealed;
use crate::platform::db::schema::{connector_secrets as cs, secret_kek_refs};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub async fn list(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    connector: Option<&str>,
) -> QueryResult<Vec<SecretMeta>> {
    let mut q = cs::table
        .filter(cs::organization_id.eq(org))
        .select(SecretMeta::as_select())
        .order((cs::connector_id.asc(), cs::name.asc()))
        .into_boxed();
    if let Some(c) = connector {
        q = q.filter(cs::connector_id.eq(c.to_string()));
    }
    q.load(conn).await
}

pub struct NewSecret<'a> {
    pub id: SecretId,
    pub org: OrgId,
    pub connector_id: &'a str,
    pub name: &'a str,
    pub by_user: UserId,
    pub sealed: &'a Sealed,
}

/// `None` when (org, connector, name) exists already.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    s: NewSecret<'_>,
) -> QueryResult<Option<SecretMeta>> {
    diesel::insert_into(cs::table)
        .values((
            cs::id.eq(s.id),
            cs::organization_id.eq(s.org),
            cs::connector_id.eq(s.connector_id),
            cs::name.eq(s.name),
            cs::kek_id.eq(&s.sealed.kek_id),
            cs::enc_alg.eq(&s.sealed.enc_alg),
            cs::dek_ciphertext.eq(&s.sealed.dek_ciphertext),
            cs::dek_iv.eq(&s.sealed.dek_iv),
            cs::dek_tag.eq(&s.sealed.dek_tag),
            cs::secret_ciphertext.eq(&s.sealed.secret_ciphertext),
            cs::secret_iv.eq(&s.sealed.secret_iv),
            cs::secret_tag.eq(&s.sealed.secret_tag),
            cs::created_by_user_id.eq(s.by_user),
            cs::updated_by_user_id.eq(s.by_user),
        ))
        .on_conflict((cs::organization_id, cs::connector_id, cs::name))
        .do_nothing()
        .returning(SecretMeta::as_returning())
        .get_result(conn)
        .await
        .optional()
}

pub async fn replace_value(
    conn: &mut AsyncPgConnection,
    id: SecretId,
    by_user: Option<UserId>,
    sealed: &Sealed,
) -> QueryResult<Option<SecretMeta>> {
    let target = cs::table.filter(cs::id.eq(id));
    let values = (
        cs::kek_id.eq(&sealed.kek_id),
        cs::enc_alg.eq(&sealed.enc_alg),
        cs::dek_ciphertext.eq(&sealed.dek_ciphertext),
        cs::dek_iv.eq(&sealed.dek_iv),
        cs::dek_tag.eq(&sealed.dek_tag),
        cs::secret_ciphertext.eq(&sealed.secret_ciphertext),
        cs::secret_iv.eq(&sealed.secret_iv),
        cs::secret_tag.eq(&sealed.secret_tag),
    );
    match by_user {
        Some(user) => diesel::update(target)
            .set((
                values,
                cs::updated_by_user_id.eq(user),
                cs::updated_at.eq(Utc::now()),
            ))
            .returning(SecretMeta::as_returning())
            .get_result(conn)
            .await
            .optional(),
        // Key rotation is not a value change: metadata stays as it was.
        None => diesel::update(target)
            .set(values)
            .returning(SecretMeta::as_returning())
            .get_result(conn)
            .await
            .optional(),
    }
}

pub async fn delete(conn: &mut AsyncPgConnection, id: SecretId) -> QueryResult<usize> {
    diesel::delete(cs::table.filter(cs::id.eq(id)))
        .execute(conn)
        .await
}

pub async fn sealed(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    id: SecretId,
) -> QueryResult<Option<SealedRow>> {
    cs::table
        .filter(cs::id.eq(id))
        .filter(cs::organization_id.eq(org))
        .select(SealedRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn sealed_not_under(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    kek: &str,
) -> QueryResult<Vec<SealedRow>> {
    cs::table
        .filter(cs::organization_id.eq(org))
        .filter(
            cs::kek_id
                .ne(kek)
                .or(cs::enc_alg.ne(crate::platform::crypto::envelope::ALG_XCHACHA)),
        )
        .select(SealedRow::as_select())
        .for_update()
        .load(conn)
        .await
}

#[derive(QueryableByName)]
struct KekId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    kek_id: String,
}

/// Distinct KEK ids referenced by any secret, through the definer function (no tenant data).
pub async fn kek_ids_in_use(conn: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    diesel::sql_query("SELECT kek_id FROM app.secret_kek_ids() AS kek_id")
        .load::<KekId>(conn)
        .await
        .map(|rows| rows.into_iter().map(|r| r.kek_id).collect())
}

/// Orgs holding secrets under a KEK other than `active`. Needs the owner role: the app role cannot read
/// `secret_kek_refs`.
pub async fn orgs_needing_rewrap(
    conn: &mut AsyncPgConnection,
    active: &str,
) -> QueryResult<Vec<OrgId>> {
    secret_kek_refs::table
        .filter(secret_kek_refs::rows.gt(0))
        .filter(secret_kek_refs::kek_id.ne(active))
        .select(secret_kek_refs::organization_id)
        .distinct()
        .load(conn)
        .await
}

/// The org's secrets called `name`, whatever their connector (at most two: enough to see ambiguity).
pub async fn sealed_by_name(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    name: &str,
) -> QueryResult<Vec<SealedRow>> {
    cs::table
        .filter(cs::organization_id.eq(org))
        .filter(cs::name.eq(name))
        .select(SealedRow::as_select())
        .limit(2)
        .load(conn)
        .await
}
