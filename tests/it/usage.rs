//! LLM usage: calls recorded through the service come back exactly in the report (totals, by day, model
//! and session), filters and windows work and bad ones are 400s, only owners and admins (and keys with
//! `usage:read`) read it, tenants never see each other's rows, the application cannot rewrite them, and
//! the monthly token budget counts this calendar month only.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use uuid::Uuid;
use vespid::domain::common::ids::{OrgId, RunId};
use vespid::domain::usage::model::UsageRecord;
use vespid::domain::usage::UsageError;

use crate::common::{spawn, TestApp, User};

fn call(
    org: Uuid,
    session: Option<Uuid>,
    model: (&str, &str),
    tokens: (i64, i64),
    cost: i64,
) -> UsageRecord {
    UsageRecord {
        org: OrgId::from(org),
        session_id: session,
        run_id: None,
        node_id: None,
        provider: model.0.to_string(),
        model: model.1.to_string(),
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        latency_ms: 120,
        cost_micros: cost,
    }
}

async fn record(app: &TestApp, r: UsageRecord) {
    app.state.usage.record(r).await.expect("record usage");
}

async fn usage(app: &TestApp, by: &User, org: Uuid, query: &str) -> Value {
    let r = app
        .get(&format!("/v1/orgs/{org}/usage{query}"))
        .by(by)
        .org(org)
        .send()
        .await;
    assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    r.body["usage"].clone()
}

/// A row written straight into the table at `at` (the service always writes "now").
async fn insert_at(app: &TestApp, org: Uuid, at: DateTime<Utc>, tokens: (i64, i64), cost: i64) {
    app.owner_db()
        .await
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('app.current_org_id', '{org}', true); \
             INSERT INTO llm_usage (organization_id, provider, model, input_tokens, output_tokens, \
               latency_ms, cost_micros, created_at) \
             VALUES ('{org}', 'openai', 'gpt-4o', {}, {}, 10, {cost}, '{}'); COMMIT;",
            tokens.0,
            tokens.1,
            at.to_rfc3339()
        ))
        .await
        .expect("insert usage row");
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .expect("month start")
}

