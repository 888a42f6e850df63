//! Organizations, memberships and invitations, as stored and as shown.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::domain::common::access::Role;
use crate::domain::common::ids::{InvitationId, MembershipId, OrgId, UserId};
use crate::domain::common::time::iso;
use crate::platform::db::schema::{memberships, organization_invitations, organizations};

crate::text_enum! {
    /// Where an invitation stands; a newer invitation to the same email revokes the pending one.
    pub enum InvitationStatus {
        Pending = "pending",
        Accepted = "accepted",
        Expired = "expired",
        Revoked = "revoked",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct Org {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = memberships)]
pub struct Membership {
    pub id: MembershipId,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub role_key: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organization_invitations)]
pub struct Invitation {
    pub id: InvitationId,
    pub organization_id: OrgId,
    pub email: String,
    pub role_key: Role,
    pub invited_by_user_id: UserId,
    /// The SHA-256 of the token; the token itself is shown once, to the inviter.
    pub token: String,
    pub status: InvitationStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Org)]
pub struct OrgView {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub created_at: String,
}

impl From<&Org> for OrgView {
    fn from(o: &Org) -> Self {
        Self {
            id: o.id,
            slug: o.slug.clone(),
            name: o.name.clone(),
            created_at: iso(o.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Membership)]
pub struct MembershipView {
    pub id: MembershipId,
    pub organization_id: OrgId,
    pub user_id: UserId,
    pub role_key: Role,
    pub created_at: String,
}

impl From<&Membership> for MembershipView {
    fn from(m: &Membership) -> Self {
        Self {
            id: m.id,
            organization_id: m.organization_id,
            user_id: m.user_id,
            role_key: m.role_key,
            created_at: iso(m.created_at),
        }
    }
}

/// An entry of `/v1/me`'s `orgs`.
#[derive(Debug, Serialize, Queryable, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyOrg {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub role_key: Role,
}

/// The invitation as shown to the inviter, once, with its plaintext token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Invitation)]
pub struct InvitationView {
    pub id: InvitationId,
    pub organization_id: OrgId,
    pub email: String,
    pub role_key: Role,
    pub invited_by_user_id: UserId,
    pub token: String,
    pub status: InvitationStatus,
    pub expires_at: String,
    pub created_at: String,
}

/// An accepted invitation.
#[derive(Debug)]
pub struct Accepted {
    pub invitation_id: InvitationId,
    pub organization_id: OrgId,
    pub membership_id: MembershipId,
}
