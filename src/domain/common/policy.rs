//! The one table of who may call which route. Every route of the API is listed with the least it
//! requires; the extractors look a route up here (a route without an entry is refused: deny by default),
//! `OrgCtx::authorize` enforces the role, and one test walks every role against every entry.
//!
//! Routes added by later work get their line here first.
//!
//! The table also says what an API key may do on each route ([`Keys`]): org routes name the scope a key
//! needs; routes that manage sessions, users, memberships or the keys themselves refuse keys outright.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::access::{Required, Role};
use super::scope::Scope;

/// The least a caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user (routes outside an org).
    User,
    /// A member of the route's org (`/v1/orgs/{orgId}/…`), any role.
    Member,
    /// An admin or owner of the route's org.
    Admin,
}

impl Access {
    /// The org role this access needs, if it is an org-scoped one.
    pub const fn min_role(self) -> Option<Role> {
        match self {
            Access::Public | Access::User => None,
            Access::Member => Some(Role::Member),
            Access::Admin => Some(Role::Admin),
        }
    }
}

/// Whether an API key may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// A public route that reads no credential: a key there is neither used nor refused.
    Ignored,
    /// Never with an API key (sessions and sign-in, users, memberships, invitations, the keys themselves).
    Refused,
    /// A key whose scopes grant this one (see `Scopes::grants`).
    Scope(Scope),
}

/// One route: method, path template (as registered), access, the message of a role refusal, and what an
/// API key needs there.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub denied: &'static str,
    pub keys: Keys,
}

impl Rule {
    /// The org role the route requires, with its refusal message (`None` outside orgs).
    pub fn required(&self) -> Option<Required> {
        self.access.min_role().map(|role| Required {
            role,
            denied: self.denied,
        })
    }
}

/// A route of `access`; public routes ignore keys, every other route refuses them until it names a scope.
const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
        denied: "Forbidden",
        keys: match access {
            Access::Public => Keys::Ignored,
            _ => Keys::Refused,
        },
    }
}

const fn admin(method: &'static str, path: &'static str, denied: &'static str) -> Rule {
    Rule {
        method,
        path,
        access: Access::Admin,
        denied,
        keys: Keys::Refused,
    }
}

impl Rule {
    /// An API key holding `scope` may call it.
    const fn scope(mut self, scope: Scope) -> Rule {
        self.keys = Keys::Scope(scope);
        self
    }

    /// A public route that refuses a key anyway (sign-in and session routes: a key is never a way in).
    const fn no_keys(mut self) -> Rule {
        self.keys = Keys::Refused;
        self
    }
}

const WORKFLOWS: &str = "Role is not allowed to manage workflows";
const SECRETS: &str = "Role is not allowed to manage secrets";
const EXECUTORS: &str = "Role is not allowed to manage executors";
const AUDIT: &str = "Role is not allowed to read the audit log";
const API_KEYS: &str = "Role is not allowed to manage API keys";
const USAGE: &str = "Role is not allowed to read usage";

