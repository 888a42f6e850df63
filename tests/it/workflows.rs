//! Workflow endpoints (workflows spec §2.4, §2.5, §2.6; §8 server.test.ts): create, read, list with
//! cursors, draft updates, publish, clone into a new revision, revisions.

use std::collections::HashSet;

use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{self, Resp, TestApp, User};

fn sc(r: &Resp) -> (u16, &str) {
    (r.status.as_u16(), r.code())
}

fn smallest() -> Value {
    json!({"version":"v2","trigger":{"type":"trigger.manual"},"nodes":[{"id":"ping","type":"http.request"}]})
}

fn v3_condition() -> Value {
    json!({"version":"v3","trigger":{"type":"trigger.manual"},"graph":{"nodes":{
        "start":{"id":"start","type":"http.request"},
        "is-vip":{"id":"is-vip","type":"condition","config":{"path":"$.customer.tier","op":"eq","value":"vip"}},
        "fast":{"id":"fast","type":"http.request"},"slow":{"id":"slow","type":"http.request"}},
     "edges":[{"id":"a","from":"start","to":"is-vip"},{"id":"b","from":"is-vip","to":"fast","kind":"cond_true"},
              {"id":"c","from":"is-vip","to":"slow","kind":"cond_false"}]}})
}

/// root → {a (remote agent.execute), b} → join: a remote node inside a parallel region.
fn v3_remote_in_parallel() -> Value {
    json!({"version":"v3","trigger":{"type":"trigger.manual"},"graph":{"nodes":{
        "root":{"id":"root","type":"http.request"},
        "a":{"id":"a","type":"agent.execute","config":{"execution":{"mode":"executor"}}},
        "b":{"id":"b","type":"http.request"},
        "join":{"id":"join","type":"parallel.join"}},
     "edges":[{"id":"e1","from":"root","to":"a"},{"id":"e2","from":"root","to":"b"},
              {"id":"e3","from":"a","to":"join"},{"id":"e4","from":"b","to":"join"}]}})
}

struct Fx {
    app: TestApp,
    owner: User,
    admin: User,
    member: User,
    outsider: User,
    org: Uuid,
}

impl Fx {
    async fn new() -> Self {
        let app = common::spawn().await;
        let owner = app.signup("owner").await;
        let admin = app.signup("admin").await;
        let member = app.signup("member").await;
        let outsider = app.signup("outsider").await;
        let org = app.create_org(&owner).await;
        app.add_member(org, &owner, &admin, "admin").await;
        app.add_member(org, &owner, &member, "member").await;
        Self {
            app,
            owner,
            admin,
            member,
            outsider,
            org,
        }
    }

    fn base(&self) -> String {
        format!("/v1/orgs/{}/workflows", self.org)
    }

    async fn create_as(&self, user: &User, body: Value) -> Resp {
        self.app
            .post(&self.base())
            .by(user)
            .org(self.org)
            .json(body)
            .send()
            .await
    }

    /// A draft created by the owner; returns its id.
    async fn draft(&self, name: &str) -> String {
        let r = self
            .create_as(&self.owner, json!({"name": name, "dsl": smallest()}))
            .await;
        assert_eq!(r.status, 201, "create: {:?}", r.body);
        r.body["workflow"]["id"].as_str().expect("id").to_string()
    }

    async fn publish_as(&self, user: &User, id: &str) -> Resp {
        self.app
            .post(&format!("{}/{id}/publish", self.base()))
            .by(user)
            .org(self.org)
            .send()
            .await
    }

    async fn put_as(&self, user: &User, id: &str, body: Value) -> Resp {
        self.app
            .put(&format!("{}/{id}", self.base()))
            .by(user)
            .org(self.org)
            .json(body)
            .send()
            .await
    }

    async fn get_as(&self, user: &User, path: &str) -> Resp {
        self.app.get(path).by(user).org(self.org).send().await
    }
}

fn is_iso_millis(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}

