//! Organizations and RBAC: org creation, the personal workspace, memberships and role changes,
//! invitations, org settings, and membership resolution for the org-context rule.

pub mod cache;
pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod settings;
pub mod store;

use crate::domain::audit::{self, Action, Entry};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::domain::common::access::{LookupError, Memberships, OrgCtx, Principal, Role};
use crate::domain::common::ids::{InvitationId, MembershipId, OrgId, UserId};
use crate::domain::common::time::iso;
use crate::platform::crypto;
use crate::platform::db::{self, DbError, PgPool, TenantCtx};
use crate::platform::redis::Redis;
use cache::{Forget, OrgCache};
use config::OrgsConfig;
pub use error::OrgError;
use model::{Accepted, Invitation, InvitationStatus, InvitationView, Membership, MyOrg, Org};

const INVITATION_TTL_HOURS: i64 = 72;

/// What the orgs service is built from.
pub struct OrgsParts {
    pub config: OrgsConfig,
    /// How long memberships and settings are served from memory between checks.
    pub cache_ttl: Duration,
    pub db: PgPool,
    pub redis: Redis,
}

pub struct Orgs {
    config: OrgsConfig,
    cache: Arc<OrgCache>,
    db: PgPool,
    redis: Redis,
}

impl Orgs {
    pub fn new(parts: OrgsParts) -> Self {
        let cache = OrgCache::new(parts.cache_ttl);
        cache.spawn_listener(&parts.redis);
        Self {
            config: parts.config,
            cache,
            db: parts.db,
            redis: parts.redis,
        }
    }

    /// Memberships of the caller (oldest org first); creates the personal workspace first when there is
    /// none.
    pub async fn my_orgs(&self, user: UserId) -> Result<Vec<MyOrg>, OrgError> {
        let list = self.list_my_orgs(user).await?;
        if !list.is_empty() {
            return Ok(list);
        }
        self.ensure_personal_workspace(user).await?;
        self.list_my_orgs(user).await
    }

    async fn list_my_orgs(&self, user: UserId) -> Result<Vec<MyOrg>, OrgError> {
        db::tenant_tx(&self.db, TenantCtx::user(user), |c| {
            async move { store::my_orgs(c, user).await.map_err(OrgError::from) }.scope_boxed()
        })
        .await
    }

