//! `connector.action` on the executor (spec gateway §3.4 step 4): the connector call is made from this
//! machine, with the secret the gateway sent for it. Only GitHub's `issue.create` exists. The secret
//! goes into one request header (marked sensitive) and nowhere else: not in logs, not in errors.

use std::time::Duration;

use reqwest::header::{ACCEPT, USER_AGENT};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::failure::{Failed, Failure};
use super::RuntimeContext;
use crate::domain::gateway::protocol::InvokeToolV2;

const GITHUB_API: &str = "https://api.github.com";
/// More than any issue answer; a larger one is not GitHub's.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
const MAX_TITLE_CHARS: usize = 256;
const MAX_BODY_CHARS: usize = 200_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionPayload {
    connector_id: String,
    action_id: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    env: Option<ActionEnv>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionEnv {
    #[serde(default)]
    github_api_base_url: Option<String>,
}

/// The actions an executor can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    GithubIssueCreate,
}

impl Action {
    fn find(connector_id: &str, action_id: &str) -> Option<Self> {
        match (connector_id, action_id) {
            ("github", "issue.create") => Some(Self::GithubIssueCreate),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct IssueInput {
    repo: String,
    title: String,
    #[serde(default)]
    body: Option<String>,
}

impl IssueInput {
    fn parse(input: Option<&Value>) -> Result<Self, Failure> {
        let empty = Value::Object(Map::new());
        let parsed =
            Self::deserialize(input.unwrap_or(&empty)).map_err(|_| Failure::InvalidActionInput)?;
        let title_chars = parsed.title.chars().count();
        let valid = repo_parts(&parsed.repo).is_some()
            && (1..=MAX_TITLE_CHARS).contains(&title_chars)
            && parsed
                .body
                .as_ref()
                .is_none_or(|b| b.chars().count() <= MAX_BODY_CHARS);
        if valid {
            Ok(parsed)
        } else {
            Err(Failure::InvalidActionInput)
        }
    }
}

/// `owner/name`, each a GitHub name: the repo is pasted into the URL path, so nothing else gets in.
fn repo_parts(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (plain(owner) && plain(name)).then_some((owner, name))
}

/// The API base: the payload's `env.githubApiBaseUrl` (GitHub Enterprise), else github.com.
fn api_base(env: Option<&ActionEnv>) -> Result<String, Failure> {
    let Some(given) = env.and_then(|e| e.github_api_base_url.as_deref()) else {
        return Ok(GITHUB_API.to_string());
    };
    let url = url::Url::parse(given).map_err(|_| Failure::InvalidActionPayload)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::InvalidActionPayload);
    }
    Ok(given.trim_end_matches('/').to_string())
}

pub(super) async fn run(invoke: &InvokeToolV2, ctx: &RuntimeContext) -> Result<Value, Failed> {
    let payload =
        ActionPayload::deserialize(&invoke.payload).map_err(|_| Failure::InvalidActionPayload)?;
    let base = api_base(payload.env.as_ref())?;
    let action = Action::find(&payload.connector_id, &payload.action_id).ok_or_else(|| {
        Failure::ActionNotSupported {
            connector_id: payload.connector_id.clone(),
            action_id: payload.action_id.clone(),
        }
    })?;
    match action {
        Action::GithubIssueCreate => {
            let input = IssueInput::parse(payload.input.as_ref())?;
            let secret = invoke
                .secret
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or(Failure::SecretRequired)?;
            let timeout = Duration::from_millis(invoke.tool_policy.timeout_ms);
            Ok(create_issue(&ctx.http, &base, &input, secret, timeout).await?)
        }
    }
}

async fn create_issue(
    http: &reqwest::Client,
    base: &str,
    input: &IssueInput,
    token: &str,
    timeout: Duration,
) -> Result<Value, Failure> {
    let Some((owner, name)) = repo_parts(&input.repo) else {
        return Err(Failure::InvalidActionInput);
    };
    let mut body = Map::new();
    body.insert("title".into(), Value::String(input.title.clone()));
    if let Some(text) = &input.body {
        body.insert("body".into(), Value::String(text.clone()));
    }
    let sent = http
        .post(format!("{base}/repos/{owner}/{name}/issues"))
        .header(ACCEPT, "application/vnd.github+json")
        .header(USER_AGENT, "vespid-agent")
        .bearer_auth(token)
        .json(&body)
        .timeout(timeout)
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            // reqwest's error names the URL, never the headers: safe to log.
            tracing::warn!(error = %e, "github request failed");
            return Err(if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::GithubUnreachable
            });
        }
    };
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::GithubRequestFailed(status.as_u16()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        if e.is_timeout() {
            Failure::Timeout
        } else {
            Failure::GithubResponseInvalid
        }
    })? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Failure::GithubResponseInvalid);
        }
        bytes.extend_from_slice(&chunk);
    }
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|_| Failure::GithubResponseInvalid)?;
    let number = answer
        .get("number")
        .filter(|n| n.is_number())
        .ok_or(Failure::GithubResponseInvalid)?;
    let url = ["html_url", "url"]
        .iter()
        .find_map(|k| answer.get(*k).and_then(Value::as_str))
        .ok_or(Failure::GithubResponseInvalid)?;
    Ok(json!({ "issueNumber": number, "url": url }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_owner_slash_name() {
        assert_eq!(repo_parts("octo/hello.rs"), Some(("octo", "hello.rs")));
        for bad in [
            "octo", "octo/", "/x", "a/b/c", "a/..", "a/b?x=1", "a/b#c", "a b/c",
        ] {
            assert_eq!(repo_parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn issue_input_bounds() {
        let ok = |v: Value| IssueInput::parse(Some(&v)).is_ok();
        assert!(ok(
            json!({"repo": "a/b", "title": "t", "body": "x", "labels": []})
        ));
        assert!(ok(json!({"repo": "a/b", "title": "t".repeat(256)})));
        assert!(!ok(json!({"repo": "a/b", "title": ""})));
        assert!(!ok(json!({"repo": "a/b", "title": "t".repeat(257)})));
        assert!(!ok(
            json!({"repo": "a/b", "title": "t", "body": "b".repeat(200_001)})
        ));
        assert!(!ok(json!({"repo": "a", "title": "t"})));
        assert!(IssueInput::parse(None).is_err());
    }
}
