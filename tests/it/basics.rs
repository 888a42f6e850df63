//! Health, readiness, metadata and the error envelope at the edge.

use serde_json::json;

use crate::common::{self, spawn};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn().await;
    let r = app.get("/healthz").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"ok": true}));
    let r = app.get("/readyz").send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["postgres"], "ok");
    assert_eq!(r.body["redis"], "ok");
    assert!(r
        .header("x-request-id")
        .is_some_and(|v| v.starts_with("req-")));
}

#[tokio::test]
async fn meta_community() {
    let app = spawn().await;
    let r = app.get("/v1/meta/capabilities").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["edition"], "community");
    assert_eq!(
        r.body["provider"],
        json!({"name": "community-core", "version": null})
    );
    assert_eq!(
        r.body["capabilities"],
        json!([
            "auth_email_oauth",
            "org_rbac_baseline",
            "workflow_dsl_v2",
            "workflow_async_queue",
            "tenant_rls"
        ])
    );
    let r = app.get("/v1/meta/connectors").send().await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["connectors"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["jira", "github", "slack", "email"]);
    assert_eq!(
        r.body["connectors"][0],
        json!({"id":"jira","displayName":"Jira","requiresSecret":true,"source":"community"})
    );
}

#[tokio::test]
async fn meta_enterprise_manifest_and_fallback() {
    let dir = std::env::temp_dir().join(format!("vespid-provider-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let manifest = dir.join("provider.json");
    std::fs::write(
        &manifest,
        json!({
            "edition": "enterprise", "name": "vespid-enterprise", "version": "0.4.0",
            "capabilities": ["sso", "advanced_rbac"],
            "connectors": [{"id": "salesforce", "displayName": "Salesforce", "requiresSecret": true}]
        })
        .to_string(),
    )
    .expect("write");
    let path = manifest.to_string_lossy().to_string();
    let app = common::spawn_with(
        common::Options::default().env("VESPID_ENTERPRISE_PROVIDER_MODULE", &path),
    )
    .await;
    let r = app.get("/v1/meta/capabilities").send().await;
    assert_eq!(r.body["edition"], "enterprise");
    assert_eq!(r.body["provider"]["name"], "vespid-enterprise");
    let caps = r.body["capabilities"].as_array().expect("caps");
    for c in ["tenant_rls", "sso", "advanced_rbac"] {
        assert!(caps.iter().any(|v| v == c), "{c} missing");
    }
    let r = app.get("/v1/meta/connectors").send().await;
    assert!(r.body["connectors"]
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c["id"] == "salesforce" && c["source"] == "enterprise"));

    // A module that cannot be resolved falls back to community; start-up does not fail.
    let app = common::spawn_with(common::Options::default().env(
        "VESPID_ENTERPRISE_PROVIDER_MODULE",
        "/nonexistent/provider.js",
    ))
    .await;
    let r = app.get("/v1/meta/capabilities").send().await;
    assert_eq!(r.body["edition"], "community");
}

#[tokio::test]
async fn error_envelope_at_the_edge() {
    let app = spawn().await;
    let u = app.signup("edge").await;
    // Unknown route.
    let r = app.get("/v1/nope").send().await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
    // Malformed JSON.
    let r = app
        .post("/v1/orgs")
        .by(&u)
        .raw("application/json", "{bad")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "FST_ERR_CTP_INVALID_JSON_BODY")
    );
    // JSON content type with an empty body.
    let r = app
        .post("/v1/orgs")
        .by(&u)
        .raw("application/json", "")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "FST_ERR_CTP_EMPTY_JSON_BODY")
    );
    // Wrong content type.
    let r = app
        .post("/v1/orgs")
        .by(&u)
        .raw("text/xml", "<a/>")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (415, "FST_ERR_CTP_INVALID_MEDIA_TYPE")
    );
    // Oversized body.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let r = app
        .post("/v1/orgs")
        .by(&u)
        .raw("application/json", big)
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (413, "FST_ERR_CTP_BODY_TOO_LARGE")
    );
    // Wrong shapes are validation errors with details, never framework codes.
    for body in [
        json!([1]),
        json!("s"),
        json!(5),
        json!({"name": null, "slug": 3}),
    ] {
        let r = app.post("/v1/orgs").by(&u).json(body.clone()).send().await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "BAD_REQUEST"),
            "{body}"
        );
        assert!(r.body["details"]["formErrors"].is_array(), "{:?}", r.body);
        assert!(r.body["details"]["fieldErrors"].is_object(), "{:?}", r.body);
    }
    // Non-UUID path ids: a clear 4xx.
    let r = app
        .get("/v1/orgs/not-a-uuid/settings")
        .by(&u)
        .org("not-a-uuid")
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "INVALID_ORG_CONTEXT"));
    let org = u.personal_org;
    let r = app
        .post(&format!("/v1/orgs/{org}/members/not-a-uuid/role"))
        .by(&u)
        .org(org)
        .json(json!({"roleKey": "admin"}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
}

#[tokio::test]
async fn cors_only_for_the_web_origin() {
    let app = spawn().await;
    let r = app
        .get("/healthz")
        .header("origin", "http://localhost:3000")
        .send()
        .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let r = app
        .get("/healthz")
        .header("origin", "http://evil.example")
        .send()
        .await;
    assert!(r.header("access-control-allow-origin").is_none());
}