#[tokio::test]
async fn create_returns_the_draft_shape() {
    let fx = Fx::new().await;
    let mut doc = smallest();
    doc["nodes"][0]["extra"] = json!("dropped");
    let r = fx
        .create_as(
            &fx.owner,
            json!({"name": "Nightly", "dsl": doc, "ignored": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let w = &r.body["workflow"];
    assert_eq!(w["status"], "draft");
    assert_eq!(w["version"], 1);
    assert_eq!(w["revision"], 1);
    assert_eq!(w["familyId"], w["id"]);
    assert_eq!(w["organizationId"], fx.org.to_string());
    assert_eq!(w["createdByUserId"], fx.owner.id.to_string());
    assert_eq!(w["name"], "Nightly");
    assert!(w["sourceWorkflowId"].is_null());
    assert!(w.get("editorState").is_some_and(Value::is_null), "{w}");
    assert!(w["publishedAt"].is_null());
    assert!(
        is_iso_millis(&w["createdAt"]) && is_iso_millis(&w["updatedAt"]),
        "{w}"
    );
    assert_eq!(
        w["dsl"],
        smallest(),
        "unknown keys dropped from the stored DSL"
    );

    // Admins may create too; the stored row reads back the same.
    let r = fx
        .create_as(&fx.admin, json!({"name": "By admin", "dsl": smallest()}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = w["id"].as_str().expect("id");
    let got = fx.get_as(&fx.member, &format!("{}/{id}", fx.base())).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["workflow"], *w);

    // A v3 document is accepted as well.
    let r = fx
        .create_as(&fx.owner, json!({"name": "Graph", "dsl": v3_condition()}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["workflow"]["dsl"]["version"], "v3");
}

#[tokio::test]
async fn create_checks_auth_org_role_then_body() {
    let fx = Fx::new().await;
    let body = json!({"name": "Nightly", "dsl": smallest()});
    let r = fx
        .app
        .post(&fx.base())
        .org(fx.org)
        .json(body.clone())
        .send()
        .await;
    assert_eq!(sc(&r), (401, "UNAUTHORIZED"));
    let r = fx
        .app
        .post(&fx.base())
        .by(&fx.owner)
        .json(body.clone())
        .send()
        .await;
    assert_eq!(sc(&r), (400, "ORG_CONTEXT_REQUIRED"), "{:?}", r.body);
    let r = fx.create_as(&fx.outsider, body.clone()).await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"), "{:?}", r.body);
    // Role comes before the body: an invalid body from a member is still 403.
    let r = fx.create_as(&fx.member, json!({"name": "x"})).await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    let r = fx.create_as(&fx.member, body).await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
}

#[tokio::test]
async fn create_validation_errors() {
    let fx = Fx::new().await;
    // Name too short and DSL missing: one 400, both fields reported.
    let r = fx.create_as(&fx.owner, json!({"name": "x"})).await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    assert!(
        r.body["details"]["fieldErrors"]["name"].is_array(),
        "{:?}",
        r.body
    );
    assert!(
        r.body["details"]["fieldErrors"]["dsl"].is_array(),
        "{:?}",
        r.body
    );
    assert!(r.body["details"]["formErrors"].is_array(), "{:?}", r.body);

    let long = "n".repeat(121);
    let r = fx
        .create_as(&fx.owner, json!({"name": long, "dsl": smallest()}))
        .await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"));
    assert!(
        r.body["details"]["fieldErrors"]["name"].is_array(),
        "{:?}",
        r.body
    );

    // An invalid DSL is reported under `dsl` (nested errors under the top-level key).
    for bad in [
        json!({"version":"v2","trigger":{"type":"trigger.manual"},"nodes":[]}),
        json!({"version":"v9","trigger":{"type":"trigger.manual"},"nodes":[{"id":"a","type":"http.request"}]}),
        json!({"version":"v2","trigger":{"type":"trigger.manual"},
               "nodes":[{"id":"x","type":"http.request","config":{"method":"get","url":"/"}}]}),
        json!("not an object"),
    ] {
        let r = fx
            .create_as(&fx.owner, json!({"name": "Nightly", "dsl": bad}))
            .await;
        assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{bad}: {:?}", r.body);
        let dsl = &r.body["details"]["fieldErrors"]["dsl"];
        assert!(
            dsl.as_array().is_some_and(|a| !a.is_empty()),
            "{bad}: {:?}",
            r.body
        );
        assert!(r.body["details"]["fieldErrors"].get("name").is_none());
    }

    // A body that is not an object.
    let r = fx.create_as(&fx.owner, json!([1, 2])).await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"));
    assert!(r.body["details"]["formErrors"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));

    // A v3 graph constraint answers with its own code and one issue.
    let r = fx
        .create_as(
            &fx.owner,
            json!({"name": "Fan out", "dsl": v3_remote_in_parallel()}),
        )
        .await;
    assert_eq!(
        sc(&r),
        (400, "PARALLEL_REMOTE_NOT_SUPPORTED"),
        "{:?}",
        r.body
    );
    let issues = r.body["details"]["issues"].as_array().expect("issues");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0]["code"], "PARALLEL_REMOTE_NOT_SUPPORTED");
    assert_eq!(issues[0]["nodeId"], "a");
    assert_eq!(issues[0]["message"], r.body["message"]);

    // Schema errors win over graph constraints.
    let r = fx
        .create_as(
            &fx.owner,
            json!({"name": "x", "dsl": v3_remote_in_parallel()}),
        )
        .await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);

    let count = fx.get_as(&fx.owner, &fx.base()).await;
    assert_eq!(count.body["workflows"], json!([]), "nothing stored");
}

#[tokio::test]
async fn get_is_scoped_to_the_org() {
    let fx = Fx::new().await;
    let id = fx.draft("Mine").await;
    // Another org of the outsider: the id is unknown there.
    let other = fx.app.create_org(&fx.outsider).await;
    let r = fx
        .app
        .get(&format!("/v1/orgs/{other}/workflows/{id}"))
        .by(&fx.outsider)
        .org(other)
        .send()
        .await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
    // The outsider cannot read it in its own org either.
    let r = fx
        .app
        .get(&format!("{}/{id}", fx.base()))
        .by(&fx.outsider)
        .org(fx.org)
        .send()
        .await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"));
    // Unknown and malformed ids are both 404 (Improve: never a 500).
    for bad in [
        Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
        "1234".into(),
    ] {
        let r = fx.get_as(&fx.member, &format!("{}/{bad}", fx.base())).await;
        assert_eq!(sc(&r), (404, "NOT_FOUND"), "{bad}: {:?}", r.body);
    }
    for path in ["publish", "drafts"] {
        let r = fx
            .app
            .post(&format!("{}/not-a-uuid/{path}", fx.base()))
            .by(&fx.owner)
            .org(fx.org)
            .send()
            .await;
        assert_eq!(sc(&r), (404, "NOT_FOUND"), "{path}: {:?}", r.body);
    }
    let r = fx.put_as(&fx.owner, "not-a-uuid", json!({})).await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"), "{:?}", r.body);
}

#[tokio::test]
async fn publish_roles_and_republish() {
    let fx = Fx::new().await;
    let id = fx.draft("Nightly").await;
    let r = fx.publish_as(&fx.member, &id).await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"), "{:?}", r.body);
    // Role before existence.
    let r = fx.publish_as(&fx.member, &Uuid::new_v4().to_string()).await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"));
    let r = fx.publish_as(&fx.owner, &Uuid::new_v4().to_string()).await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"));

    let r = fx.publish_as(&fx.owner, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let w = &r.body["workflow"];
    assert_eq!(w["status"], "published");
    assert_eq!(w["version"], 2);
    assert_eq!(w["id"], id.as_str(), "the draft row itself is published");
    assert!(is_iso_millis(&w["publishedAt"]), "{w}");
    assert_eq!(w["publishedAt"], w["updatedAt"]);
    assert!(
        w.get("editorState").is_some(),
        "editorState always included"
    );

    // Publishing again succeeds and bumps the version.
    let r = fx.publish_as(&fx.admin, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["workflow"]["status"], "published");
    assert_eq!(r.body["workflow"]["version"], 3);
}

#[tokio::test]
async fn update_draft_rules() {
    let fx = Fx::new().await;
    let id = fx.draft("Nightly").await;

    // `{}` is valid and still bumps the version.
    let r = fx.put_as(&fx.owner, &id, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["workflow"]["version"], 2);
    assert_eq!(r.body["workflow"]["name"], "Nightly");

    // Name, v3 DSL and editor state together, echoed back.
    let editor = json!({"viewport": {"x": 1, "y": 2}, "nodes": [{"id": "start"}]});
    let r = fx
        .put_as(
            &fx.owner,
            &id,
            json!({"name": "Renamed", "dsl": v3_condition(), "editorState": editor}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let w = &r.body["workflow"];
    assert_eq!(w["name"], "Renamed");
    assert_eq!(w["dsl"]["version"], "v3");
    assert_eq!(w["editorState"], editor);
    assert_eq!(w["version"], 3);
    assert_eq!(w["status"], "draft");

    // Strict body: an unknown key is a form error; other fields are still checked.
    let r = fx
        .put_as(
            &fx.owner,
            &id,
            json!({"name": "Ok name", "status": "published"}),
        )
        .await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    let form = r.body["details"]["formErrors"]
        .as_array()
        .expect("formErrors");
    assert!(
        form.iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains("status"))),
        "{:?}",
        r.body
    );
    let r = fx.put_as(&fx.owner, &id, json!({"name": "x"})).await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"));
    assert!(r.body["details"]["fieldErrors"]["name"].is_array());
    let r = fx
        .put_as(&fx.owner, &id, json!({"dsl": {"version": "v2"}}))
        .await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"));
    assert!(r.body["details"]["fieldErrors"]["dsl"].is_array());

    // Order: role before body, body before existence.
    let r = fx.put_as(&fx.member, &id, json!({"bogus": 1})).await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"));
    let ghost = Uuid::new_v4().to_string();
    let r = fx.put_as(&fx.owner, &ghost, json!({"bogus": 1})).await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"));
    let r = fx.put_as(&fx.owner, &ghost, json!({})).await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"));

    // A graph constraint on a draft: its own code.
    let r = fx
        .put_as(&fx.owner, &id, json!({"dsl": v3_remote_in_parallel()}))
        .await;
    assert_eq!(
        sc(&r),
        (400, "PARALLEL_REMOTE_NOT_SUPPORTED"),
        "{:?}",
        r.body
    );

    // Clearing the editor state.
    let r = fx
        .put_as(&fx.owner, &id, json!({"editorState": null}))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["workflow"]["editorState"].is_null());

    // Published rows are immutable: 409, checked before graph constraints.
    let r = fx.publish_as(&fx.owner, &id).await;
    assert_eq!(r.status, 200);
    let r = fx.put_as(&fx.owner, &id, json!({"name": "Again"})).await;
    assert_eq!(sc(&r), (409, "CONFLICT"), "{:?}", r.body);
    let r = fx
        .put_as(&fx.owner, &id, json!({"dsl": v3_remote_in_parallel()}))
        .await;
    assert_eq!(sc(&r), (409, "CONFLICT"), "{:?}", r.body);
}

#[tokio::test]
async fn drafts_clone_published_rows_into_revisions() {
    let fx = Fx::new().await;
    let id = fx.draft("Nightly").await;
    let editor = json!({"zoom": 2});
    let r = fx
        .put_as(&fx.owner, &id, json!({"editorState": editor}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let drafts = format!("{}/{id}/drafts", fx.base());

    // Only published rows can be cloned.
    let r = fx.app.post(&drafts).by(&fx.owner).org(fx.org).send().await;
    assert_eq!(sc(&r), (409, "CONFLICT"), "{:?}", r.body);
    let r = fx.publish_as(&fx.owner, &id).await;
    assert_eq!(r.status, 200);
    let r = fx.app.post(&drafts).by(&fx.member).org(fx.org).send().await;
    assert_eq!(sc(&r), (403, "FORBIDDEN"));
    let r = fx
        .app
        .post(&format!("{}/{}/drafts", fx.base(), Uuid::new_v4()))
        .by(&fx.owner)
        .org(fx.org)
        .send()
        .await;
    assert_eq!(sc(&r), (404, "NOT_FOUND"));

    let r = fx.app.post(&drafts).by(&fx.admin).org(fx.org).send().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let clone = r.body["workflow"].clone();
    let clone_id = clone["id"].as_str().expect("id").to_string();
    assert_ne!(clone_id, id);
    assert_eq!(clone["revision"], 2);
    assert_eq!(clone["familyId"], id.as_str());
    assert_eq!(clone["sourceWorkflowId"], id.as_str());
    assert_eq!(clone["status"], "draft");
    assert_eq!(clone["version"], 1);
    assert_eq!(clone["name"], "Nightly");
    assert_eq!(clone["dsl"], smallest());
    assert_eq!(clone["editorState"], editor);
    assert_eq!(clone["createdByUserId"], fx.admin.id.to_string());
    assert!(clone["publishedAt"].is_null());

    // The clone is editable; the original stays published.
    let r = fx
        .put_as(&fx.owner, &clone_id, json!({"name": "Nightly v2"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["workflow"]["status"], "draft");
    let r = fx.get_as(&fx.member, &format!("{}/{id}", fx.base())).await;
    assert_eq!(r.body["workflow"]["status"], "published");

    // Cloning the same published row again gives revision 3.
    let r = fx.app.post(&drafts).by(&fx.owner).org(fx.org).send().await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["workflow"]["revision"], 3);
    let third = r.body["workflow"]["id"].as_str().expect("id").to_string();

    // Revisions: the whole family from any member's view, newest revision first, from any row of it.
    for from in [&id, &clone_id] {
        let r = fx
            .get_as(
                &fx.member,
                &format!("{}/{from}/revisions?limit=50", fx.base()),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let ids: Vec<&str> = r.body["workflows"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|w| w["id"].as_str())
            .collect();
        assert_eq!(ids, vec![third.as_str(), clone_id.as_str(), id.as_str()]);
        assert!(r.body.get("nextCursor").is_none());
    }
    let r = fx
        .get_as(&fx.member, &format!("{}/{id}/revisions?limit=1", fx.base()))
        .await;
    assert_eq!(r.body["workflows"].as_array().map(Vec::len), Some(1));
    // Unknown (or malformed) ids have no revisions: 200 with an empty list.
    for unknown in [Uuid::new_v4().to_string(), "nope".to_string()] {
        let r = fx
            .get_as(&fx.member, &format!("{}/{unknown}/revisions", fx.base()))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["workflows"], json!([]));
    }
    let r = fx
        .get_as(&fx.member, &format!("{}/{id}/revisions?limit=0", fx.base()))
        .await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"));
}

async fn ids_of_all_pages(fx: &Fx, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let path = match &cursor {
            Some(c) => format!("{}?limit={limit}&cursor={c}", fx.base()),
            None => format!("{}?limit={limit}", fx.base()),
        };
        let r = fx.get_as(&fx.member, &path).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let page = r.body["workflows"].as_array().expect("workflows").clone();
        if page.is_empty() {
            assert!(r.body["nextCursor"].is_null(), "empty page has no cursor");
            return seen;
        }
        assert!(page.len() <= limit);
        let next = r.body["nextCursor"]
            .as_str()
            .expect("nextCursor")
            .to_string();
        seen.extend(
            page.iter()
                .filter_map(|w| w["id"].as_str().map(str::to_string)),
        );
        cursor = Some(next);
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn list_pages_without_repeats_or_gaps() {
    let fx = Fx::new().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(fx.draft(&format!("Workflow {i}")).await);
    }
    let walked = ids_of_all_pages(&fx, 2).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(walked, newest_first);

    // A page shorter than the limit still has a cursor; the rows carry full objects.
    let r = fx
        .get_as(&fx.member, &format!("{}?limit=50", fx.base()))
        .await;
    assert_eq!(r.status, 200);
    let all = r.body["workflows"].as_array().expect("list");
    assert_eq!(all.len(), 5);
    assert!(r.body["nextCursor"].is_string());
    assert!(all
        .iter()
        .all(|w| w.get("editorState").is_some() && w["dsl"].is_object()));

    // The cursor is base64url JSON with a microsecond timestamp and the last id.
    let cursor = r.body["nextCursor"].as_str().expect("cursor");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .expect("base64url");
    let doc: Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(doc["id"], created[0].as_str());
    assert_eq!(doc["createdAt"].as_str().map(str::len), Some(27), "{doc}");

    // An undecodable cursor is ignored (first page).
    for junk in ["%%%", "bm90LWpzb24"] {
        let r = fx
            .get_as(&fx.member, &format!("{}?limit=2&cursor={junk}", fx.base()))
            .await;
        assert_eq!(r.status, 200, "{junk}: {:?}", r.body);
        assert_eq!(r.body["workflows"][0]["id"], newest_first[0].as_str());
    }
    // One that decodes but lacks the fields is refused.
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for partial in [
        r#"{"id":"x"}"#,
        r#"{"createdAt":"2026-01-01T00:00:00.000Z"}"#,
        r#"{"createdAt":"yesterday","id":"6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"}"#,
        "[]",
    ] {
        let r = fx
            .get_as(
                &fx.member,
                &format!("{}?cursor={}", fx.base(), b64(partial)),
            )
            .await;
        assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{partial}: {:?}", r.body);
    }
    // Limits and an empty cursor.
    for q in ["limit=0", "limit=201", "limit=abc", "limit=1.5", "cursor="] {
        let r = fx.get_as(&fx.member, &format!("{}?{q}", fx.base())).await;
        assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{q}: {:?}", r.body);
    }
    let r = fx
        .get_as(&fx.member, &format!("{}?limit=200&unknown=1", fx.base()))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn list_validates_query_before_org_context() {
    let fx = Fx::new().await;
    let path = format!("{}?limit=0", fx.base());
    let r = fx.app.get(&path).send().await;
    assert_eq!(sc(&r), (401, "UNAUTHORIZED"));
    let r = fx.app.get(&path).by(&fx.outsider).org(fx.org).send().await;
    assert_eq!(sc(&r), (400, "BAD_REQUEST"), "{:?}", r.body);
    let r = fx
        .app
        .get(&fx.base())
        .by(&fx.outsider)
        .org(fx.org)
        .send()
        .await;
    assert_eq!(sc(&r), (403, "ORG_ACCESS_DENIED"));
    let r = fx.app.get(&fx.base()).by(&fx.member).send().await;
    assert_eq!(sc(&r), (400, "ORG_CONTEXT_REQUIRED"));
}

/// Rows that tie on `created_at`, or differ only below the millisecond, page without repeats or gaps
/// (spec 2.1 Improve). Seeded directly: rows in one transaction share `now()`.
#[tokio::test]
async fn list_pages_across_microsecond_ties() {
    let fx = Fx::new().await;
    let mut db = fx.app.owner_db().await;
    let tx = db.transaction().await.expect("begin");
    tx.execute(
        "SELECT set_config('app.current_user_id', $1, true), set_config('app.current_org_id', $2, true)",
        &[&fx.owner.id.to_string(), &fx.org.to_string()],
    )
    .await
    .expect("context");
    let stamps = [
        "now()",
        "now()",
        "now()",
        "now()",
        "'2026-01-01T00:00:00.000100Z'",
        "'2026-01-01T00:00:00.000200Z'",
        "'2026-01-01T00:00:00.000300Z'",
        "'2026-01-01T00:00:00.000300Z'",
    ];
    let mut expected = HashSet::new();
    for (i, at) in stamps.iter().enumerate() {
        let id = Uuid::new_v4();
        tx.execute(
            &format!(
                "INSERT INTO workflows (id, organization_id, family_id, revision, name, dsl, created_by_user_id, created_at) \
                 VALUES ($1, $2, $1, 1, 'Seeded {i}', '{{}}'::jsonb, $3, {at})"
            ),
            &[&id, &fx.org, &fx.owner.id],
        )
        .await
        .expect("insert");
        expected.insert(id.to_string());
    }
    tx.commit().await.expect("commit");

    for limit in [1, 2, 3] {
        let walked = ids_of_all_pages(&fx, limit).await;
        let unique: HashSet<String> = walked.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            walked.len(),
            "limit {limit}: repeats {walked:?}"
        );
        assert_eq!(unique, expected, "limit {limit}: gaps");
    }
}
