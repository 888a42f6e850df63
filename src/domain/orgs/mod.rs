//! Organizations and RBAC: org creation, the personal workspace, memberships and role changes,
//! invitations, org settings, and membership resolution for the org-context rule.

pub mod context;
pub mod model;
pub mod routes;
pub mod settings;
pub mod store;

use chrono::{Duration, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use crate::app::state::AppState;
use crate::domain::auth::model::{iso, Principal};
use crate::platform::crypto;
use crate::platform::db::{self, TenantCtx};
use crate::platform::http::ApiError;
pub use context::OrgCtx;
use model::{Invitation, InvitationView, Membership, MyOrg, Org, Role};

const INVITATION_TTL_HOURS: i64 = 72;

/// Memberships of the caller (oldest org first); creates the personal workspace first when there is none.
pub async fn my_orgs(state: &AppState, user: Uuid) -> Result<Vec<MyOrg>, ApiError> {
    let list = list_my_orgs(state, user).await?;
    if !list.is_empty() {
        return Ok(list);
    }
    ensure_personal_workspace(state, user).await?;
    list_my_orgs(state, user).await
}

async fn list_my_orgs(state: &AppState, user: Uuid) -> Result<Vec<MyOrg>, ApiError> {
    db::tenant_tx(&state.db, TenantCtx::user(user), |c| {
        async move { store::my_orgs(c, user).await.map_err(ApiError::from) }.scope_boxed()
    })
    .await
}

/// Every user has at least one org: a user without memberships gets "Personal workspace". Serialised per
/// user by an advisory lock so parallel logins cannot create two.
pub async fn ensure_personal_workspace(state: &AppState, user: Uuid) -> Result<(), ApiError> {
    let grant = state.config.orgs.personal_trial_credits.max(0);
    db::tenant_tx(&state.db, TenantCtx::user(user), |c| {
        async move {
            store::lock_user(c, user).await?;
            if store::count_my_memberships(c, user).await? > 0 {
                return Ok(());
            }
            let base = format!("personal-{}", &user.simple().to_string()[..8]);
            for attempt in 0..3 {
                let slug = if attempt == 0 {
                    base.clone()
                } else {
                    format!(
                        "{base}-{}",
                        &crypto::sha256_hex(Uuid::new_v4().as_bytes())[..6]
                    )
                };
                let org_id = Uuid::new_v4();
                // The new org's id is the org context, so the inserts pass WITH CHECK.
                db::set_context(c, TenantCtx::user_org(user, org_id)).await?;
                if create_org_rows(c, org_id, &slug, "Personal workspace", user, grant)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
            }
            Err(ApiError::conflict(
                "Could not allocate a personal workspace slug",
            ))
        }
        .scope_boxed()
    })
    .await
}

/// Org + owner membership + credit rows, in the caller's transaction. `None` when the slug is taken.
async fn create_org_rows(
    c: &mut diesel_async::AsyncPgConnection,
    org_id: Uuid,
    slug: &str,
    name: &str,
    user: Uuid,
    grant: i64,
) -> Result<Option<(Org, Membership)>, ApiError> {
    let now = Utc::now();
    let org = Org {
        id: org_id,
        slug: slug.to_string(),
        name: name.to_string(),
        settings: serde_json::json!({}),
        created_at: now,
    };
    let Some(org) = store::insert_org(c, &org).await? else {
        return Ok(None);
    };
    let membership = store::insert_membership(
        c,
        &Membership {
            id: Uuid::new_v4(),
            organization_id: org_id,
            user_id: user,
            role_key: Role::Owner.key().into(),
            created_at: now,
        },
    )
    .await?;
    store::init_credits(c, org_id, grant, user).await?;
    Ok(Some((org, membership)))
}

pub async fn create_org(
    state: &AppState,
    user: Uuid,
    name: String,
    slug: String,
) -> Result<(Org, Membership), ApiError> {
    let org_id = Uuid::new_v4();
    let created = db::tenant_tx(&state.db, TenantCtx::user_org(user, org_id), |c| {
        async move { create_org_rows(c, org_id, &slug, &name, user, 0).await }.scope_boxed()
    })
    .await?
    .ok_or_else(|| ApiError::conflict("Organization slug already exists"))?;
    state
        .auth
        .cache
        .put_member(org_id, user, Role::Owner.key(), created.1.id);
    Ok(created)
}

/// `(role, membership id)` of a user in an org, from the cache or the database.
pub async fn membership_of(
    state: &AppState,
    org: Uuid,
    user: Uuid,
) -> Result<Option<(Role, Uuid)>, ApiError> {
    if let Some((role, id, false)) = state.auth.cache.member(org, user) {
        return Ok(Role::parse(&role).map(|r| (r, id)));
    }
    let found = db::tenant_tx(&state.db, TenantCtx::user_org(user, org), |c| {
        async move {
            store::find_membership(c, org, user)
                .await
                .map_err(ApiError::from)
        }
        .scope_boxed()
    })
    .await?;
    Ok(found.and_then(|m| {
        state.auth.cache.put_member(org, user, &m.role_key, m.id);
        Role::parse(&m.role_key).map(|r| (r, m.id))
    }))
}

/// Creates a pending invitation; the token is `<orgId>.<128 random bits>` and only its hash is stored.
pub async fn invite(
    ctx: &OrgCtx,
    state: &AppState,
    email: &str,
    role: Role,
) -> Result<InvitationView, ApiError> {
    let token = format!("{}.{}", ctx.org_id, crypto::random_token(24));
    let now = Utc::now();
    let inv = Invitation {
        id: Uuid::new_v4(),
        organization_id: ctx.org_id,
        email: email.trim().to_lowercase(),
        role_key: role.key().into(),
        invited_by_user_id: ctx.user.user_id,
        token: crypto::sha256_hex(token.as_bytes()),
        status: "pending".into(),
        expires_at: now + Duration::hours(INVITATION_TTL_HOURS),
        created_at: now,
    };
    let saved = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            store::insert_invitation(c, &inv)
                .await
                .map_err(ApiError::from)
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

/// Role change with owner safety: only an owner may assign `owner` or touch an owner, and an org never
/// loses its last owner.
pub async fn change_role(
    ctx: &OrgCtx,
    state: &AppState,
    target: Uuid,
    role: Role,
) -> Result<Membership, ApiError> {
    if role == Role::Owner && ctx.role != Role::Owner {
        return Err(ApiError::forbidden("Only owner can assign owner role"));
    }
    let (org, caller_role) = (ctx.org_id, ctx.role);
    let updated = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            let current = store::find_membership(c, org, target)
                .await?
                .ok_or_else(|| ApiError::not_found("Membership not found"))?;
            if current.role_key == Role::Owner.key() {
                if caller_role != Role::Owner {
                    return Err(ApiError::forbidden("Only owner can change an owner's role"));
                }
                if role != Role::Owner && store::lock_owner_count(c, org).await? <= 1 {
                    return Err(ApiError::conflict(
                        "Organization must keep at least one owner",
                    ));
                }
            }
            Ok(store::set_role(c, current.id, role.key()).await?)
        }
        .scope_boxed()
    })
    .await?;
    state
        .auth
        .cache
        .invalidate(&state.redis, format!("member:{org}:{target}"))
        .await;
    Ok(updated)
}

