use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::*;
use crate::domain::gateway::protocol::{ResultStatus, ToolPolicy};

fn temp_root() -> PathBuf {
    std::env::temp_dir().join(format!("vespid-rt-{}", Uuid::new_v4().simple()))
}

fn ctx(backend: BackendKind) -> RuntimeContext {
    RuntimeContext::new(backend, temp_root()).unwrap()
}

fn invoke(kind: ToolKind, payload: Value) -> InvokeToolV2 {
    InvokeToolV2 {
        request_id: "run-1:0123456789abcdef".into(),
        organization_id: Uuid::parse_str("0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99").unwrap(),
        user_id: Uuid::new_v4(),
        kind,
        payload,
        secret: None,
        tool_policy: ToolPolicy::default_deny(10_000, 65_536),
        workspace: None,
        workspace_access: None,
        idempotency_key: None,
    }
}

fn shell(script: &str, sandbox: Value) -> InvokeToolV2 {
    invoke(
        ToolKind::AgentExecute,
        json!({"nodeId": "build", "node": {"id": "build", "type": "agent.execute", "config": {
            "task": {"type": "shell", "script": script, "env": {"GREETING": "hi"}},
            "sandbox": sandbox}}}),
    )
}

fn error_of(result: &ToolResultV2) -> Option<&str> {
    assert_eq!(result.request_id, "run-1:0123456789abcdef");
    result.error.as_deref()
}

#[tokio::test]
async fn a_shell_task_with_a_secret_is_refused_and_never_runs() {
    let ctx = ctx(BackendKind::Host);
    let mut call = shell("touch ran", json!({}));
    call.secret = Some("ghp_secret".into());
    let result = execute(call, &ctx).await;
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(error_of(&result), Some("SECRET_NOT_ALLOWED_FOR_SHELL"));
    assert!(!ctx.workdir_root.exists(), "the task must not have started");
}

#[tokio::test]
async fn a_payload_outside_the_schema_is_invalid() {
    let ctx = ctx(BackendKind::Host);
    for payload in [
        json!({"node": {}}),
        json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute", "config": {"task": {"type": "shell", "script": ""}}}}),
    ] {
        let result = execute(invoke(ToolKind::AgentExecute, payload), &ctx).await;
        assert_eq!(error_of(&result), Some("INVALID_EXECUTE_PAYLOAD"));
    }
}

#[tokio::test]
async fn a_node_without_a_task_is_accepted() {
    let ctx = ctx(BackendKind::Docker);
    let call = invoke(
        ToolKind::AgentExecute,
        json!({"nodeId": "n", "node": {"id": "n", "type": "agent.execute"}, "attemptCount": 1}),
    );
    let result = execute(call, &ctx).await;
    assert_eq!(result.status, ResultStatus::Succeeded);
    assert_eq!(result.output, Some(json!({"accepted": true})));
    assert_eq!(result.error, None);
}

#[tokio::test]
async fn a_host_task_succeeds_in_its_per_run_workdir_without_network() {
    let ctx = ctx(BackendKind::Host);
    let result = execute(
        shell(
            "echo \"$GREETING\"; pwd; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
            json!({}),
        ),
        &ctx,
    )
    .await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    let mut output = result.output.unwrap();
    let dir = ctx
        .workdir_root
        .canonicalize()
        .unwrap()
        .join("0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99/run/build/1");
    let stdout = output["stdout"].take();
    let lines: Vec<&str> = stdout.as_str().unwrap().lines().map(str::trim).collect();
    // Only a loopback interface: the policy's `networkMode: none` took the network away.
    assert_eq!(lines, ["hi", dir.to_str().unwrap(), "lo"]);
    assert_eq!(
        output,
        json!({"backend": "host", "exitCode": 0, "timedOut": false, "stdout": null, "stderr": "",
            "stdoutTruncated": false, "stderrTruncated": false})
    );
    let _ = std::fs::remove_dir_all(&ctx.workdir_root);
}

#[tokio::test]
async fn a_nonzero_exit_is_a_failure_with_its_code_and_output() {
    let ctx = ctx(BackendKind::Host);
    let result = execute(shell("echo partial; exit 7", json!({})), &ctx).await;
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(error_of(&result), Some("HOST_EXIT_CODE:7"));
    let output = result.output.unwrap();
    assert_eq!(output["exitCode"], 7);
    assert_eq!(output["stdout"], "partial\n");
    let _ = std::fs::remove_dir_all(&ctx.workdir_root);
}

