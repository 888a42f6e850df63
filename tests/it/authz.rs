//! The access table walked: every route of `policy::ROUTES` (the one declaration of who may call what)
//! against every role (anonymous, signed-in outsider, member, admin, owner), on one app. Each request is
//! judged on access only: ids in paths are random, POST/PUT bodies are `{}`, so a caller that gets through
//! meets a 400/404/409/503 of the handler rather than a 401/403 of the extractors. Every problem is
//! collected and reported at once, each naming the method, the path and the role.

use std::fmt::Write as _;
use std::time::Instant;

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;
use vespid::domain::common::policy::{self, Access, Rule, ROUTES};

use crate::common::routes::api_routes;
use crate::common::{spawn, Resp, TestApp, User, PASSWORD};

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    /// Signed in, not a member of the route's org.
    Outsider,
    Member,
    Admin,
    Owner,
}

const CALLERS: [Caller; 5] = [
    Caller::Anonymous,
    Caller::Outsider,
    Caller::Member,
    Caller::Admin,
    Caller::Owner,
];

impl Caller {
    fn name(self) -> &'static str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Outsider => "non-member",
            Caller::Member => "member",
            Caller::Admin => "admin",
            Caller::Owner => "owner",
        }
    }

    /// Index into the signed-in users (`None` for anonymous).
    fn user(self) -> Option<usize> {
        match self {
            Caller::Anonymous => None,
            Caller::Outsider => Some(0),
            Caller::Member => Some(1),
            Caller::Admin => Some(2),
            Caller::Owner => Some(3),
        }
    }
}