    /// Every user has at least one org: a user without memberships gets "Personal workspace". Serialised
    /// per user by an advisory lock so parallel logins cannot create two.
    pub async fn ensure_personal_workspace(&self, user: UserId) -> Result<(), OrgError> {
        let grant = self.config.personal_trial_credits.max(0);
        db::tenant_tx(&self.db, TenantCtx::user(user), |c| {
            async move {
                store::lock_user(c, user).await?;
                if store::count_my_memberships(c, user).await? > 0 {
                    return Ok(());
                }
                let base: String = format!(
                    "personal-{}",
                    user.uuid()
                        .simple()
                        .to_string()
                        .chars()
                        .take(8)
                        .collect::<String>()
                );
                for attempt in 0..3 {
                    let slug = if attempt == 0 {
                        base.clone()
                    } else {
                        let suffix: String = crypto::sha256_hex(uuid::Uuid::new_v4().as_bytes())
                            .chars()
                            .take(6)
                            .collect();
                        format!("{base}-{suffix}")
                    };
                    let org_id = OrgId::random();
                    // The new org's id is the org context, so the inserts pass WITH CHECK.
                    db::set_context(c, TenantCtx::user_org(user, org_id)).await?;
                    let new = NewOrg {
                        id: org_id,
                        slug: &slug,
                        name: "Personal workspace",
                        owner: user,
                        grant,
                    };
                    if create_org_rows(c, new).await?.is_some() {
                        return Ok(());
                    }
                }
                Err(OrgError::NoPersonalSlug)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn create_org(
        &self,
        user: UserId,
        name: String,
        slug: String,
    ) -> Result<(Org, Membership), OrgError> {
        let org_id = OrgId::random();
        let created = db::tenant_tx(&self.db, TenantCtx::user_org(user, org_id), |c| {
            async move {
                let new = NewOrg {
                    id: org_id,
                    slug: &slug,
                    name: &name,
                    owner: user,
                    grant: 0,
                };
                create_org_rows(c, new).await
            }
            .scope_boxed()
        })
        .await?
        .ok_or(OrgError::SlugTaken)?;
        self.cache
            .put_member(org_id, user, Role::Owner, created.1.id);
        Ok(created)
    }

    /// `(role, membership id)` of a user in an org, from the cache or the database.
    pub async fn membership_of(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<(Role, MembershipId)>, DbError> {
        if let Some((role, id, false)) = self.cache.member(org, user) {
            return Ok(Some((role, id)));
        }
        let found = db::tenant_tx(&self.db, TenantCtx::user_org(user, org), |c| {
            async move {
                store::find_membership(c, org, user)
                    .await
                    .map_err(DbError::from)
            }
            .scope_boxed()
        })
        .await?;
        Ok(found.map(|m| {
            self.cache.put_member(org, user, m.role_key, m.id);
            (m.role_key, m.id)
        }))
    }

    /// Creates a pending invitation; the token is `<orgId>.<128 random bits>` and only its hash is stored.
    pub async fn invite(
        &self,
        ctx: &OrgCtx,
        email: &str,
        role: Role,
    ) -> Result<InvitationView, OrgError> {
        let token = format!("{}.{}", ctx.org_id, crypto::random_token(24));
        let now = Utc::now();
        let inv = Invitation {
            id: InvitationId::random(),
            organization_id: ctx.org_id,
            email: email.trim().to_lowercase(),
            role_key: role,
            invited_by_user_id: ctx.user.user_id,
            token: crypto::sha256_hex(token.as_bytes()),
            status: InvitationStatus::Pending,
            expires_at: now + chrono::Duration::hours(INVITATION_TTL_HOURS),
            created_at: now,
        };
        let actor = ctx.user.user_id;
        let saved = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let saved = store::insert_invitation(c, &inv).await?;
                // The email is personal data, but it is what an admin needs to see here; the token is
                // never recorded.
                let entry = Entry::by(
                    actor,
                    saved.organization_id,
                    Action::InvitationCreate,
                    "invitation",
                )
                .target(saved.id)
                .details(serde_json::json!({"email": saved.email, "roleKey": saved.role_key}));
                audit::record(c, &entry).await?;
                Ok::<_, OrgError>(saved)
            }
            .scope_boxed()
        })
        .await?;
        Ok(InvitationView {
            id: saved.id,
            organization_id: saved.organization_id,
            email: saved.email,
            role_key: saved.role_key,
            invited_by_user_id: saved.invited_by_user_id,
            token,
            status: saved.status,
            expires_at: iso(saved.expires_at),
            created_at: iso(saved.created_at),
        })
    }

    /// Role change with owner safety: only an owner may assign `owner` or touch an owner, and an org
    /// never loses its last owner.
    pub async fn change_role(
        &self,
        ctx: &OrgCtx,
        target: UserId,
        role: Role,
    ) -> Result<Membership, OrgError> {
        if role == Role::Owner {
            ctx.require(Role::Owner, "Only owner can assign owner role")?;
        }
        let org = ctx.org_id;
        let updated = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let current = store::find_membership(c, org, target)
                    .await?
                    .ok_or(OrgError::MembershipNotFound)?;
                if current.role_key == Role::Owner {
                    ctx.require(Role::Owner, "Only owner can change an owner's role")?;
                    if role != Role::Owner && store::lock_owner_count(c, org).await? <= 1 {
                        return Err(OrgError::LastOwner);
                    }
                }
                let updated = store::set_role(c, current.id, role).await?;
                let entry = Entry::by(
                    ctx.user.user_id,
                    org,
                    Action::MemberRoleChange,
                    "membership",
                )
                .target(current.id)
                .details(serde_json::json!({
                    "userId": target, "from": current.role_key, "to": role
                }));
                audit::record(c, &entry).await?;
                Ok(updated)
            }
            .scope_boxed()
        })
        .await?;
        self.cache
            .invalidate(&self.redis, Forget::Member(org, target))
            .await;
        Ok(updated)
    }

    /// Accepts an invitation addressed to the caller's email. The invitation row is locked, so two
    /// parallel accepts cannot both create memberships; re-accepting is idempotent and keeps an existing
    /// role.
    pub async fn accept_invitation(
        &self,
        caller: &Principal,
        org: OrgId,
        token: &str,
    ) -> Result<Accepted, OrgError> {
        let token_hash = crypto::sha256_hex(token.as_bytes());
        let (user, email) = (caller.user_id, caller.email.to_lowercase());
        db::tenant_tx(&self.db, TenantCtx::user_org(user, org), |c| {
            async move {
                let inv = store::find_invitation_for_update(c, &token_hash)
                    .await?
                    .ok_or(OrgError::InvitationNotFound)?;
                if inv.email.to_lowercase() != email {
                    return Err(OrgError::InvitationForSomeoneElse);
                }
                if inv.expires_at <= Utc::now() {
                    return Err(OrgError::InvitationExpired);
                }
                if !matches!(
                    inv.status,
                    InvitationStatus::Pending | InvitationStatus::Accepted
                ) {
                    return Err(OrgError::InvitationNotPending);
                }
                let membership = match store::find_membership(c, org, user).await? {
                    Some(m) => m,
                    None => {
                        let new = Membership {
                            id: MembershipId::random(),
                            organization_id: org,
                            user_id: user,
                            role_key: inv.role_key,
                            created_at: Utc::now(),
                        };
                        store::insert_membership(c, &new).await?
                    }
                };
                if inv.status == InvitationStatus::Pending {
                    store::mark_invitation_accepted(c, inv.id).await?;
                    let entry = Entry::by(user, org, Action::InvitationAccept, "invitation")
                        .target(inv.id)
                        .details(serde_json::json!({
                            "membershipId": membership.id, "roleKey": membership.role_key
                        }));
                    audit::record(c, &entry).await?;
                }
                Ok(Accepted {
                    invitation_id: inv.id,
                    organization_id: org,
                    membership_id: membership.id,
                })
            }
            .scope_boxed()
        })
        .await
    }

    /// The org's stored settings (raw; see `settings::normalize`), cached with immediate invalidation on
    /// change. Used by the API and by every run.
    pub async fn stored_settings(&self, org: OrgId) -> Result<Value, OrgError> {
        if let Some(v) = self.cache.settings(org) {
            return Ok(v);
        }
        let stored = db::tenant_tx(&self.db, TenantCtx::org(org), |c| {
            async move { store::settings(c, org).await.map_err(OrgError::from) }.scope_boxed()
        })
        .await?
        .ok_or(OrgError::OrgNotFound)?;
        self.cache.put_settings(org, stored.clone());
        Ok(stored)
    }

    /// Validates and merges a settings update under a row lock; returns the stored result.
    pub async fn update_settings(&self, ctx: &OrgCtx, patch: Value) -> Result<Value, OrgError> {
        let org = ctx.org_id;
        // Validate before taking the row lock, then read-merge-write under it.
        settings::merge_update(&serde_json::json!({}), &patch)?;
        let actor = ctx.user.user_id;
        let saved = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move {
                let current = store::settings_for_update(c, org)
                    .await?
                    .ok_or(OrgError::OrgNotFound)?;
                let merged = settings::merge_update(&current, &patch)?;
                store::save_settings(c, org, &merged).await?;
                // What was asked to change (settings hold no secrets).
                let entry = Entry::by(actor, org, Action::OrgSettingsUpdate, "organization")
                    .target(org)
                    .details(serde_json::json!({"patch": patch}));
                audit::record(c, &entry).await?;
                Ok::<_, OrgError>(merged)
            }
            .scope_boxed()
        })
        .await?;
        self.cache
            .invalidate(&self.redis, Forget::Settings(org))
            .await;
        Ok(saved)
    }

    /// The org's credit balance and when it last changed (`0, None` before any ledger row).
    pub async fn credit_balance(&self, ctx: &OrgCtx) -> Result<(i64, Option<String>), OrgError> {
        let org = ctx.org_id;
        let row = db::tenant_tx(&self.db, ctx.tenant(), |c| {
            async move { store::credit_balance(c, org).await.map_err(OrgError::from) }.scope_boxed()
        })
        .await?;
        Ok(row.map(|(b, t)| (b, Some(iso(t)))).unwrap_or((0, None)))
    }
}