#[tokio::test]
async fn the_shorter_node_timeout_applies_and_maps_to_a_timeout() {
    let ctx = ctx(BackendKind::Host);
    let started = std::time::Instant::now();
    let result = execute(
        shell("echo started; sleep 30", json!({"timeoutMs": 1000})),
        &ctx,
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(error_of(&result), Some("NODE_EXECUTION_TIMEOUT"));
    let output = result.output.unwrap();
    assert_eq!(output["timedOut"], true);
    assert_eq!(output["exitCode"], Value::Null);
    assert_eq!(output["stdout"], "started\n");
    let _ = std::fs::remove_dir_all(&ctx.workdir_root);
}

#[tokio::test]
async fn a_node_id_that_leaves_the_workdir_root_is_refused() {
    let ctx = ctx(BackendKind::Host);
    for node_id in ["..", "a/../../etc", ""] {
        let mut call = shell("touch escaped", json!({}));
        call.payload["nodeId"] = json!(node_id);
        let result = execute(call, &ctx).await;
        assert_eq!(
            error_of(&result),
            Some("WORKDIR_PATH_ESCAPE"),
            "{node_id:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&ctx.workdir_root);
}

#[tokio::test]
async fn backends_that_are_missing_or_not_enabled_fail_clearly() {
    let cases = [
        (BackendKind::Docker, json!({}), "DOCKER_FAILED"),
        (
            BackendKind::Docker,
            json!({"backend": "host"}),
            "HOST_BACKEND_NOT_ENABLED",
        ),
        (
            BackendKind::Docker,
            json!({"backend": "provider"}),
            "SANDBOX_PROVIDER_NOT_CONFIGURED",
        ),
        (
            BackendKind::Host,
            json!({"backend": "docker", "docker": {"image": "alpine"}}),
            "DOCKER_FAILED",
        ),
    ];
    for (default, sandbox, code) in cases {
        let ctx = ctx(default);
        let result = execute(shell("touch ran", sandbox.clone()), &ctx).await;
        assert_eq!(error_of(&result), Some(code), "{default:?} {sandbox}");
        assert!(!ctx.workdir_root.exists());
    }
}

/// A provider written in sh that runs the task itself (on the host, for the test) and reports it the
/// way a real provider would: the context on stdin names the script and the workdir.
fn sh_provider(ctx: &mut RuntimeContext) {
    let script = r#"
        ctx=$(cat)
        # The script and workdir out of the context, by the test's own conventions.
        script=$(printf '%s' "$ctx" | sed -n 's/.*"script":"\([^"]*\)".*/\1/p')
        net=$(printf '%s' "$ctx" | sed -n 's/.*"networkMode":"\([a-z]*\)".*/\1/p')
        out=$(sh -c "$script" 2>&1); code=$?
        if [ $code -eq 0 ]; then
            printf '{"status":"succeeded","output":{"stdout":"%s","net":"%s","cwd":"%s"}}' "$out" "$net" "$(pwd)"
        else
            printf '{"status":"failed","error":"VM_EXIT_CODE:%d","output":{"stdout":"%s"}}' $code "$out"
        fi
    "#;
    let line = format!("sh -c '{}'", script.replace('\'', "'\\''"));
    ctx.provider = Some(
        crate::node_agent::sandbox::provider::ProviderSandbox::from_command_line(&line).unwrap(),
    );
}

#[tokio::test]
async fn the_provider_backend_runs_the_task_and_passes_its_result_on() {
    let mut ctx = ctx(BackendKind::Docker);
    sh_provider(&mut ctx);
    let result = execute(
        shell("echo made > f; cat f", json!({"backend": "provider"})),
        &ctx,
    )
    .await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    let output = result.output.unwrap();
    assert_eq!(output["stdout"], "made");
    // The gateway's policy says no network, and the provider is told so.
    assert_eq!(output["net"], "none");
    // It runs in the task's per-run workdir.
    let cwd = output["cwd"].as_str().unwrap();
    assert!(
        cwd.starts_with(&ctx.workdir_root.display().to_string()),
        "{cwd}"
    );

    let result = execute(
        shell("echo no; exit 4", json!({"backend": "provider"})),
        &ctx,
    )
    .await;
    assert_eq!(error_of(&result), Some("VM_EXIT_CODE:4"));
    assert_eq!(result.output.unwrap()["stdout"], "no");

    // The operator's default backend may be the provider itself.
    let mut ctx = RuntimeContext::new(BackendKind::Provider, ctx.workdir_root.clone()).unwrap();
    sh_provider(&mut ctx);
    let result = execute(shell("echo default", json!({})), &ctx).await;
    assert_eq!(result.output.unwrap()["stdout"], "default");
    let _ = std::fs::remove_dir_all(&ctx.workdir_root);
}

#[tokio::test]
async fn a_provider_that_cannot_start_or_answers_nonsense_fails_with_its_code() {
    for (line, code) in [
        ("/nonexistent/provider", "SANDBOX_PROVIDER_LOAD_FAILED"),
        (
            "sh -c 'cat >/dev/null; echo nonsense'",
            "SANDBOX_PROVIDER_INVALID",
        ),
    ] {
        let mut ctx = ctx(BackendKind::Docker);
        ctx.provider = Some(
            crate::node_agent::sandbox::provider::ProviderSandbox::from_command_line(line).unwrap(),
        );
        let result = execute(shell("true", json!({"backend": "provider"})), &ctx).await;
        assert_eq!(error_of(&result), Some(code), "{line}");
        let _ = std::fs::remove_dir_all(&ctx.workdir_root);
    }
}

/// What the fake GitHub received.
struct Received {
    request_line: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A one-request HTTP/1.1 server answering `status` with `body`.
async fn github(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed early");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        let length: usize = headers["content-length"].parse().unwrap();
        while buf.len() < head_end + length {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let request_body: Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        Received {
            request_line,
            headers,
            body: request_body,
        }
    });
    (base, handle)
}

fn issue_create(base: &str, input: Value) -> InvokeToolV2 {
    let mut call = invoke(
        ToolKind::ConnectorAction,
        json!({"connectorId": "github", "actionId": "issue.create", "input": input,
            "env": {"githubApiBaseUrl": format!("{base}/")}}),
    );
    call.secret = Some("ghp_s3cret".into());
    call
}

#[tokio::test]
async fn issue_create_posts_to_github_and_returns_the_issue() {
    let (base, server) = github(
        "201 Created",
        r#"{"number":42,"html_url":"https://github.com/octo/hello/issues/42","url":"https://api.github.com/repos/octo/hello/issues/42"}"#,
    )
    .await;
    let call = issue_create(
        &base,
        json!({"repo": "octo/hello", "title": "Build failed", "body": "see run"}),
    );
    let result = execute(call, &ctx(BackendKind::Docker)).await;
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert_eq!(
        result.output,
        Some(json!({"issueNumber": 42, "url": "https://github.com/octo/hello/issues/42"}))
    );
    let got = server.await.unwrap();
    assert_eq!(got.request_line, "POST /repos/octo/hello/issues HTTP/1.1");
    assert_eq!(got.headers["accept"], "application/vnd.github+json");
    assert_eq!(got.headers["authorization"], "Bearer ghp_s3cret");
    assert_eq!(got.headers["user-agent"], "vespid-agent");
    assert_eq!(
        got.body,
        json!({"title": "Build failed", "body": "see run"})
    );
}

#[tokio::test]
async fn a_github_refusal_is_reported_with_its_status() {
    let (base, server) = github("422 Unprocessable Entity", r#"{"message":"nope"}"#).await;
    let call = issue_create(&base, json!({"repo": "octo/hello", "title": "t"}));
    let result = execute(call, &ctx(BackendKind::Docker)).await;
    assert_eq!(error_of(&result), Some("GITHUB_REQUEST_FAILED:422"));
    assert_eq!(server.await.unwrap().body, json!({"title": "t"}));
}

#[tokio::test]
async fn a_github_answer_without_number_or_url_is_invalid() {
    let (base, _server) = github("201 Created", r#"{"number":"42","html_url":"x"}"#).await;
    let call = issue_create(&base, json!({"repo": "octo/hello", "title": "t"}));
    let result = execute(call, &ctx(BackendKind::Docker)).await;
    assert_eq!(error_of(&result), Some("GITHUB_RESPONSE_INVALID"));
}

#[tokio::test]
async fn connector_actions_are_checked_before_any_request() {
    let ctx = ctx(BackendKind::Docker);
    let cases = [
        (
            json!({"connectorId": "github"}),
            true,
            "INVALID_ACTION_PAYLOAD",
        ),
        (
            json!({"connectorId": "github", "actionId": "issue.create", "env": {"githubApiBaseUrl": "not a url"}}),
            true,
            "INVALID_ACTION_PAYLOAD",
        ),
        (
            json!({"connectorId": "slack", "actionId": "message.post"}),
            true,
            "ACTION_NOT_SUPPORTED:slack:message.post",
        ),
        (
            json!({"connectorId": "github", "actionId": "issue.create", "input": {"repo": "../x", "title": "t"}}),
            true,
            "INVALID_ACTION_INPUT",
        ),
        (
            json!({"connectorId": "github", "actionId": "issue.create", "input": {"repo": "a/b", "title": "t"}}),
            false,
            "SECRET_REQUIRED",
        ),
    ];
    for (payload, with_secret, code) in cases {
        let mut call = invoke(ToolKind::ConnectorAction, payload.clone());
        call.secret = with_secret.then(|| "s".to_string());
        let result = execute(call, &ctx).await;
        assert_eq!(error_of(&result), Some(code), "{payload}");
    }
}
