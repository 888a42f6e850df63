//! Triggers that fire: cron schedules (exactly once per tick with two schedulers, the catch-up policy,
//! a replaced revision stops the schedule) and webhooks (signature, replay, token header, idempotency,
//! size, content types, rate limit, unknown and non-webhook workflows).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::common::{spawn_with, Options, TestApp, User};
use crate::runs::{published, start_worker, wait_terminal};
use vespid::app::state::AppState;
use vespid::domain::triggers::scheduler;
use vespid::domain::triggers::signature::sign;

fn cron_dsl(cron: &str) -> Value {
    json!({"version": "v2", "trigger": {"type": "trigger.cron", "config": {"cron": cron}},
           "nodes": [{"id": "stub", "type": "http.request"}]})
}

fn hook_dsl(token: &str) -> Value {
    json!({"version": "v2", "trigger": {"type": "trigger.webhook", "config": {"token": token}},
           "nodes": [{"id": "stub", "type": "http.request"}]})
}

fn opts() -> Options {
    crate::runs::opts().env("TRIGGERS_CRON_POLL_MS", "200")
}

/// A second, independent instance (its own pools and service objects) over the same database and
/// Redis namespace: what another `vespid serve --role=continuation` process would be.
async fn second_instance(app: &TestApp) -> AppState {
    AppState::build(app.config.clone(), None)
        .await
        .expect("second instance")
}

fn start_scheduler(state: &AppState) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    scheduler::spawn(state.triggers.clone(), rx);
    tx
}

async fn runs_of(app: &TestApp, user: &User, org: Uuid, wf: Uuid) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/orgs/{org}/workflows/{wf}/runs?limit=200"))
        .by(user)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["runs"].as_array().cloned().unwrap_or_default()
}

fn tick_of(run: &Value) -> String {
    run["input"]["triggeredBy"]["tick"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_cron_schedule_fires_each_tick_once_with_two_schedulers_and_stops_when_replaced() {
    let app = spawn_with(opts()).await;
    let other = second_instance(&app).await;
    let _worker = start_worker(&app);
    let owner = app.signup("cron").await;
    let org = owner.personal_org;
    let wf = published(&app, &owner, org, cron_dsl("*/2 * * * * *")).await;
    let (_a, _b) = (start_scheduler(&app.state), start_scheduler(&other));
    tokio::time::sleep(Duration::from_millis(6500)).await;

    let runs = runs_of(&app, &owner, org, wf).await;
    assert!(
        runs.len() >= 2,
        "expected at least 2 ticks in 6.5 s: {runs:?}"
    );
    let mut ticks: Vec<String> = runs.iter().map(tick_of).collect();
    ticks.sort();
    let before = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), before, "a tick fired twice: {ticks:?}");
    for run in &runs {
        assert_eq!(run["triggerType"], "cron");
        assert_eq!(run["input"]["triggeredBy"]["type"], "cron");
        assert_eq!(run["input"]["triggeredBy"]["cron"], "*/2 * * * * *");
        let tick = chrono::DateTime::parse_from_rfc3339(&tick_of(run)).expect("tick time");
        assert_eq!(
            tick.timestamp() % 2,
            0,
            "not a tick of the schedule: {tick}"
        );
    }
    // Consecutive ticks, none skipped while the schedulers ran.
    let secs: Vec<i64> = ticks
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp())
        .collect();
    assert!(secs.windows(2).all(|w| w[1] - w[0] == 2), "{ticks:?}");
    let first: Uuid = runs[0]["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&app, &owner, org, wf, first, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // A new revision with a manual trigger replaces the schedule at the next pass.
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{wf}/drafts"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let draft = r.body["workflow"]["id"].as_str().unwrap().to_string();
    let r = app
        .put(&format!("/v1/orgs/{org}/workflows/{draft}"))
        .by(&owner)
        .org(org)
        .json(
            json!({"dsl": {"version": "v2", "trigger": {"type": "trigger.manual"},
                              "nodes": [{"id": "stub", "type": "http.request"}]}}),
        )
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows/{draft}/publish"))
        .by(&owner)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A pass already under way when it was published may still fire one tick.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let settled = runs_of(&app, &owner, org, wf).await.len();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        runs_of(&app, &owner, org, wf).await.len(),
        settled,
        "the replaced schedule kept firing"
    );
}

/// Moves a workflow's publication back in time, as if the schedule had existed through an outage.
async fn published_long_ago(app: &TestApp, org: Uuid, wf: Uuid) {
    let db = app.owner_db().await;
    db.batch_execute(&format!(
        "BEGIN; SELECT set_config('app.current_org_id', '{org}', true); \
         UPDATE workflows SET published_at = now() - interval '3 days' WHERE id = '{wf}'; COMMIT;"
    ))
    .await
    .expect("backdate");
}

