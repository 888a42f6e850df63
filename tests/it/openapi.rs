//! The OpenAPI document (`GET /v1/openapi.json`) against the code: it describes every route the api role
//! registers and nothing else (the registrations are read from the sources, see `common::routes`), it is
//! OpenAPI 3.1, every reference resolves, and every error answer is described with the envelope.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::routes::api_routes;
use crate::common::spawn;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];
const ENVELOPE: &str = "#/components/schemas/Error";

fn document() -> Value {
    serde_json::to_value(vespid::roles::openapi::document()).expect("serialize the document")
}

/// (METHOD, path) of every operation of the document.
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.insert((method.to_uppercase(), path.clone()), op);
            }
        }
    }
    ops
}

/// What a JSON pointer `#/a/b` names in the document.
fn resolve<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// The response itself, following a `$ref` into `components.responses`.
fn response<'d>(doc: &'d Value, r: &'d Value) -> &'d Value {
    match r["$ref"].as_str() {
        Some(reference) => resolve(doc, reference)
            .unwrap_or_else(|| panic!("response reference {reference} does not resolve")),
        None => r,
    }
}

fn is_envelope(doc: &Value, r: &Value) -> bool {
    response(doc, r)["content"]["application/json"]["schema"]["$ref"].as_str() == Some(ENVELOPE)
}

fn every_ref<'d>(v: &'d Value, out: &mut Vec<&'d str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => every_ref(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| every_ref(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_describes_every_registered_route_and_no_other() {
    let doc = document();
    let registered: BTreeSet<(String, String)> = api_routes()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert!(
        registered.len() >= 45,
        "too few registrations read: {registered:?}"
    );
    let documented: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes the OpenAPI document does not describe (see src/roles/openapi.rs on adding one): {undocumented:?}"
    );
    assert!(
        unregistered.is_empty(),
        "the OpenAPI document describes routes the code does not register: {unregistered:?}"
    );
}

#[test]
fn every_operation_is_complete_and_every_error_is_the_envelope() {
    let doc = document();
    let mut refs = Vec::new();
    every_ref(&doc, &mut refs);
    for r in &refs {
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
    let envelope = resolve(&doc, ENVELOPE).expect("the envelope schema");
    let required: BTreeSet<&str> = envelope["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, BTreeSet::from(["code", "message"]), "{envelope}");
    assert!(envelope["properties"]["details"].is_object(), "{envelope}");

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for ((method, path), op) in operations(&doc) {
        let name = format!("{method} {path}");
        match op["operationId"].as_str() {
            Some(id) if ids.insert(id.to_string()) => {}
            other => problems.push(format!("{name}: missing or repeated operationId {other:?}")),
        }
        let responses = op["responses"].as_object().expect("responses");
        if !responses.keys().any(|s| s.starts_with('2')) {
            problems.push(format!("{name}: no success response"));
        }
        // An operation that takes nothing from the caller (no parameter, body or credential) cannot fail
        // on the caller's side; every other one can, and says how.
        let takes_input = op.get("parameters").is_some()
            || op.get("requestBody").is_some()
            || op.get("security").is_some();
        let client_errors: Vec<_> = responses
            .iter()
            .filter(|(s, _)| s.starts_with('4'))
            .collect();
        if takes_input && client_errors.is_empty() {
            problems.push(format!("{name}: no 4xx response"));
        }
        for (status, r) in responses {
            let error = status.starts_with('4') || status.starts_with('5');
            // `/readyz` answers its own body when a dependency is down (for load balancers).
            let own_body = path == "/readyz" && status == "503";
            if error && !own_body && !is_envelope(&doc, r) {
                problems.push(format!(
                    "{name}: {status} is not described with the envelope"
                ));
            }
        }
        if !responses
            .iter()
            .any(|(s, r)| (s.starts_with('4') || s.starts_with('5')) && is_envelope(&doc, r))
        {
            problems.push(format!("{name}: no error response with the envelope"));
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for segment in path.split('/') {
            if let Some(p) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if !params.iter().any(|x| x["name"] == p && x["in"] == "path") {
                    problems.push(format!("{name}: path parameter {p} is not described"));
                }
            }
        }
        if path.starts_with("/v1/orgs/{orgId}") {
            if !params
                .iter()
                .any(|x| x["name"] == "X-Org-Id" && x["in"] == "header" && x["required"] == true)
            {
                problems.push(format!("{name}: no required X-Org-Id header"));
            }
            for status in ["401", "403"] {
                if !responses.contains_key(status) {
                    problems.push(format!("{name}: no {status}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "User",
        "Org",
        "Membership",
        "Invitation",
        "Secret",
        "Workflow",
        "Run",
        "RunEvent",
        "Executor",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let secret = serde_json::to_string(&schemas["Secret"]).unwrap();
    assert!(
        !secret.contains("\"value\""),
        "a secret's value is never answered: {secret}"
    );
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for name in [
        "bearerAuth",
        "sessionCookie",
        "webhookSignature",
        "webhookToken",
    ] {
        assert!(schemes.contains_key(name), "no security scheme {name}");
    }
}

#[tokio::test]
async fn the_document_and_its_viewer_are_served() {
    let app = spawn().await;
    let r = app.get("/v1/openapi.json").send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    assert!(r
        .header("cache-control")
        .is_some_and(|c| c.contains("public")));
    assert!(
        r.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        r.body["openapi"]
    );
    assert_eq!(
        r.body,
        document(),
        "the served document is the generated one"
    );
    let etag = r.header("etag").expect("etag");
    let again = app
        .get("/v1/openapi.json")
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(again.status, 304);

    let page = app.get("/docs").send().await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let html = page.body.as_str().expect("html");
    assert!(html.contains("v1/openapi.json"), "{html}");
    // The inline script runs under the page's CSP only if its hash is there.
    let csp = page.header("content-security-policy").expect("csp");
    let script = html
        .split("<script>")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .expect("inline script");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp}");
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src "))
        .expect("script-src");
    assert!(!script_src.contains("unsafe"), "{csp}");
    assert!(
        html.matches("integrity=\"sha384-").count() == 2,
        "the viewer's files are pinned by hash: {html}"
    );
}