#[tokio::test]
async fn the_report_adds_up_exactly_by_day_model_and_session() {
    let app = spawn().await;
    let owner = app.signup("usage-o").await;
    let other = app.signup("usage-b").await;
    let org = app.create_org(&owner).await;
    let org_b = app.create_org(&other).await;
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    record(
        &app,
        call(org, Some(s1), ("openai", "gpt-4o"), (100, 20), 1500),
    )
    .await;
    record(
        &app,
        call(org, Some(s1), ("openai", "gpt-4o"), (50, 10), 700),
    )
    .await;
    record(
        &app,
        call(org, Some(s2), ("anthropic", "claude-x"), (30, 5), 300),
    )
    .await;
    // A workflow node's call: no session.
    let mut node = call(org, None, ("gemini", "gemini-x"), (10, 2), 0);
    node.run_id = Some(RunId::random());
    node.node_id = Some("agent".into());
    record(&app, node).await;
    // Another org's call.
    record(
        &app,
        call(org_b, Some(s1), ("openai", "gpt-4o"), (1000, 1000), 99),
    )
    .await;

    let today = Utc::now().format("%Y-%m-%d").to_string();
    let u = usage(&app, &owner, org, "").await;
    assert_eq!(
        u["totals"],
        json!({"calls": 4, "inputTokens": 190, "outputTokens": 37, "totalTokens": 227,
               "costUsd": 0.0025, "costMicros": 2500})
    );
    assert_eq!(
        u["byDay"],
        json!([{"day": today, "calls": 4, "inputTokens": 190, "outputTokens": 37, "costUsd": 0.0025}])
    );
    assert_eq!(
        u["byModel"],
        json!([
            {"provider": "openai", "model": "gpt-4o", "calls": 2, "inputTokens": 150, "outputTokens": 30, "costUsd": 0.0022},
            {"provider": "anthropic", "model": "claude-x", "calls": 1, "inputTokens": 30, "outputTokens": 5, "costUsd": 0.0003},
            {"provider": "gemini", "model": "gemini-x", "calls": 1, "inputTokens": 10, "outputTokens": 2, "costUsd": 0.0},
        ])
    );
    assert_eq!(
        u["bySession"],
        json!([
            {"sessionId": s1, "calls": 2, "inputTokens": 150, "outputTokens": 30, "costUsd": 0.0022},
            {"sessionId": s2, "calls": 1, "inputTokens": 30, "outputTokens": 5, "costUsd": 0.0003},
        ])
    );
    assert_eq!(
        u["budget"],
        json!({"monthlyTokens": null, "usedThisMonth": 227, "remaining": null})
    );
    // The default window: this month so far.
    let since = DateTime::parse_from_rfc3339(u["since"].as_str().unwrap()).unwrap();
    assert_eq!(since.with_timezone(&Utc), month_start(Utc::now()));

    // The other org sees its own call only.
    let b = usage(&app, &other, org_b, "").await;
    assert_eq!(b["totals"]["calls"], 1);
    assert_eq!(b["totals"]["inputTokens"], 1000);
    assert_eq!(b["budget"]["usedThisMonth"], 2000);

    // Filters.
    let u = usage(&app, &owner, org, "?provider=openai").await;
    assert_eq!(u["totals"]["calls"], 2);
    assert_eq!(u["byModel"].as_array().unwrap().len(), 1);
    let u = usage(&app, &owner, org, "?model=claude-x").await;
    assert_eq!(u["totals"]["totalTokens"], 35);
    assert_eq!(u["bySession"][0]["sessionId"], s2.to_string());
    let u = usage(&app, &owner, org, &format!("?sessionId={s1}")).await;
    assert_eq!(u["totals"]["calls"], 2);
    assert_eq!(u["bySession"].as_array().unwrap().len(), 1);
    let u = usage(
        &app,
        &owner,
        org,
        &format!("?sessionId={s1}&provider=anthropic"),
    )
    .await;
    assert_eq!(
        u["totals"],
        json!({"calls": 0, "inputTokens": 0, "outputTokens": 0, "totalTokens": 0, "costUsd": 0.0, "costMicros": 0})
    );
    assert_eq!(u["byDay"], json!([]));
    assert_eq!(u["byModel"], json!([]));
    assert_eq!(u["bySession"], json!([]));
    // Filters never change the month's budget figures.
    assert_eq!(u["budget"]["usedThisMonth"], 227);

    // Older rows: two days, two months back; shown in their window, not in this month's.
    let day1 = month_start(Utc::now()) - Duration::days(45) + Duration::hours(10);
    let day2 = day1 + Duration::hours(36);
    insert_at(&app, org, day1, (7, 3), 40).await;
    insert_at(&app, org, day2, (5, 1), 20).await;
    let (d1, d2) = (
        day1.format("%Y-%m-%d").to_string(),
        day2.format("%Y-%m-%d").to_string(),
    );
    let u = usage(&app, &owner, org, &format!("?since={d1}&until={d2}")).await;
    assert_eq!(
        u["byDay"],
        json!([
            {"day": d1, "calls": 1, "inputTokens": 7, "outputTokens": 3, "costUsd": 0.00004},
            {"day": d2, "calls": 1, "inputTokens": 5, "outputTokens": 1, "costUsd": 0.00002},
        ])
    );
    assert_eq!(u["totals"]["totalTokens"], 16);
    assert_eq!(u["bySession"], json!([]));
    // A date-time end is exclusive: the second day's row is left out.
    let until = (day2 - Duration::seconds(1)).to_rfc3339();
    let u = usage(
        &app,
        &owner,
        org,
        &format!("?since={d1}&until={}", urlencode(&until)),
    )
    .await;
    assert_eq!(u["totals"]["calls"], 1);
    let u = usage(&app, &owner, org, "").await;
    assert_eq!(u["totals"]["calls"], 4);
    assert_eq!(u["budget"]["usedThisMonth"], 227);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn bad_query_parameters_are_400s_that_name_the_field() {
    let app = spawn().await;
    let owner = app.signup("usage-q").await;
    let org = app.create_org(&owner).await;
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-12-05&until=2026-12-04", "since"),
        (
            "since=2026-12-04T10:00:00Z&until=2026-12-04T10:00:00Z",
            "since",
        ),
        ("since=2024-01-01&until=2025-06-01", "since"),
        ("sessionId=nope", "sessionId"),
        ("model=", "model"),
        ("since=2026-12-01&since=2026-12-02", "since"),
    ] {
        let r = app
            .get(&format!("/v1/orgs/{org}/usage?{query}"))
            .by(&owner)
            .org(org)
            .send()
            .await;
        assert_eq!(r.status, 400, "{query}: {:?}", r.body);
        assert_eq!(r.code(), "BAD_REQUEST", "{query}");
        assert!(
            r.body["details"]["fieldErrors"][field].is_array(),
            "{query}: {:?}",
            r.body
        );
    }
}