#[tokio::test]
async fn after_downtime_the_latest_missed_tick_fires_once_or_not_at_all_as_configured() {
    // Daily at midnight UTC: after "three days" down, three ticks were missed.
    let app = spawn_with(opts()).await;
    let owner = app.signup("cron-catchup").await;
    let org = owner.personal_org;
    let wf = published(&app, &owner, org, cron_dsl("0 0 * * *")).await;
    published_long_ago(&app, org, wf).await;
    let now = chrono::Utc::now();
    let fired = app.state.triggers.fire_due(now).await.expect("pass");
    assert_eq!(fired.runs, 1);
    let again = app.state.triggers.fire_due(now).await.expect("pass");
    assert_eq!(again.runs, 0, "a tick fired twice");
    let runs = runs_of(&app, &owner, org, wf).await;
    assert_eq!(runs.len(), 1);
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&tick_of(&runs[0])).unwrap(),
        midnight
    );

    let none = spawn_with(opts().env("TRIGGERS_CRON_CATCH_UP", "none")).await;
    let owner = none.signup("cron-none").await;
    let org = owner.personal_org;
    let wf = published(&none, &owner, org, cron_dsl("0 0 * * *")).await;
    published_long_ago(&none, org, wf).await;
    let fired = none.state.triggers.fire_due(now).await.expect("pass");
    assert_eq!(fired.runs, 0);
    assert!(runs_of(&none, &owner, org, wf).await.is_empty());
}

#[tokio::test]
async fn schedules_that_cannot_fire_are_refused_when_saved() {
    let app = spawn_with(opts()).await;
    let owner = app.signup("cron-bad").await;
    let org = owner.personal_org;
    for (trigger, path) in [
        (json!({"cron": "61 * * * *"}), "trigger.config.cron"),
        (json!({"cron": "every day"}), "trigger.config.cron"),
        (
            json!({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}),
            "trigger.config.timezone",
        ),
    ] {
        let r = app
            .post(&format!("/v1/orgs/{org}/workflows"))
            .by(&owner)
            .org(org)
            .json(json!({"name": "bad", "dsl": {"version": "v2",
                "trigger": {"type": "trigger.cron", "config": trigger},
                "nodes": [{"id": "stub", "type": "http.request"}]}}))
            .send()
            .await;
        assert_eq!(r.status, 400, "{trigger}: {:?}", r.body);
        assert!(r.body.to_string().contains(path), "{path}: {:?}", r.body);
    }
    // A zone is kept with the schedule.
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "ok", "dsl": {"version": "v2",
            "trigger": {"type": "trigger.cron", "config": {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris"}},
            "nodes": [{"id": "stub", "type": "http.request"}]}}))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["workflow"]["dsl"]["trigger"]["config"]["timezone"],
        "Europe/Paris"
    );
}

