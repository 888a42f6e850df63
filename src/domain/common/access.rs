//! Who is calling and what they may do, shared by every domain: the authenticated [`Principal`], the org
//! [`Role`] ladder, the resolved [`OrgCtx`] handlers authorize against, and the two lookups the extractors
//! need ([`Authenticator`], [`Memberships`]), implemented by the auth and orgs services and injected by the
//! composition root. Keeping these here is what lets auth and orgs stay independent of each other.

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::ids::{ApiKeyId, MembershipId, OrgId, SessionId, UserId};
use super::scope::Scopes;
use crate::platform::db::{DbError, TenantCtx};

crate::text_enum! {
    /// Org roles. They form a ladder: a guard asks for a minimum (see [`Role::rank`]).
    pub enum Role {
        Member = "member",
        Admin = "admin",
        Owner = "owner",
    }
}

impl Role {
    pub const fn rank(self) -> u8 {
        match self {
            Role::Member => 1,
            Role::Admin => 2,
            Role::Owner => 3,
        }
    }

    /// `true` when this role is `min` or higher.
    pub const fn at_least(self, min: Role) -> bool {
        self.rank() >= min.rank()
    }

    /// The lower of the two roles.
    pub const fn lower(self, other: Role) -> Role {
        if self.rank() <= other.rank() {
            self
        } else {
            other
        }
    }
}

/// How an API key starts (`vsk_<public id>_<secret>`): a bearer credential with it is an API key.
pub const API_KEY_PREFIX: &str = "vsk_";

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// For an API key: the member who created it (the key acts inside the org on their behalf).
    pub user_id: UserId,
    /// Empty for an API key (no route that reads it accepts keys).
    pub email: String,
    /// For an API key: nil (a key has no session; the session routes refuse keys).
    pub session_id: SessionId,
    /// Authenticated by the refresh cookie (browser) rather than a bearer token: cross-site writes are
    /// refused for these.
    pub via_cookie: bool,
    /// Set when the caller is an API key: what the key may do, checked against every route.
    pub api_key: Option<KeyGrant>,
}

/// What an API key carries: its org, its scopes and the most it may act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: ApiKeyId,
    pub org_id: OrgId,
    pub scopes: Scopes,
    /// The role its scopes call for, never above its creator's role when it was created (the org
    /// context lowers it further to the creator's current role).
    pub role: Role,
}

/// Why an API key presented as a bearer credential was refused (it was well-formed and its secret matched
/// for `Expired` and `Revoked`; anything else is `Invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("API key is invalid")]
    Invalid,
    #[error("API key has expired")]
    Expired,
    #[error("API key has been revoked")]
    Revoked,
}

/// A caller resolved inside one org by the org-context rule: a member with a role.
#[derive(Debug, Clone)]
pub struct OrgCtx {
    pub org_id: OrgId,
    pub user: Principal,
    pub role: Role,
    pub membership_id: MembershipId,
    /// What the route requires (from the access table), checked by [`OrgCtx::authorize`]; `None` when
    /// the route has no entry, which is refused.
    pub required: Option<Required>,
}

/// A route's least role and the message of its refusal.
#[derive(Debug, Clone, Copy)]
pub struct Required {
    pub role: Role,
    pub denied: &'static str,
}

/// A role that is not enough for what was asked; the message says what was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    pub message: &'static str,
}

impl OrgCtx {
    /// The row-level-security context of this caller in this org.
    pub fn tenant(&self) -> TenantCtx {
        TenantCtx::user_org(self.user.user_id, self.org_id)
    }

    /// Checks the route's declared minimum role. Handlers call it where the spec places the role check
    /// (after the org context, usually before the body is validated). A route without a rule is refused:
    /// authorization is deny-by-default.
    pub fn authorize(&self) -> Result<(), Denied> {
        match self.required {
            Some(r) if self.role.at_least(r.role) => Ok(()),
            Some(r) => Err(Denied { message: r.denied }),
            None => Err(Denied {
                message: "Route has no access rule",
            }),
        }
    }

    /// An explicit check beyond the route's rule (e.g. only an owner may touch an owner).
    pub fn require(&self, min: Role, message: &'static str) -> Result<(), Denied> {
        if self.role.at_least(min) {
            Ok(())
        } else {
            Err(Denied { message })
        }
    }
}

/// How strictly `X-Org-Id` must match the route's org (identity spec 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    Strict,
    Warn,
}

/// What the extractors need to know beyond the lookups; registered once by the api role.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub session_cookie_name: String,
    /// The web app's origin: cookie-authenticated writes must come from it.
    pub web_origin: String,
    pub enforcement: Enforcement,
}

/// A lookup failed for a reason other than "no": the caller answers 503/500.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The bearer credential is an API key that must not be accepted.
    #[error(transparent)]
    KeyRefused(#[from] KeyRefusal),
}

/// The caller resolved from a bearer token or the refresh cookie, plus a freshly minted access token when
/// the cookie was used (the response carries it in `x-access-token`).
pub struct Authenticated {
    pub principal: Principal,
    pub minted_access_token: Option<String>,
}

/// Resolves the caller of a request (implemented by the auth service).
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        bearer: Option<&'a str>,
        cookie: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, LookupError>>;
}

/// Resolves a user's membership of an org (implemented by the orgs service).
pub trait Memberships: Send + Sync + 'static {
    fn membership(
        &self,
        org: OrgId,
        user: UserId,
    ) -> BoxFuture<'_, Result<Option<(Role, MembershipId)>, LookupError>>;
}
