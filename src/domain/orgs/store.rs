//! Queries for orgs, memberships, invitations, settings and credit rows. Callers provide the RLS context.

use super::model::{Invitation, InvitationStatus, Membership, MyOrg, Org};
use crate::domain::common::access::Role;
use crate::domain::common::ids::{InvitationId, MembershipId, OrgId, UserId};
use crate::platform::db::schema::{
    memberships, organization_credit_balances, organization_credit_ledger,
    organization_invitations, organizations,
};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// The caller's orgs via the user-discovery policies (user context only).
pub async fn my_orgs(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<Vec<MyOrg>> {
    memberships::table
        .inner_join(organizations::table)
        .filter(memberships::user_id.eq(user))
        .order((organizations::created_at.asc(), organizations::id.asc()))
        .select((
            organizations::id,
            organizations::slug,
            organizations::name,
            memberships::role_key,
        ))
        .load(conn)
        .await
}

pub async fn count_my_memberships(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<i64> {
    memberships::table
        .filter(memberships::user_id.eq(user))
        .count()
        .get_result(conn)
        .await
}

/// Inserts the org unless the slug is taken (`None`).
pub async fn insert_org(conn: &mut AsyncPgConnection, org: &Org) -> QueryResult<Option<Org>> {
    diesel::insert_into(organizations::table)
        .values(org.clone())
        .on_conflict(organizations::slug)
        .do_nothing()
        .returning(Org::as_returning())
        .get_result(conn)
        .await
        .optional()
}

pub async fn insert_membership(
    conn: &mut AsyncPgConnection,
    m: &Membership,
) -> QueryResult<Membership> {
    diesel::insert_into(memberships::table)
        .values(m.clone())
        .returning(Membership::as_returning())
        .get_result(conn)
        .await
}

pub async fn init_credits(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    grant: i64,
    by_user: UserId,
) -> QueryResult<()> {
    diesel::insert_into(organization_credit_balances::table)
        .values((
            organization_credit_balances::organization_id.eq(org),
            organization_credit_balances::balance_credits.eq(grant),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if grant > 0 {
        diesel::insert_into(organization_credit_ledger::table)
            .values((
                organization_credit_ledger::organization_id.eq(org),
                organization_credit_ledger::delta_credits.eq(grant),
                organization_credit_ledger::reason.eq("trial_grant"),
                organization_credit_ledger::created_by_user_id.eq(Some(by_user)),
                organization_credit_ledger::metadata
                    .eq(serde_json::json!({"kind": "personal_workspace_bootstrap"})),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

pub async fn find_membership(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    user: UserId,
) -> QueryResult<Option<Membership>> {
    memberships::table
        .filter(memberships::organization_id.eq(org))
        .filter(memberships::user_id.eq(user))
        .select(Membership::as_select())
        .first(conn)
        .await
        .optional()
}

/// Locks the org's owner memberships, so "is this the last owner" stays true until commit.
pub async fn lock_owner_count(conn: &mut AsyncPgConnection, org: OrgId) -> QueryResult<usize> {
    memberships::table
        .filter(memberships::organization_id.eq(org))
        .filter(memberships::role_key.eq(Role::Owner))
        .select(memberships::id)
        .for_update()
        .load::<MembershipId>(conn)
        .await
        .map(|v| v.len())
}

pub async fn set_role(
    conn: &mut AsyncPgConnection,
    membership: MembershipId,
    role: Role,
) -> QueryResult<Membership> {
    diesel::update(memberships::table.find(membership))
        .set(memberships::role_key.eq(role))
        .returning(Membership::as_returning())
        .get_result(conn)
        .await
}

/// Replaces any pending invitation for the same email (superseded ones become `revoked`).
pub async fn insert_invitation(
    conn: &mut AsyncPgConnection,
    inv: &Invitation,
) -> QueryResult<Invitation> {
    diesel::update(
        organization_invitations::table
            .filter(organization_invitations::organization_id.eq(inv.organization_id))
            .filter(organization_invitations::email.eq(&inv.email))
            .filter(organization_invitations::status.eq(InvitationStatus::Pending)),
    )
    .set(organization_invitations::status.eq(InvitationStatus::Revoked))
    .execute(conn)
    .await?;
    diesel::insert_into(organization_invitations::table)
        .values(inv.clone())
        .returning(Invitation::as_returning())
        .get_result(conn)
        .await
}

pub async fn find_invitation_for_update(
    conn: &mut AsyncPgConnection,
    token_hash: &str,
) -> QueryResult<Option<Invitation>> {
    organization_invitations::table
        .filter(organization_invitations::token.eq(token_hash))
        .select(Invitation::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

pub async fn mark_invitation_accepted(
    conn: &mut AsyncPgConnection,
    id: InvitationId,
) -> QueryResult<()> {
    diesel::update(organization_invitations::table.find(id))
        .set(organization_invitations::status.eq(InvitationStatus::Accepted))
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn settings(
    conn: &mut AsyncPgConnection,
    org: OrgId,
) -> QueryResult<Option<serde_json::Value>> {
    organizations::table
        .find(org)
        .select(organizations::settings)
        .first(conn)
        .await
        .optional()
}

pub async fn settings_for_update(
    conn: &mut AsyncPgConnection,
    org: OrgId,
) -> QueryResult<Option<serde_json::Value>> {
    organizations::table
        .find(org)
        .select(organizations::settings)
        .for_update()
        .first(conn)
        .await
        .optional()
}

pub async fn save_settings(
    conn: &mut AsyncPgConnection,
    org: OrgId,
    value: &serde_json::Value,
) -> QueryResult<()> {
    diesel::update(organizations::table.find(org))
        .set(organizations::settings.eq(value))
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn credit_balance(
    conn: &mut AsyncPgConnection,
    org: OrgId,
) -> QueryResult<Option<(i64, chrono::DateTime<Utc>)>> {
    organization_credit_balances::table
        .find(org)
        .select((
            organization_credit_balances::balance_credits,
            organization_credit_balances::updated_at,
        ))
        .first(conn)
        .await
        .optional()
}

/// Serialises personal-workspace creation per user for the rest of the transaction.
pub async fn lock_user(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(user.to_string())
        .execute(conn)
        .await
        .map(|_| ())
}
