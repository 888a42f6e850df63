//! `connector.action` (spec 5.3) and its legacy alias `connector.github.issue.create`: the community
//! catalog (GitHub `issue.create` only), run in the worker in cloud mode.

use std::time::Duration;

use reqwest::header::{self, HeaderValue};
use serde_json::{json, Value};
use url::Url;

use super::context::{Block, BlockKind, ExecCtx, ExecDeps, Outcome};
use super::http::{network_failure, status_retryable};
use super::secret_store;
use crate::domain::common::ids::SecretId;
use crate::domain::workflows::dsl::spec::{ConnectorAction, ExecutionMode, GithubIssue};
use crate::platform::secret::Secret;

const TITLE_MAX: usize = 256;
const BODY_MAX: usize = 200_000;

/// An action to perform, from either node type.
#[derive(Debug, PartialEq)]
struct Action<'a> {
    connector_id: &'a str,
    action_id: &'a str,
    input: Option<Value>,
    secret_id: SecretId,
    mode: ExecutionMode,
    /// Where an `executor`-mode action is routed (the node's `execution.selector`).
    selector: Option<Value>,
}

/// Input of GitHub `issue.create`.
#[derive(Debug, PartialEq)]
struct IssueInput {
    owner: String,
    repo: String,
    title: String,
    body: Option<String>,
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `owner/name`: exactly one `/`, both sides non-empty.
fn split_repo(repo: &str) -> Option<(String, String)> {
    let (owner, name) = repo.split_once('/')?;
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((owner.to_string(), name.to_string()))
}

/// The `issue.create` fields shared by the action input and the legacy config: `repo`, `title` 1..256,
/// `body` ≤ 200000 (UTF-16 units, as the original counts).
fn issue(repo: &str, title: &str, body: Option<&str>) -> Option<IssueInput> {
    let (owner, repo) = split_repo(repo)?;
    if !(1..=TITLE_MAX).contains(&utf16_len(title)) {
        return None;
    }
    if body.is_some_and(|b| utf16_len(b) > BODY_MAX) {
        return None;
    }
    Some(IssueInput {
        owner,
        repo,
        title: title.to_string(),
        body: body.map(str::to_string),
    })
}

/// The action's input (any JSON in the DSL) read as `issue.create`'s; other keys ignored.
fn parse_issue(o: &serde_json::Map<String, Value>) -> Option<IssueInput> {
    let body = match o.get("body") {
        None => None,
        Some(Value::String(b)) => Some(b.as_str()),
        Some(_) => return None,
    };
    issue(o.get("repo")?.as_str()?, o.get("title")?.as_str()?, body)
}

pub async fn run_action(deps: &ExecDeps, ctx: &ExecCtx<'_>, cfg: &ConnectorAction) -> Outcome {
    let action = Action {
        connector_id: &cfg.connector_id,
        action_id: &cfg.action_id,
        input: cfg.input.clone(),
        secret_id: SecretId::from(cfg.auth.secret_id),
        mode: cfg
            .execution
            .as_ref()
            .map_or(ExecutionMode::Cloud, |e| e.mode),
        selector: cfg
            .execution
            .as_ref()
            .and_then(|e| e.selector.as_ref())
            .map(super::agent::selector_json),
    };
    execute(deps, ctx, action).await
}

/// The legacy node: its own config, then github/issue.create in cloud mode.
pub async fn run_legacy_github(deps: &ExecDeps, ctx: &ExecCtx<'_>, cfg: &GithubIssue) -> Outcome {
    // The DSL counts chars; the original's UTF-16 bounds are checked here.
    let Some(issue) = issue(&cfg.repo, &cfg.title, cfg.body.as_deref()) else {
        return Outcome::fail("INVALID_NODE_CONFIG", false);
    };
    let mut input = serde_json::Map::new();
    input.insert(
        "repo".into(),
        Value::String(format!("{}/{}", issue.owner, issue.repo)),
    );
    input.insert("title".into(), Value::String(issue.title));
    if let Some(body) = issue.body {
        input.insert("body".into(), Value::String(body));
    }
    let input = Value::Object(input);
    let action = Action {
        connector_id: "github",
        action_id: "issue.create",
        input: Some(input),
        secret_id: SecretId::from(cfg.auth.secret_id),
        mode: ExecutionMode::Cloud,
        selector: None,
    };
    execute(deps, ctx, action).await
}

async fn execute(deps: &ExecDeps, ctx: &ExecCtx<'_>, cfg: Action<'_>) -> Outcome {
    if (cfg.connector_id, cfg.action_id) != ("github", "issue.create") {
        return Outcome::fail(
            format!(
                "ACTION_NOT_SUPPORTED:{}:{}",
                cfg.connector_id, cfg.action_id
            ),
            false,
        );
    }
    let Some(issue) = cfg
        .input
        .as_ref()
        .and_then(Value::as_object)
        .and_then(parse_issue)
    else {
        return Outcome::fail("INVALID_ACTION_INPUT", false);
    };
    let secret = match secret_store::by_id(deps, ctx.org_id, ctx.run_id, cfg.secret_id).await {
        Ok(s) => s,
        Err(failed) => return failed,
    };
    if secret.connector_id != cfg.connector_id {
        return Outcome::fail("SECRET_CONNECTOR_MISMATCH", false);
    }
    if secret.value.is_empty() {
        return Outcome::fail("SECRET_REQUIRED", false);
    }
    if cfg.mode == ExecutionMode::Executor {
        // The executor performs the call: the secret travels with this one invocation only (spec 5.3).
        return Outcome::Blocked(Block {
            kind: BlockKind::ConnectorAction,
            payload: json!({
                "connectorId": cfg.connector_id,
                "actionId": cfg.action_id,
                "input": cfg.input,
                "env": {"githubApiBaseUrl": deps.config.github_api_base_url},
            }),
            selector: cfg.selector,
            secret: Some(Secret::new(secret.value.to_string())),
            timeout_ms: None,
        });
    }
    create_issue(deps, ctx, &issue, &secret.value).await
}

/// `POST {base}/repos/{owner}/{repo}/issues`. The idempotency key names the (run, node) so a retried
/// call is recognisable as the same side effect.
async fn create_issue(
    deps: &ExecDeps,
    ctx: &ExecCtx<'_>,
    issue: &IssueInput,
    token: &str,
) -> Outcome {
    let Some(url) = issues_url(&deps.config.github_api_base_url, issue) else {
        tracing::error!("GITHUB_API_BASE_URL is not a usable base URL");
        return Outcome::fail("GITHUB_API_BASE_URL_INVALID", false);
    };
    let Ok(mut auth) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return Outcome::fail("SECRET_VALUE_INVALID", false);
    };
    auth.set_sensitive(true);
    let mut body = serde_json::Map::new();
    body.insert("title".into(), Value::String(issue.title.clone()));
    if let Some(b) = &issue.body {
        body.insert("body".into(), Value::String(b.clone()));
    }
    let body = Value::Object(body);
    let sent = deps
        .http
        .post(url)
        .timeout(Duration::from_millis(deps.config.http_timeout_ms))
        .header(header::ACCEPT, "application/vnd.github+json")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, auth)
        .header(header::USER_AGENT, "vespid-worker")
        .header(
            "x-idempotency-key",
            format!("{}:{}", ctx.run_id, ctx.node.id),
        )
        .body(body.to_string())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return network_failure(e),
    };
    let status = resp.status();
    if !status.is_success() {
        return Outcome::fail(
            format!("GITHUB_REQUEST_FAILED:{}", status.as_u16()),
            status_retryable(status),
        );
    }
    let payload = match read_json(resp, deps.config.http_max_response_bytes).await {
        Ok(v) => v,
        Err(failed) => return failed,
    };
    match issue_output(&payload) {
        Some(out) => Outcome::Succeeded(out),
        None => Outcome::fail("GITHUB_RESPONSE_INVALID", false),
    }
}