pub struct Accepted {
    pub invitation_id: Uuid,
    pub organization_id: Uuid,
    pub membership_id: Uuid,
}

/// Accepts an invitation addressed to the caller's email. The invitation row is locked, so two parallel
/// accepts cannot both create memberships; re-accepting is idempotent and keeps an existing role.
pub async fn accept_invitation(
    state: &AppState,
    caller: &Principal,
    org: Uuid,
    token: &str,
) -> Result<Accepted, ApiError> {
    let token_hash = crypto::sha256_hex(token.as_bytes());
    let (user, email) = (caller.user_id, caller.email.to_lowercase());
    db::tenant_tx(&state.db, TenantCtx::user_org(user, org), |c| {
        async move {
            let inv = store::find_invitation_for_update(c, &token_hash)
                .await?
                .ok_or_else(|| ApiError::not_found("Invitation not found"))?;
            if inv.email.to_lowercase() != email {
                return Err(ApiError::forbidden(
                    "Invitation email does not match authenticated user",
                ));
            }
            if inv.expires_at <= Utc::now() {
                return Err(ApiError::bad_request("Invitation has expired"));
            }
            if inv.status != "pending" && inv.status != "accepted" {
                return Err(ApiError::bad_request("Invitation is not pending"));
            }
            let membership = match store::find_membership(c, org, user).await? {
                Some(m) => m,
                None => {
                    store::insert_membership(
                        c,
                        &Membership {
                            id: Uuid::new_v4(),
                            organization_id: org,
                            user_id: user,
                            role_key: inv.role_key.clone(),
                            created_at: Utc::now(),
                        },
                    )
                    .await?
                }
            };
            if inv.status == "pending" {
                store::mark_invitation_accepted(c, inv.id).await?;
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

/// The org's stored settings (raw; see `settings::normalize`), cached with immediate invalidation on change.
pub async fn stored_settings(state: &AppState, org: Uuid) -> Result<serde_json::Value, ApiError> {
    if let Some(v) = state.auth.cache.org_settings(org) {
        return Ok(v);
    }
    let stored = db::tenant_tx(&state.db, TenantCtx::org(org), |c| {
        async move { store::settings(c, org).await.map_err(ApiError::from) }.scope_boxed()
    })
    .await?
    .ok_or_else(|| ApiError::not_found("Organization not found"))?;
    state.auth.cache.put_org_settings(org, stored.clone());
    Ok(stored)
}

/// Validates and merges a settings update under a row lock; returns the stored result.
pub async fn update_settings(
    ctx: &OrgCtx,
    state: &AppState,
    patch: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let org = ctx.org_id;
    // Validate before taking the row lock, then read-merge-write under it.
    settings::merge_update(&serde_json::json!({}), &patch)?;
    let saved = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move {
            let current = store::settings_for_update(c, org)
                .await?
                .ok_or_else(|| ApiError::not_found("Organization not found"))?;
            let merged = settings::merge_update(&current, &patch)?;
            store::save_settings(c, org, &merged).await?;
            Ok::<_, ApiError>(merged)
        }
        .scope_boxed()
    })
    .await?;
    state
        .auth
        .cache
        .invalidate(&state.redis, format!("settings:{org}"))
        .await;
    Ok(saved)
}

pub async fn credit_balance(
    ctx: &OrgCtx,
    state: &AppState,
) -> Result<(i64, Option<String>), ApiError> {
    let org = ctx.org_id;
    let row = db::tenant_tx(&state.db, ctx.tenant(), |c| {
        async move { store::credit_balance(c, org).await.map_err(ApiError::from) }.scope_boxed()
    })
    .await?;
    Ok(row.map(|(b, t)| (b, Some(iso(t)))).unwrap_or((0, None)))
}