fn hook(app: &TestApp, wf: impl std::fmt::Display) -> crate::common::Req<'_> {
    app.post(&format!("/v1/hooks/{wf}"))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn a_signed_webhook_starts_a_run_with_its_body_and_a_replay_is_refused() {
    let app = spawn_with(opts()).await;
    let _worker = start_worker(&app);
    let owner = app.signup("hook").await;
    let org = owner.personal_org;
    let wf = published(&app, &owner, org, hook_dsl("s3cret-token")).await;
    let body = r#"{"event":"push","n":1}"#;
    let sig = sign("s3cret-token", now(), body.as_bytes());
    let r = hook(&app, wf)
        .header("x-vespid-signature", &sig)
        .raw("application/json", body)
        .send()
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["run"]["triggerType"], "webhook");
    assert_eq!(r.body["run"]["input"], json!({"event": "push", "n": 1}));
    let run: Uuid = r.body["run"]["id"].as_str().unwrap().parse().unwrap();
    let done = wait_terminal(&app, &owner, org, wf, run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The very same signed request again: a replay.
    let r = hook(&app, wf)
        .header("x-vespid-signature", &sig)
        .raw("application/json", body)
        .send()
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.code(), "WEBHOOK_REPLAYED");

    // Wrong token, another body under the old signature, a stale time, garbage, nothing at all.
    let cases = [
        (
            Some(sign("wrong", now(), body.as_bytes())),
            None,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        (
            Some(sign("s3cret-token", now(), b"{}")),
            None,
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        (
            Some(sign("s3cret-token", now() - 3600, body.as_bytes())),
            None,
            "WEBHOOK_SIGNATURE_EXPIRED",
        ),
        (
            Some("t=x,v1=zz".to_string()),
            None,
            "WEBHOOK_SIGNATURE_MALFORMED",
        ),
        (None, Some("nope"), "WEBHOOK_SIGNATURE_INVALID"),
        (None, None, "WEBHOOK_SIGNATURE_REQUIRED"),
    ];
    for (sig, token, code) in cases {
        let mut req = hook(&app, wf);
        if let Some(sig) = &sig {
            req = req.header("x-vespid-signature", sig);
        }
        if let Some(token) = token {
            req = req.header("x-vespid-webhook-token", token);
        }
        let r = req.raw("application/json", body).send().await;
        assert_eq!(r.status, 401, "{code}: {:?}", r.body);
        assert_eq!(r.code(), code);
    }
    // One run only, from the one good delivery.
    assert_eq!(runs_of(&app, &owner, org, wf).await.len(), 1);
}

#[tokio::test]
async fn the_token_header_idempotency_keys_forms_and_limits() {
    let app = spawn_with(
        opts()
            .env("WEBHOOK_MAX_BYTES", "1024")
            .env("WEBHOOK_RATE_PER_MINUTE", "6"),
    )
    .await;
    let owner = app.signup("hook2").await;
    let org = owner.personal_org;
    let wf = published(&app, &owner, org, hook_dsl("tok")).await;

    // The bare token, and an Idempotency-Key: the retry gets the same run.
    let send = |key: &'static str| {
        let app = &app;
        async move {
            hook(app, wf)
                .header("x-vespid-webhook-token", "tok")
                .header("idempotency-key", key)
                .raw("application/json", r#"{"a":1}"#)
                .send()
                .await
        }
    };
    let first = send("delivery-1").await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let retry = send("delivery-1").await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(retry.body["run"]["id"], first.body["run"]["id"]);
    // Concurrent retries of another delivery: still one run.
    let (a, b) = tokio::join!(send("delivery-2"), send("delivery-2"));
    assert_eq!(a.body["run"]["id"], b.body["run"]["id"]);
    assert_eq!(runs_of(&app, &owner, org, wf).await.len(), 2);

    // A form body becomes an object of strings.
    let r = hook(&app, wf)
        .header("x-vespid-webhook-token", "tok")
        .raw("application/x-www-form-urlencoded", "name=x+y&n=2")
        .send()
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["run"]["input"], json!({"name": "x y", "n": "2"}));

    // Too large, another media type, invalid JSON, a NUL, a bad key: clear errors, no run.
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
    for (ct, body, status) in [
        ("application/json", big.as_str(), 413),
        ("text/plain", "hello", 415),
        ("application/json", "{nope", 400),
        ("application/json", r#"{"a":"\u0000"}"#, 400),
    ] {
        let r = hook(&app, wf)
            .header("x-vespid-webhook-token", "tok")
            .raw(ct, body.to_string())
            .send()
            .await;
        assert_eq!(r.status, status, "{ct} {:?}", r.body);
    }
    let runs_so_far = runs_of(&app, &owner, org, wf).await.len();
    assert_eq!(runs_so_far, 3);

    // The rate limit (6 per minute; 4 deliveries counted so far) answers 429 with Retry-After.
    let mut limited = None;
    for i in 0..5 {
        let r = hook(&app, wf)
            .header("x-vespid-webhook-token", "tok")
            .raw("application/json", format!(r#"{{"i":{i}}}"#))
            .send()
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    let limited = limited.expect("never rate limited");
    assert!(limited
        .header("retry-after")
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| (1..=60).contains(&s)));
}

#[tokio::test]
async fn unknown_and_non_webhook_workflows_look_the_same() {
    let app = spawn_with(opts()).await;
    let owner = app.signup("hook3").await;
    let org = owner.personal_org;
    let manual = published(
        &app,
        &owner,
        org,
        json!({"version": "v2", "trigger": {"type": "trigger.manual"},
               "nodes": [{"id": "stub", "type": "http.request"}]}),
    )
    .await;
    for id in [
        manual.to_string(),
        Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
    ] {
        let r = hook(&app, &id)
            .header("x-vespid-webhook-token", "anything")
            .raw("application/json", "{}")
            .send()
            .await;
        assert_eq!(r.status, 404, "{id}: {:?}", r.body);
    }
    // A draft's token does not start anything either.
    let r = app
        .post(&format!("/v1/orgs/{org}/workflows"))
        .by(&owner)
        .org(org)
        .json(json!({"name": "draft", "dsl": hook_dsl("tok")}))
        .send()
        .await;
    let draft = r.body["workflow"]["id"].as_str().unwrap().to_string();
    let r = hook(&app, &draft)
        .header("x-vespid-webhook-token", "tok")
        .raw("application/json", "{}")
        .send()
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
}