/// Every route of the API.
pub const ROUTES: &[Rule] = &[
    // Health and metadata.
    rule("GET", "/healthz", Access::Public),
    rule("GET", "/readyz", Access::Public),
    rule("GET", "/v1/meta/capabilities", Access::Public),
    rule("GET", "/v1/meta/connectors", Access::Public),
    // The API description and its viewer.
    rule("GET", "/v1/openapi.json", Access::Public),
    rule("GET", "/docs", Access::Public),
    // Identity.
    rule("POST", "/v1/auth/signup", Access::Public).no_keys(),
    rule("POST", "/v1/auth/login", Access::Public).no_keys(),
    rule("POST", "/v1/auth/refresh", Access::Public).no_keys(),
    rule("GET", "/v1/auth/oauth/{provider}/start", Access::Public).no_keys(),
    rule("GET", "/v1/auth/oauth/{provider}/callback", Access::Public).no_keys(),
    rule("POST", "/v1/auth/logout", Access::User),
    rule("POST", "/v1/auth/logout-all", Access::User),
    rule("GET", "/v1/me", Access::User),
    // Organizations.
    rule("POST", "/v1/orgs", Access::User),
    rule("POST", "/v1/invitations/{token}/accept", Access::User),
    admin(
        "POST",
        "/v1/orgs/{orgId}/invitations",
        "Role is not allowed to invite members",
    ),
    admin(
        "POST",
        "/v1/orgs/{orgId}/members/{memberId}/role",
        "Role is not allowed to change membership roles",
    ),
    rule("GET", "/v1/orgs/{orgId}/settings", Access::Member).scope(Scope::OrgRead),
    admin(
        "PUT",
        "/v1/orgs/{orgId}/settings",
        "Role is not allowed to manage org settings",
    )
    .scope(Scope::OrgWrite),
    rule("GET", "/v1/orgs/{orgId}/billing/credits", Access::Member).scope(Scope::OrgRead),
    // API keys: managed by signed-in owners and admins only, never by a key.
    admin("POST", "/v1/orgs/{orgId}/api-keys", API_KEYS),
    admin("GET", "/v1/orgs/{orgId}/api-keys", API_KEYS),
    admin("DELETE", "/v1/orgs/{orgId}/api-keys/{keyId}", API_KEYS),
    // Connector secrets.
    admin("GET", "/v1/orgs/{orgId}/secrets", SECRETS).scope(Scope::SecretsRead),
    admin("POST", "/v1/orgs/{orgId}/secrets", SECRETS).scope(Scope::SecretsWrite),
    admin("PUT", "/v1/orgs/{orgId}/secrets/{secretId}", SECRETS).scope(Scope::SecretsWrite),
    admin("DELETE", "/v1/orgs/{orgId}/secrets/{secretId}", SECRETS).scope(Scope::SecretsWrite),
    // Workflows.
    admin("POST", "/v1/orgs/{orgId}/workflows", WORKFLOWS).scope(Scope::WorkflowsWrite),
    rule("GET", "/v1/orgs/{orgId}/workflows", Access::Member).scope(Scope::WorkflowsRead),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}",
        Access::Member,
    )
    .scope(Scope::WorkflowsRead),
    admin("PUT", "/v1/orgs/{orgId}/workflows/{workflowId}", WORKFLOWS).scope(Scope::WorkflowsWrite),
    admin(
        "POST",
        "/v1/orgs/{orgId}/workflows/{workflowId}/publish",
        WORKFLOWS,
    )
    .scope(Scope::WorkflowsWrite),
    admin(
        "POST",
        "/v1/orgs/{orgId}/workflows/{workflowId}/drafts",
        WORKFLOWS,
    )
    .scope(Scope::WorkflowsWrite),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/revisions",
        Access::Member,
    )
    .scope(Scope::WorkflowsRead),
    // Runs.
    rule(
        "POST",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs",
        Access::Member,
    )
    .scope(Scope::RunsWrite),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs",
        Access::Member,
    )
    .scope(Scope::RunsRead),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}",
        Access::Member,
    )
    .scope(Scope::RunsRead),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events",
        Access::Member,
    )
    .scope(Scope::RunsRead),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events/stream",
        Access::Member,
    )
    .scope(Scope::RunsRead),
    // Executors (node agents); `agents` and `executors` name the same thing.
    admin("GET", "/v1/orgs/{orgId}/agents", EXECUTORS).scope(Scope::AgentsRead),
    admin("GET", "/v1/orgs/{orgId}/executors", EXECUTORS).scope(Scope::AgentsRead),
    admin("POST", "/v1/orgs/{orgId}/agents/pairing-tokens", EXECUTORS).scope(Scope::AgentsAdmin),
    admin(
        "POST",
        "/v1/orgs/{orgId}/executors/pairing-tokens",
        EXECUTORS,
    )
    .scope(Scope::AgentsAdmin),
    admin(
        "POST",
        "/v1/orgs/{orgId}/agents/{agentId}/revoke",
        EXECUTORS,
    )
    .scope(Scope::AgentsAdmin),
    admin(
        "POST",
        "/v1/orgs/{orgId}/executors/{executorId}/revoke",
        EXECUTORS,
    )
    .scope(Scope::AgentsAdmin),
    admin(
        "PUT",
        "/v1/orgs/{orgId}/executors/{executorId}/labels",
        EXECUTORS,
    )
    .scope(Scope::AgentsAdmin),
    admin("PUT", "/v1/orgs/{orgId}/agents/{agentId}/tags", EXECUTORS).scope(Scope::AgentsAdmin),
    // The pairing token is the credential.
    rule("POST", "/v1/agents/pair", Access::Public),
    rule("POST", "/v1/executors/pair", Access::Public),
    // The trigger's token (or a signature made with it) is the credential.
    rule("POST", "/v1/hooks/{workflowId}", Access::Public),
    admin("GET", "/v1/orgs/{orgId}/audit", AUDIT),
    // LLM usage and the monthly budget.
    admin("GET", "/v1/orgs/{orgId}/usage", USAGE).scope(Scope::UsageRead),
    // Agent sessions: any member creates and reads the org's sessions.
    rule("POST", "/v1/orgs/{orgId}/sessions", Access::Member).scope(Scope::SessionsWrite),
    rule("GET", "/v1/orgs/{orgId}/sessions", Access::Member).scope(Scope::SessionsRead),
    rule(
        "GET",
        "/v1/orgs/{orgId}/sessions/{sessionId}",
        Access::Member,
    )
    .scope(Scope::SessionsRead),
    rule(
        "GET",
        "/v1/orgs/{orgId}/sessions/{sessionId}/events",
        Access::Member,
    )
    .scope(Scope::SessionsRead),
];