fn issues_url(base: &str, issue: &IssueInput) -> Option<Url> {
    let mut url = Url::parse(base).ok()?;
    url.path_segments_mut().ok()?.pop_if_empty().extend([
        "repos",
        issue.owner.as_str(),
        issue.repo.as_str(),
        "issues",
    ]);
    Some(url)
}

/// The response body as JSON, bounded like `http.request` responses; anything else is invalid.
async fn read_json(mut resp: reqwest::Response, max_bytes: usize) -> Result<Value, Outcome> {
    let invalid = || Outcome::fail("GITHUB_RESPONSE_INVALID", false);
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network_failure)? {
        if buf.len() + chunk.len() > max_bytes {
            return Err(invalid());
        }
        buf.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&buf).map_err(|_| invalid())
}

/// `{issueNumber, url}` from GitHub's answer: a non-zero numeric `number` and a non-empty `html_url`
/// (else `url`), as the original's truthiness checks require.
fn issue_output(payload: &Value) -> Option<Value> {
    let number = payload
        .get("number")
        .filter(|n| n.as_f64().is_some_and(|f| f != 0.0))?;
    let url = [payload.get("html_url"), payload.get("url")]
        .into_iter()
        .flatten()
        .find_map(Value::as_str)
        .filter(|s| !s.is_empty())?;
    Some(json!({"issueNumber": number, "url": url}))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f";

    /// The action's config is the DSL's typed one: what the executor-side parser used to accept and
    /// refuse is decided once, by the DSL.
    #[test]
    fn action_config() {
        use crate::domain::workflows::dsl::{parse_node, Node, NodeSpec};
        let parse = |cfg: Value| match parse_node(
            &json!({"id": "n", "type": "connector.action", "config": cfg}),
        ) {
            Ok(Node {
                spec: NodeSpec::ConnectorAction(c),
                ..
            }) => Some(c),
            _ => None,
        };
        let cfg = parse(json!({"connectorId": "github", "actionId": "issue.create",
            "input": {"repo": "a/b"}, "auth": {"secretId": SID}}))
        .unwrap();
        assert_eq!(cfg.execution, None);
        assert_eq!(cfg.auth.secret_id.to_string(), SID);
        let exec = parse(json!({"connectorId": "c", "actionId": "a",
            "auth": {"secretId": SID}, "execution": {"mode": "executor", "selector": {"pool": "byon"}}}))
        .unwrap();
        assert_eq!(
            exec.execution.map(|e| e.mode),
            Some(ExecutionMode::Executor)
        );
        assert_eq!(exec.input, None);
        for bad in [
            json!(null),
            json!({"connectorId": "", "actionId": "a", "auth": {"secretId": SID}}),
            json!({"connectorId": "c", "auth": {"secretId": SID}}),
            json!({"connectorId": "c", "actionId": "a"}),
            json!({"connectorId": "c", "actionId": "a", "auth": {"secretId": "1234"}}),
            json!({"connectorId": "c", "actionId": "a", "auth": {"secretId": SID.replace('-', "")}}),
            json!({"connectorId": "c", "actionId": "a", "auth": {"secretId": SID}, "execution": {"mode": "gateway"}}),
        ] {
            assert_eq!(parse(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn issue_input() {
        let p = |v: Value| parse_issue(v.as_object().unwrap());
        let ok = p(json!({"repo": "octo/test", "title": "T", "body": "B", "x": 1})).unwrap();
        assert_eq!(
            (ok.owner.as_str(), ok.repo.as_str(), ok.body.as_deref()),
            ("octo", "test", Some("B"))
        );
        assert_eq!(p(json!({"repo": "o/r", "title": "t"})).unwrap().body, None);
        assert!(p(json!({"repo": "o/r", "title": "é".repeat(256)})).is_some());
        assert!(p(json!({"repo": "o/r", "title": "t", "body": "b".repeat(BODY_MAX)})).is_some());
        for bad in [
            json!({"repo": "octo", "title": "t"}),
            json!({"repo": "/r", "title": "t"}),
            json!({"repo": "o/", "title": "t"}),
            json!({"repo": "o/r/x", "title": "t"}),
            json!({"repo": "o/r", "title": ""}),
            json!({"repo": "o/r", "title": "t".repeat(257)}),
            json!({"repo": "o/r", "title": "😀".repeat(129)}),
            json!({"repo": "o/r", "title": "t", "body": null}),
            json!({"repo": "o/r", "title": "t", "body": 1}),
            json!({"repo": "o/r", "title": "t", "body": "b".repeat(BODY_MAX + 1)}),
            json!({"title": "t"}),
        ] {
            assert_eq!(p(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn url_building() {
        let issue = IssueInput {
            owner: "oc to".into(),
            repo: "r?x#y".into(),
            title: "t".into(),
            body: None,
        };
        assert_eq!(
            issues_url("https://api.github.com", &issue)
                .unwrap()
                .as_str(),
            "https://api.github.com/repos/oc%20to/r%3Fx%23y/issues"
        );
        assert_eq!(
            issues_url("https://ghe.example/api/v3/", &issue)
                .unwrap()
                .as_str(),
            "https://ghe.example/api/v3/repos/oc%20to/r%3Fx%23y/issues"
        );
        assert!(issues_url("not a url", &issue).is_none());
        assert!(issues_url("mailto:x@y", &issue).is_none());
    }

    #[test]
    fn github_response() {
        assert_eq!(
            issue_output(
                &json!({"number": 101, "html_url": "https://h/1", "url": "https://api/1"})
            ),
            Some(json!({"issueNumber": 101, "url": "https://h/1"}))
        );
        assert_eq!(
            issue_output(&json!({"number": 7, "url": "https://api/7"})),
            Some(json!({"issueNumber": 7, "url": "https://api/7"}))
        );
        assert_eq!(
            issue_output(&json!({"number": 7, "html_url": 5, "url": "u"})),
            Some(json!({"issueNumber": 7, "url": "u"}))
        );
        for bad in [
            json!({}),
            json!({"number": "7", "html_url": "h"}),
            json!({"number": 0, "html_url": "h"}),
            json!({"number": 7}),
            json!({"number": 7, "html_url": ""}),
            json!([]),
        ] {
            assert_eq!(issue_output(&bad), None, "{bad}");
        }
    }
}