#[tokio::test]
async fn only_owners_admins_and_usage_keys_read_it_and_rows_are_append_only() {
    let app = spawn().await;
    let owner = app.signup("usage-ow").await;
    let admin = app.signup("usage-ad").await;
    let member = app.signup("usage-me").await;
    let outsider = app.signup("usage-ou").await;
    let org = app.create_org(&owner).await;
    app.add_member(org, &owner, &admin, "admin").await;
    app.add_member(org, &owner, &member, "member").await;
    record(&app, call(org, None, ("openai", "gpt-4o"), (1, 1), 1)).await;
    let path = format!("/v1/orgs/{org}/usage");
    assert_eq!(usage(&app, &admin, org, "").await["totals"]["calls"], 1);
    let r = app.get(&path).by(&member).org(org).send().await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["message"], "Role is not allowed to read usage");
    let r = app.get(&path).by(&outsider).org(org).send().await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = app.get(&path).send().await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    // Another org's owner asking with their own org's id sees their (empty) usage, never this one's.
    assert_eq!(
        usage(&app, &outsider, outsider.personal_org, "").await["totals"]["calls"],
        0
    );

    // API keys: `usage:read` reads it, `org:read` does not.
    let (key, _) = crate::apikeys::create_key(&app, &owner, org, &["usage:read"], None).await;
    let r = app.get(&path).bearer(&key).org(org).send().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["usage"]["totals"]["calls"], 1);
    let (key, _) = crate::apikeys::create_key(&app, &owner, org, &["org:read"], None).await;
    let r = app.get(&path).bearer(&key).org(org).send().await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.code(), "API_KEY_SCOPE_MISSING");

    // The application role may add rows, never change or remove them.
    let db = app.app_db().await;
    db.batch_execute(&format!(
        "SELECT set_config('app.current_org_id', '{org}', false)"
    ))
    .await
    .unwrap();
    for sql in [
        "UPDATE llm_usage SET input_tokens = 0",
        "DELETE FROM llm_usage",
    ] {
        let err = db.batch_execute(sql).await.expect_err(sql);
        assert!(
            format!("{err:?}").contains("permission denied"),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(usage(&app, &owner, org, "").await["totals"]["calls"], 1);
}

#[tokio::test]
async fn record_with_runs_its_hook_in_the_same_transaction() {
    let app = spawn().await;
    let owner = app.signup("usage-tx").await;
    let org = app.create_org(&owner).await;
    // The hook sees the row just inserted (same transaction, same org context).
    app.state
        .usage
        .record_with(
            call(org, None, ("openai", "gpt-4o"), (3, 4), 5),
            Box::new(|c, r| {
                let org = r.org;
                Box::pin(async move {
                    #[derive(diesel::QueryableByName)]
                    struct N {
                        #[diesel(sql_type = diesel::sql_types::BigInt)]
                        n: i64,
                    }
                    let rows: Vec<N> = diesel::sql_query(
                        "SELECT count(*) AS n FROM llm_usage WHERE organization_id = $1",
                    )
                    .bind::<diesel::sql_types::Uuid, _>(org)
                    .load(c)
                    .await?;
                    assert_eq!(rows.iter().map(|r| r.n).next(), Some(1));
                    Ok(())
                })
            }),
        )
        .await
        .expect("record with hook");
    // A failing hook takes the usage row down with it.
    let err = app
        .state
        .usage
        .record_with(
            call(org, None, ("openai", "gpt-4o"), (100, 100), 5),
            Box::new(|_, _| Box::pin(async { Err(diesel::result::Error::NotFound) })),
        )
        .await
        .expect_err("hook failed");
    assert!(matches!(err, UsageError::Db(_)), "{err:?}");
    let u = usage(&app, &owner, org, "").await;
    assert_eq!(u["totals"]["calls"], 1);
    assert_eq!(u["totals"]["totalTokens"], 7);
}

#[tokio::test]
async fn the_monthly_budget_counts_this_month_only() {
    let app = spawn().await;
    let owner = app.signup("usage-bu").await;
    let org = app.create_org(&owner).await;
    let id = OrgId::from(org);
    let usage_svc = &app.state.usage;
    // No budget: never refused, whatever was used.
    record(&app, call(org, None, ("openai", "gpt-4o"), (500, 500), 0)).await;
    usage_svc.check_budget(id).await.expect("no budget");
    // A second org with a budget: last month's rows (even a big one) do not count against it.
    let org2 = app.create_org(&owner).await;
    let id2 = OrgId::from(org2);
    insert_at(
        &app,
        org2,
        month_start(Utc::now()) - Duration::seconds(1),
        (5000, 5000),
        0,
    )
    .await;
    let r = app
        .put(&format!("/v1/orgs/{org2}/settings"))
        .by(&owner)
        .org(org2)
        .json(json!({"llm": {"budget": {"monthlyTokens": 100}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["settings"]["llm"]["budget"]["monthlyTokens"], 100);
    usage_svc.check_budget(id2).await.expect("nothing used yet");
    record(&app, call(org2, None, ("openai", "gpt-4o"), (40, 20), 0)).await;
    usage_svc.check_budget(id2).await.expect("60 of 100");
    let u = usage(&app, &owner, org2, "").await;
    assert_eq!(
        u["budget"],
        json!({"monthlyTokens": 100, "usedThisMonth": 60, "remaining": 40})
    );
    record(&app, call(org2, None, ("openai", "gpt-4o"), (30, 20), 0)).await;
    match usage_svc.check_budget(id2).await {
        Err(UsageError::BudgetExceeded { used, budget }) => {
            assert_eq!((used, budget), (110, 100));
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    let u = usage(&app, &owner, org2, "").await;
    assert_eq!(
        u["budget"],
        json!({"monthlyTokens": 100, "usedThisMonth": 110, "remaining": 0})
    );
    // Clearing the budget lifts the refusal; the first org never had one.
    let r = app
        .put(&format!("/v1/orgs/{org2}/settings"))
        .by(&owner)
        .org(org2)
        .json(json!({"llm": {"budget": {"monthlyTokens": null}}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    usage_svc.check_budget(id2).await.expect("budget cleared");
    usage_svc.check_budget(id).await.expect("still no budget");
    // Invalid budgets are refused by the settings route.
    let r = app
        .put(&format!("/v1/orgs/{org2}/settings"))
        .by(&owner)
        .org(org2)
        .json(json!({"llm": {"budget": {"monthlyTokens": 0}}}))
        .send()
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["details"]["fieldErrors"]["llm.budget.monthlyTokens"].is_array());
}