/// Rules by path template (a few methods each).
static INDEX: LazyLock<HashMap<&'static str, Vec<&'static Rule>>> = LazyLock::new(|| {
    let mut index: HashMap<&'static str, Vec<&'static Rule>> = HashMap::new();
    for r in ROUTES {
        index.entry(r.path).or_default().push(r);
    }
    index
});

/// The literal beginnings of the public routes that refuse API keys.
static KEYLESS_PUBLIC: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .filter(|r| r.access == Access::Public && r.keys == Keys::Refused)
        .map(|r| r.path.split('{').next().unwrap_or(r.path))
        .collect()
});

/// Whether a request path may be one of the public routes that refuse API keys (those are refused before
/// routing; every other route checks a key when it resolves the caller).
pub fn may_refuse_keys_early(path: &str) -> bool {
    KEYLESS_PUBLIC.iter().any(|p| path.starts_with(p))
}

/// The rule of `method` on the route template `path` (as the router matched it).
pub fn rule_for(method: &str, path: &str) -> Option<&'static Rule> {
    INDEX
        .get(path)?
        .iter()
        .find(|r| r.method == method)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once_and_org_routes_need_a_role() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            let org_scoped = r.path.starts_with("/v1/orgs/{orgId}");
            assert_eq!(
                org_scoped,
                r.access.min_role().is_some(),
                "{} {}",
                r.method,
                r.path
            );
            assert_eq!(rule_for(r.method, r.path).map(|x| x.path), Some(r.path));
        }
        assert!(rule_for("GET", "/v1/nope").is_none());
    }

    #[test]
    fn keys_reach_org_routes_only_and_every_scope_is_used() {
        for r in ROUTES {
            if let Keys::Scope(s) = r.keys {
                assert!(
                    r.path.starts_with("/v1/orgs/{orgId}"),
                    "{} {}",
                    r.method,
                    r.path
                );
                assert!(!r.path.contains("/api-keys"), "{} {}", r.method, r.path);
                // The scope's role is the route's role, so a key's role derived from its scopes fits.
                assert_eq!(
                    Some(s.role()),
                    r.access.min_role(),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
            if r.path.starts_with("/v1/auth/") || r.access == Access::User {
                assert_eq!(r.keys, Keys::Refused, "{} {}", r.method, r.path);
            }
        }
        assert!(may_refuse_keys_early("/v1/auth/oauth/github/start"));
        assert!(may_refuse_keys_early("/v1/auth/login"));
        assert!(!may_refuse_keys_early("/v1/orgs/x/settings"));
        for s in Scope::ALL {
            assert!(
                ROUTES.iter().any(|r| r.keys == Keys::Scope(*s)),
                "scope {s} names no route"
            );
        }
    }
}
