//! The OpenAPI document (`GET /v1/openapi.json`) against the code: it describes every route the api role
//! registers and nothing else (the registrations are read from the sources, see `common::routes`), it is
//! OpenAPI 3.1, every reference resolves, every error answer is described with the envelope, and real
//! answers have the shapes it gives them.

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

/// Whether `value` has the shape `schema` describes: types, enums, required properties, no undescribed
/// property, array items, `oneOf`; `$ref`s followed. Problems are pushed with the JSON path.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = resolve(doc, reference).expect("reference resolves");
        return conforms(doc, target, value, at, problems);
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let fits = branches.iter().any(|b| {
            let mut p = Vec::new();
            conforms(doc, b, value, at, &mut p);
            p.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: {value} fits no branch of {schema}"));
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.is_empty()
        && !types
            .iter()
            .any(|t| *t == kind || (*t == "number" && kind == "integer"))
    {
        problems.push(format!("{at}: a {kind} where the document says {types:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema["properties"].as_object() {
                for required in schema["required"].as_array().into_iter().flatten() {
                    let name = required.as_str().unwrap_or_default();
                    if !fields.contains_key(name) {
                        problems.push(format!("{at}: required {name} is missing"));
                    }
                }
                for (name, v) in fields {
                    match properties.get(name) {
                        Some(s) => conforms(doc, s, v, &format!("{at}.{name}"), problems),
                        None => problems.push(format!("{at}: {name} is not in the document")),
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// The JSON schema the document gives for `status` of `method path`.
fn schema_of<'d>(doc: &'d Value, method: &str, path: &str, status: u16) -> &'d Value {
    let r = &doc["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
    assert!(!r.is_null(), "{method} {path} documents no {status}");
    &response(doc, r)["content"]["application/json"]["schema"]
}

/// Real answers have the shapes the document gives them (the wrapper objects are written by hand next to
/// the handlers' `json!`, so this is what keeps the two together).
#[tokio::test]
async fn real_answers_have_the_documented_shapes() {
    let doc = document();
    let app = spawn().await;
    let email = app.unique_email("openapi");
    let signup = app
        .post("/v1/auth/signup")
        .json(serde_json::json!({ "email": email, "password": crate::common::PASSWORD }))
        .send()
        .await;
    let token = signup.body["session"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let me = app.get("/v1/me").bearer(&token).send().await;
    let org = me.body["defaultOrgId"].as_str().expect("org").to_string();
    let slug = format!("oa-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let created = app
        .post("/v1/orgs")
        .bearer(&token)
        .json(serde_json::json!({ "name": "OpenAPI", "slug": slug }))
        .send()
        .await;
    let mut answers = vec![
        ("POST", "/v1/auth/signup", signup),
        ("GET", "/v1/me", me),
        ("POST", "/v1/orgs", created),
    ];
    // An agent session, its list and its events (objects with every field).
    let session = app
        .post(&format!("/v1/orgs/{org}/sessions"))
        .bearer(&token)
        .org(&org)
        .json(serde_json::json!({
            "llm": { "model": "gpt-4.1-mini" },
            "prompt": { "instructions": "Help." },
            "tools": {},
        }))
        .send()
        .await;
    let session_id = session.body["session"]["id"]
        .as_str()
        .expect("session")
        .to_string();
    answers.push(("POST", "/v1/orgs/{orgId}/sessions", session));
    for (template, path) in [
        (
            "/v1/orgs/{orgId}/sessions",
            format!("/v1/orgs/{org}/sessions"),
        ),
        (
            "/v1/orgs/{orgId}/sessions/{sessionId}",
            format!("/v1/orgs/{org}/sessions/{session_id}"),
        ),
        (
            "/v1/orgs/{orgId}/sessions/{sessionId}/events",
            format!("/v1/orgs/{org}/sessions/{session_id}/events"),
        ),
    ] {
        let r = app.get(&path).bearer(&token).org(&org).send().await;
        answers.push(("GET", template, r));
    }
    for (method, template) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/meta/capabilities"),
        ("GET", "/v1/meta/connectors"),
        ("GET", "/v1/orgs/{orgId}/settings"),
        ("GET", "/v1/orgs/{orgId}/billing/credits"),
        ("GET", "/v1/orgs/{orgId}/secrets"),
        ("GET", "/v1/orgs/{orgId}/workflows"),
        ("GET", "/v1/orgs/{orgId}/agents"),
        ("POST", "/v1/orgs/{orgId}/agents/pairing-tokens"),
        ("GET", "/v1/orgs/{orgId}/workflows/{workflowId}"),
        ("POST", "/v1/orgs/{orgId}/invitations"),
    ] {
        let path = template
            .replace("{orgId}", &org)
            .replace("{workflowId}", &uuid::Uuid::new_v4().to_string());
        let req = app
            .req(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
            )
            .bearer(&token)
            .org(&org);
        let req = if method == "POST" {
            req.json(serde_json::json!({}))
        } else {
            req
        };
        answers.push((method, template, req.send().await));
    }
    let mut problems = Vec::new();
    for (method, path, r) in &answers {
        let schema = schema_of(&doc, method, path, r.status.as_u16());
        conforms(
            &doc,
            schema,
            &r.body,
            &format!("{method} {path} {}", r.status.as_u16()),
            &mut problems,
        );
    }
    // The last ones are errors: an unknown workflow (404) and an invitation without a body (400).
    assert_eq!(answers[answers.len() - 2].2.status, 404);
    assert_eq!(answers[answers.len() - 1].2.status, 400);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