/// The route template with its placeholders filled: `{orgId}` is the test org, `{token}` an invitation
/// token of that org (`<orgId>.<random>`, unknown to the app), `{provider}` a supported OAuth provider,
/// every other `{…}` a random UUID.
fn concrete_path(template: &str, org: Uuid) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|i| open + i)
            .unwrap_or_else(|| panic!("unbalanced placeholder in {template}"));
        out.push_str(&rest[..open]);
        match &rest[open + 1..close] {
            "orgId" => out.push_str(&org.to_string()),
            "token" => out.push_str(&format!("{org}.{}", Uuid::new_v4().simple())),
            "provider" => out.push_str("github"),
            _ => out.push_str(&Uuid::new_v4().to_string()),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether a request on this route names the test org (and so carries `X-Org-Id` for it).
fn names_org(rule: &Rule) -> bool {
    rule.path.contains("{orgId}") || rule.path.contains("{token}")
}

fn message(r: &Resp) -> &str {
    r.body["message"].as_str().unwrap_or("")
}

/// The extractors' answer to an anonymous caller.
fn is_unauthenticated(r: &Resp) -> bool {
    r.status == 401 && r.code() == "UNAUTHORIZED" && message(r) == "Unauthorized"
}

/// The default service's answer: no route matched.
fn is_unknown_route(r: &Resp) -> bool {
    r.status == 404 && r.code() == "NOT_FOUND" && message(r) == "Not Found"
}

fn show(r: &Resp) -> String {
    format!("{} {}", r.status.as_u16(), r.body)
}

/// What the access table demands of `caller` on `rule`; `Err` says what went wrong.
fn judge(rule: &Rule, caller: Caller, r: &Resp) -> Result<(), String> {
    if r.status == 500 {
        return Err(format!("server error: {}", show(r)));
    }
    let signed_in = caller != Caller::Anonymous;
    let through = |r: &Resp| {
        if r.status == 401 || r.status == 403 {
            Err(format!(
                "expected to get through (not 401/403), got {}",
                show(r)
            ))
        } else {
            Ok(())
        }
    };
    let needs_sign_in = |r: &Resp| {
        if is_unauthenticated(r) {
            Ok(())
        } else if is_unknown_route(r) {
            Err(format!(
                "expected 401 UNAUTHORIZED, got the unknown-route 404 (is the route registered?): {}",
                show(r)
            ))
        } else {
            Err(format!("expected 401 UNAUTHORIZED, got {}", show(r)))
        }
    };
    let not_a_member = |r: &Resp| {
        if r.status == 403 && r.code() == "ORG_ACCESS_DENIED" {
            Ok(())
        } else {
            Err(format!("expected 403 ORG_ACCESS_DENIED, got {}", show(r)))
        }
    };
    match rule.access {
        Access::Public => {
            // Handlers may answer 401 themselves (refresh without its cookie) but never the extractors'
            // 401, and never a 403; the default 404 would mean the route is not registered.
            if is_unauthenticated(r) || r.status == 403 {
                Err(format!("public route refused by access: {}", show(r)))
            } else if is_unknown_route(r) {
                Err(format!(
                    "unknown-route 404 (is the route registered?): {}",
                    show(r)
                ))
            } else {
                Ok(())
            }
        }
        Access::User if signed_in => through(r),
        Access::User | Access::Member | Access::Admin if !signed_in => needs_sign_in(r),
        Access::Member | Access::Admin if caller == Caller::Outsider => not_a_member(r),
        Access::Admin if caller == Caller::Member => {
            if r.status == 403 && r.code() == "FORBIDDEN" && message(r) == rule.denied {
                Ok(())
            } else {
                Err(format!(
                    "expected 403 FORBIDDEN \"{}\", got {}",
                    rule.denied,
                    show(r)
                ))
            }
        }
        Access::User | Access::Member | Access::Admin => through(r),
    }
}

/// A fresh session for `user` (a new access token; the old one is left as it is).
async fn login(app: &TestApp, user: &User) -> String {
    let r = app
        .post("/v1/auth/login")
        .json(json!({ "email": user.email, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(r.status, 200, "login {}: {}", user.email, show(&r));
    r.body["session"]["token"]
        .as_str()
        .expect("session token")
        .to_string()
}

#[tokio::test]
async fn every_role_against_every_route_of_the_access_table() {
    // The table is the test's only list of routes: make sure it is not trivially small.
    for group in ["/v1/auth/", "/v1/orgs", "/secrets", "/workflows", "/runs"] {
        assert!(
            ROUTES.iter().any(|r| r.path.contains(group)),
            "no route of group {group} in the access table"
        );
    }
    for access in [Access::Public, Access::User, Access::Member, Access::Admin] {
        assert!(
            ROUTES.iter().any(|r| r.access == access),
            "no {access:?} route in the access table"
        );
    }
    assert!(ROUTES.len() >= 30, "only {} routes", ROUTES.len());

    let started = Instant::now();
    let app = spawn().await;
    let owner = app.signup("authz-owner").await;
    let admin = app.signup("authz-admin").await;
    let member = app.signup("authz-member").await;
    let outsider = app.signup("authz-outsider").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    app.add_member(org, &owner, &member, "member").await;
    // Indexed by `Caller::user`.
    let mut users = [outsider, member, admin, owner];
    let setup = started.elapsed();

    // Calibration: an unknown route answers the default service's 404, to anyone (not a 401).
    let unknown = format!("/v1/orgs/{org}/no-such-route-{}", Uuid::new_v4().simple());
    let r = app.get(&unknown).send().await;
    assert!(
        is_unknown_route(&r),
        "GET {unknown} anonymous: {}",
        show(&r)
    );
    let r = app.get(&unknown).by(&users[3]).org(org).send().await;
    assert!(is_unknown_route(&r), "GET {unknown} owner: {}", show(&r));

    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut requests = 0usize;
    for rule in ROUTES {
        let method = Method::from_bytes(rule.method.as_bytes())
            .unwrap_or_else(|e| panic!("{} {}: bad method: {e}", rule.method, rule.path));
        for caller in CALLERS {
            let path = concrete_path(rule.path, org);
            let mut req = app.req(method.clone(), &path);
            if let Some(i) = caller.user() {
                req = req.by(&users[i]);
                if names_org(rule) {
                    req = req.org(org);
                }
            }
            if method == Method::POST || method == Method::PUT {
                req = req.json(json!({}));
            }
            let r = req.send().await;
            requests += 1;
            if let Err(e) = judge(rule, caller, &r) {
                problems.push(format!(
                    "{} {} ({path}) as {}: {e}",
                    rule.method,
                    rule.path,
                    caller.name()
                ));
            }
        }
        // A handler that ends sessions (logout, logout-all) must not spoil the next routes: whoever lost
        // their session signs in again.
        for (i, user) in users.iter_mut().enumerate() {
            let r = app.get("/v1/me").by(user).send().await;
            requests += 1;
            if r.status == 401 {
                let caller = CALLERS[i + 1];
                notes.push(format!(
                    "{} {} ended the session of the {}; signed in again",
                    rule.method,
                    rule.path,
                    caller.name()
                ));
                user.token = login(&app, user).await;
            } else {
                assert_eq!(
                    r.status,
                    200,
                    "GET /v1/me after {}: {}",
                    rule.path,
                    show(&r)
                );
            }
        }
    }
    let walk = started.elapsed() - setup;
    eprintln!(
        "authz: {} routes x {} callers, {requests} requests; setup {setup:?}, walk {walk:?}",
        ROUTES.len(),
        CALLERS.len()
    );
    for n in &notes {
        eprintln!("authz: {n}");
    }
    let mut report = String::new();
    for p in &problems {
        let _ = writeln!(report, "  {p}");
    }
    assert!(
        problems.is_empty(),
        "{} access problem(s):\n{report}",
        problems.len()
    );
}

/// The other direction: every route the code registers has its line in the access table (the
/// registrations are read from the sources, see `common::routes`).
#[test]
fn every_registered_route_is_in_the_access_table() {
    let found: Vec<_> = api_routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.file))
        .collect();
    assert!(found.len() >= 30, "too few registrations found: {found:?}");
    let missing: Vec<_> = found
        .iter()
        .filter(|(method, path, _)| policy::rule_for(method, path).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an access rule: {missing:?}"
    );
    assert_eq!(
        found.len(),
        ROUTES.len(),
        "the table lists routes the code does not register: {found:?}"
    );
}

/// The access table's API-key column walked: every route against a key of each scope (and a key of
/// every scope), each key of the test org, sent without `X-Org-Id` (a key names its org). A route that
/// names a scope lets through exactly the keys whose scopes grant it and answers the others 403
/// `API_KEY_SCOPE_MISSING`; a route that refuses keys answers every key 403 `API_KEY_NOT_ALLOWED`
/// (the public sign-in and session routes included); a public route that ignores keys treats the request
/// as any other.
#[tokio::test]
async fn every_api_key_scope_against_every_route_of_the_access_table() {
    use vespid::domain::common::policy::Keys;
    use vespid::domain::common::scope::{Scope, Scopes};

    let started = Instant::now();
    let app = spawn().await;
    let owner = app.signup("authz-keys").await;
    let org = app.create_org(&owner).await;
    // One key per scope, then one with every scope.
    let mut keys: Vec<(String, Scopes, String)> = Vec::new();
    for s in Scope::ALL {
        let (key, _) = crate::apikeys::create_key(&app, &owner, org, &[s.as_str()], None).await;
        keys.push((key, [*s].into_iter().collect(), s.as_str().to_string()));
    }
    let every: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    let (key, _) = crate::apikeys::create_key(&app, &owner, org, &every, None).await;
    keys.push((
        key,
        Scope::ALL.iter().copied().collect(),
        "every scope".into(),
    ));

    let mut problems: Vec<String> = Vec::new();
    let mut requests = 0usize;
    for rule in ROUTES {
        let method = Method::from_bytes(rule.method.as_bytes())
            .unwrap_or_else(|e| panic!("{} {}: bad method: {e}", rule.method, rule.path));
        for (key, scopes, name) in &keys {
            let path = concrete_path(rule.path, org);
            let mut req = app.req(method.clone(), &path).bearer(key);
            if method == Method::POST || method == Method::PUT {
                req = req.json(json!({}));
            }
            let r = req.send().await;
            requests += 1;
            let verdict = match rule.keys {
                _ if r.status == 500 => Err(format!("server error: {}", show(&r))),
                Keys::Ignored => judge(rule, Caller::Anonymous, &r),
                Keys::Refused => {
                    if r.status == 403 && r.code() == "API_KEY_NOT_ALLOWED" {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected 403 API_KEY_NOT_ALLOWED, got {}",
                            show(&r)
                        ))
                    }
                }
                Keys::Scope(s) if scopes.grants(s) => {
                    if r.status == 401 || r.status == 403 {
                        Err(format!(
                            "expected to get through with {s}, got {}",
                            show(&r)
                        ))
                    } else {
                        Ok(())
                    }
                }
                Keys::Scope(s) => {
                    if r.status == 403
                        && r.code() == "API_KEY_SCOPE_MISSING"
                        && r.body["details"]["requiredScope"] == s.as_str()
                    {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected 403 API_KEY_SCOPE_MISSING ({s}), got {}",
                            show(&r)
                        ))
                    }
                }
            };
            if let Err(e) = verdict {
                problems.push(format!(
                    "{} {} ({path}) with a key of {name}: {e}",
                    rule.method, rule.path
                ));
            }
        }
    }
    // Every key is still live (no route a key reached revoked one) and the owner still signed in.
    for (key, _, name) in &keys {
        let r = app
            .get(&format!("/v1/orgs/{org}/settings"))
            .bearer(key)
            .send()
            .await;
        let want = if name == "org:read" || name == "org:write" || name == "every scope" {
            200
        } else {
            403
        };
        assert_eq!(
            r.status.as_u16(),
            want,
            "key of {name} after the walk: {}",
            show(&r)
        );
    }
    assert_eq!(app.get("/v1/me").by(&owner).send().await.status, 200);
    eprintln!(
        "authz keys: {} routes x {} keys, {requests} requests in {:?}",
        ROUTES.len(),
        keys.len(),
        started.elapsed()
    );
    let mut report = String::new();
    for p in &problems {
        let _ = writeln!(report, "  {p}");
    }
    assert!(
        problems.is_empty(),
        "{} API-key access problem(s):\n{report}",
        problems.len()
    );
}
