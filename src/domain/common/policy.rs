//! The one table of who may call which route. Every route of the API is listed with the least it
//! requires; the extractors look a route up here (a route without an entry is refused: deny by default),
//! `OrgCtx::authorize` enforces the role, and one test walks every role against every entry.
//!
//! Routes added by later work get their line here first.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::access::{Required, Role};

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

/// One route: method, path template (as registered), access, and the message of a role refusal.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub denied: &'static str,
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

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
        denied: "Forbidden",
    }
}

const fn admin(method: &'static str, path: &'static str, denied: &'static str) -> Rule {
    Rule {
        method,
        path,
        access: Access::Admin,
        denied,
    }
}

const WORKFLOWS: &str = "Role is not allowed to manage workflows";
const SECRETS: &str = "Role is not allowed to manage secrets";
const EXECUTORS: &str = "Role is not allowed to manage executors";

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
    rule("POST", "/v1/auth/signup", Access::Public),
    rule("POST", "/v1/auth/login", Access::Public),
    rule("POST", "/v1/auth/refresh", Access::Public),
    rule("GET", "/v1/auth/oauth/{provider}/start", Access::Public),
    rule("GET", "/v1/auth/oauth/{provider}/callback", Access::Public),
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
    rule("GET", "/v1/orgs/{orgId}/settings", Access::Member),
    admin(
        "PUT",
        "/v1/orgs/{orgId}/settings",
        "Role is not allowed to manage org settings",
    ),
    rule("GET", "/v1/orgs/{orgId}/billing/credits", Access::Member),
    // Connector secrets.
    admin("GET", "/v1/orgs/{orgId}/secrets", SECRETS),
    admin("POST", "/v1/orgs/{orgId}/secrets", SECRETS),
    admin("PUT", "/v1/orgs/{orgId}/secrets/{secretId}", SECRETS),
    admin("DELETE", "/v1/orgs/{orgId}/secrets/{secretId}", SECRETS),
    // Workflows.
    admin("POST", "/v1/orgs/{orgId}/workflows", WORKFLOWS),
    rule("GET", "/v1/orgs/{orgId}/workflows", Access::Member),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}",
        Access::Member,
    ),
    admin("PUT", "/v1/orgs/{orgId}/workflows/{workflowId}", WORKFLOWS),
    admin(
        "POST",
        "/v1/orgs/{orgId}/workflows/{workflowId}/publish",
        WORKFLOWS,
    ),
    admin(
        "POST",
        "/v1/orgs/{orgId}/workflows/{workflowId}/drafts",
        WORKFLOWS,
    ),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/revisions",
        Access::Member,
    ),
    // Runs.
    rule(
        "POST",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs",
        Access::Member,
    ),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs",
        Access::Member,
    ),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}",
        Access::Member,
    ),
    rule(
        "GET",
        "/v1/orgs/{orgId}/workflows/{workflowId}/runs/{runId}/events",
        Access::Member,
    ),
    // Executors (node agents); `agents` and `executors` name the same thing.
    admin("GET", "/v1/orgs/{orgId}/agents", EXECUTORS),
    admin("GET", "/v1/orgs/{orgId}/executors", EXECUTORS),
    admin("POST", "/v1/orgs/{orgId}/agents/pairing-tokens", EXECUTORS),
    admin(
        "POST",
        "/v1/orgs/{orgId}/executors/pairing-tokens",
        EXECUTORS,
    ),
    admin(
        "POST",
        "/v1/orgs/{orgId}/agents/{agentId}/revoke",
        EXECUTORS,
    ),
    admin(
        "POST",
        "/v1/orgs/{orgId}/executors/{executorId}/revoke",
        EXECUTORS,
    ),
    admin(
        "PUT",
        "/v1/orgs/{orgId}/executors/{executorId}/labels",
        EXECUTORS,
    ),
    admin("PUT", "/v1/orgs/{orgId}/agents/{agentId}/tags", EXECUTORS),
    // The pairing token is the credential.
    rule("POST", "/v1/agents/pair", Access::Public),
    rule("POST", "/v1/executors/pair", Access::Public),
];

/// Rules by path template (a few methods each).
static INDEX: LazyLock<HashMap<&'static str, Vec<&'static Rule>>> = LazyLock::new(|| {
    let mut index: HashMap<&'static str, Vec<&'static Rule>> = HashMap::new();
    for r in ROUTES {
        index.entry(r.path).or_default().push(r);
    }
    index
});

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
}