impl Memberships for Orgs {
    fn membership(
        &self,
        org: OrgId,
        user: UserId,
    ) -> BoxFuture<'_, Result<Option<(Role, MembershipId)>, LookupError>> {
        Box::pin(async move { Ok(self.membership_of(org, user).await?) })
    }
}

/// An org to create with its owner.
struct NewOrg<'a> {
    id: OrgId,
    slug: &'a str,
    name: &'a str,
    owner: UserId,
    grant: i64,
}

/// Org + owner membership + credit rows, in the caller's transaction. `None` when the slug is taken.
async fn create_org_rows(
    c: &mut AsyncPgConnection,
    new: NewOrg<'_>,
) -> Result<Option<(Org, Membership)>, OrgError> {
    let now = Utc::now();
    let org = Org {
        id: new.id,
        slug: new.slug.to_string(),
        name: new.name.to_string(),
        settings: serde_json::json!({}),
        created_at: now,
    };
    let Some(org) = store::insert_org(c, &org).await? else {
        return Ok(None);
    };
    let membership = store::insert_membership(
        c,
        &Membership {
            id: MembershipId::random(),
            organization_id: new.id,
            user_id: new.owner,
            role_key: Role::Owner,
            created_at: now,
        },
    )
    .await?;
    store::init_credits(c, new.id, new.grant, new.owner).await?;
    let entry = Entry::by(new.owner, new.id, Action::OrgCreate, "organization")
        .target(new.id)
        .details(serde_json::json!({"name": new.name, "slug": new.slug}));
    audit::record(c, &entry).await?;
    Ok(Some((org, membership)))
}
