//! The provider backend (spec gateway §3.8, in its Rust form): the operator names an external command
//! (`--sandbox-provider-command`, or `VESPID_AGENT_SANDBOX_PROVIDER_COMMAND`) that runs shell tasks
//! wherever it likes (a microVM, a remote sandbox service, a site-specific container runtime). The agent
//! starts it once per task and speaks JSON over stdio:
//!
//! - stdin: one JSON object, the task's context as the original's providers receive it
//!   (`{requestId, organizationId, userId, runId, workflowId, nodeId, attemptCount, script, shell,
//!   taskEnv, backend:"provider", networkMode, timeoutMs, dockerImage, envPassthroughAllowlist,
//!   workdirHostPath}`), then end of input;
//! - stdout: one JSON object, the result: `{"status":"succeeded","output":…}` or
//!   `{"status":"failed","error":"<CODE>","output"?:…}`. Its exit code is not read: the result is.
//!
//! The provider is trusted code of the operator's choosing, but it is still held to the task's
//! contract: it starts with a clean environment (the agent's own variables, its executor token among
//! them, are not inherited), in its own process group, which is killed when the task's time (plus a
//! grace for reporting) is up or the call is abandoned; what it prints is capped; and an answer that is
//! not the result shape is `SANDBOX_PROVIDER_INVALID`, never passed on as if it were one.
//! A command that cannot be started is `SANDBOX_PROVIDER_LOAD_FAILED`; no command configured at all is
//! `SANDBOX_PROVIDER_NOT_CONFIGURED` (decided by the runtime).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use uuid::Uuid;

use super::host::{capped, signal_group, GroupGuard, PASSTHROUGH};
use super::{NetworkMode, Shell};

/// How long a provider may take past the task's own timeout to report it (it is expected to enforce
/// the timeout itself and answer with `NODE_EXECUTION_TIMEOUT`).
const REPORT_GRACE: Duration = Duration::from_secs(5);
/// Room for the result's JSON beyond the two capped output streams it usually carries.
const RESULT_OVERHEAD_BYTES: usize = 1 << 20;
/// What is kept of the provider's stderr, for the agent's log.
const STDERR_KEPT_BYTES: usize = 4096;
/// A provider's error code is passed on to the run: a code, not an essay.
const ERROR_CODE_MAX_CHARS: usize = 200;

/// The context a provider receives on stdin (spec gateway §3.5).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTask<'a> {
    pub request_id: &'a str,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub run_id: Option<Uuid>,
    pub workflow_id: Option<Uuid>,
    pub node_id: &'a str,
    pub attempt_count: Option<u32>,
    pub script: &'a str,
    pub shell: ShellName,
    pub task_env: &'a BTreeMap<String, String>,
    pub backend: &'static str,
    pub network_mode: NetworkName,
    pub timeout_ms: u64,
    pub docker_image: Option<&'a str>,
    /// Always empty: the agent's environment is never forwarded, whoever runs the task.
    pub env_passthrough_allowlist: [&'static str; 0],
    pub workdir_host_path: &'a Path,
    /// Bytes the provider should keep of each output stream (the gateway's policy).
    pub output_max_bytes: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellName {
    Sh,
    Bash,
}

impl From<Shell> for ShellName {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Sh => Self::Sh,
            Shell::Bash => Self::Bash,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    None,
    Enabled,
}

impl From<NetworkMode> for NetworkName {
    fn from(mode: NetworkMode) -> Self {
        match mode {
            NetworkMode::None => Self::None,
            NetworkMode::Enabled => Self::Enabled,
        }
    }
}

/// What the provider said about the task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ProviderResult {
    Succeeded {
        #[serde(default)]
        output: Value,
    },
    Failed {
        error: String,
        #[serde(default)]
        output: Option<Value>,
    },
}

/// Why the provider gave no usable result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The command could not be started (missing, not executable).
    #[error("SANDBOX_PROVIDER_LOAD_FAILED: {0}")]
    LoadFailed(String),
    /// It ran, but what it printed is not a result.
    #[error("SANDBOX_PROVIDER_INVALID: {0}")]
    Invalid(String),
    /// It did not answer within the task's timeout and the grace; its process group was killed.
    #[error("NODE_EXECUTION_TIMEOUT")]
    TimedOut,
}

/// The operator's provider command, split once at start.
#[derive(Debug, Clone)]
pub struct ProviderSandbox {
    program: PathBuf,
    args: Vec<String>,
    report_grace: Duration,
}

impl ProviderSandbox {
    /// Splits a command line the way a POSIX shell would (quotes, escapes), without running a shell.
    pub fn from_command_line(line: &str) -> Result<Self, String> {
        let mut words = shlex::split(line)
            .ok_or_else(|| "unbalanced quotes in the provider command".to_string())?
            .into_iter();
        let program = words
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| "the provider command is empty".to_string())?;
        Ok(Self {
            program: PathBuf::from(program),
            args: words.collect(),
            report_grace: REPORT_GRACE,
        })
    }

    /// `--sandbox-provider-command` or its variable, when set and not blank.
    pub fn from_setting(setting: Option<&str>) -> Result<Option<Self>, String> {
        match setting.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(line) => Self::from_command_line(line).map(Some),
        }
    }

    #[cfg(test)]
    fn with_report_grace(mut self, grace: Duration) -> Self {
        self.report_grace = grace;
        self
    }

    pub async fn run(&self, task: &ProviderTask<'_>) -> Result<ProviderResult, ProviderError> {
        let input = serde_json::to_vec(task)
            .map_err(|e| ProviderError::Invalid(format!("context: {e}")))?;
        std::fs::create_dir_all(task.workdir_host_path)
            .map_err(|e| ProviderError::LoadFailed(format!("workdir: {e}")))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(task.workdir_host_path)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for key in PASSTHROUGH {
            if let Some(v) = std::env::var_os(key).filter(|v| !v.is_empty()) {
                cmd.env(key, v);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ProviderError::LoadFailed(format!("{}: {e}", self.program.display())))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| ProviderError::LoadFailed("no process id".into()))?;
        let group = GroupGuard(pgid);
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ProviderError::LoadFailed("no pipes".into()));
        };
        // Written from its own task: a provider that answers before reading all of its input must
        // not deadlock against us.
        let writer = tokio::spawn(async move {
            // A provider that exits without reading is its business; its answer decides.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
        let result_max = task
            .output_max_bytes
            .saturating_mul(2)
            .saturating_add(RESULT_OVERHEAD_BYTES);
        let out = tokio::spawn(capped(stdout, result_max));
        let err = tokio::spawn(capped(stderr, STDERR_KEPT_BYTES));
        let limit = Duration::from_millis(task.timeout_ms).saturating_add(self.report_grace);
        let waited = tokio::time::timeout(limit, child.wait()).await;
        // Whatever it left running goes with it (and the pipes close, so the readers end).
        signal_group(pgid, Signal::SIGKILL);
        drop(group);
        writer.abort();
        let (stdout, too_large) = out.await.unwrap_or_default();
        let (stderr, _) = err.await.unwrap_or_default();
        if !stderr.is_empty() {
            tracing::debug!(
                request_id = task.request_id,
                stderr = %String::from_utf8_lossy(&stderr),
                "sandbox provider stderr"
            );
        }
        let status = match waited {
            Err(_) => return Err(ProviderError::TimedOut),
            Ok(status) => status.ok(),
        };
        if too_large {
            return Err(ProviderError::Invalid(format!(
                "result larger than {result_max} bytes"
            )));
        }
        parse_result(&stdout).map_err(|why| {
            let exit = status.and_then(|s| s.code());
            ProviderError::Invalid(format!("{why} (exit code {exit:?})"))
        })
    }
}

fn parse_result(stdout: &[u8]) -> Result<ProviderResult, String> {
    let result: ProviderResult = serde_json::from_slice(stdout)
        .map_err(|e| format!("the result is not {{status, output|error}} JSON: {e}"))?;
    if let ProviderResult::Failed { error, .. } = &result {
        let is_code = !error.is_empty()
            && error.chars().count() <= ERROR_CODE_MAX_CHARS
            && !error.chars().any(char::is_control);
        if !is_code {
            return Err("the error is not a short one-line code".into());
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn workdir() -> PathBuf {
        std::env::temp_dir().join(format!("vespid-provider-{}", Uuid::new_v4().simple()))
    }

    fn task<'a>(
        script: &'a str,
        env: &'a BTreeMap<String, String>,
        dir: &'a Path,
        timeout_ms: u64,
    ) -> ProviderTask<'a> {
        ProviderTask {
            request_id: "run:node:1",
            organization_id: Uuid::nil(),
            user_id: Uuid::nil(),
            run_id: None,
            workflow_id: None,
            node_id: "n1",
            attempt_count: Some(1),
            script,
            shell: ShellName::Sh,
            task_env: env,
            backend: "provider",
            network_mode: NetworkName::None,
            timeout_ms,
            docker_image: None,
            env_passthrough_allowlist: [],
            workdir_host_path: dir,
            output_max_bytes: 1024,
        }
    }

    /// A provider written in sh: runs the given body with the context on its stdin.
    fn provider(body: &str) -> ProviderSandbox {
        ProviderSandbox::from_command_line(&format!("sh -c {}", shlex_quote(body))).unwrap()
    }

    fn shlex_quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "'\\''"))
    }

    #[test]
    fn the_command_line_is_split_like_a_shell_would() {
        let p = ProviderSandbox::from_command_line("python3 '/opt/my provider.py' --fast").unwrap();
        assert_eq!(p.program, PathBuf::from("python3"));
        assert_eq!(p.args, vec!["/opt/my provider.py", "--fast"]);
        assert!(ProviderSandbox::from_command_line("x 'unclosed").is_err());
        assert!(ProviderSandbox::from_setting(Some("   "))
            .unwrap()
            .is_none());
        assert!(ProviderSandbox::from_setting(None).unwrap().is_none());
    }

    #[tokio::test]
    async fn the_context_goes_in_and_the_result_comes_out() {
        let dir = workdir();
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "1".to_string());
        // Echoes the context back as the output: what the provider received is what we sent.
        let p = provider(r#"ctx=$(cat); printf '{"status":"succeeded","output":%s}' "$ctx""#);
        let got = p.run(&task("echo hi", &env, &dir, 10_000)).await.unwrap();
        let ProviderResult::Succeeded { output } = got else {
            panic!("not a success: {got:?}")
        };
        assert_eq!(output["script"], "echo hi");
        assert_eq!(output["backend"], "provider");
        assert_eq!(output["networkMode"], "none");
        assert_eq!(output["taskEnv"]["A"], "1");
        assert_eq!(output["envPassthroughAllowlist"], serde_json::json!([]));
        assert_eq!(output["workdirHostPath"], dir.display().to_string());
        assert_eq!(output["timeoutMs"], 10_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_failure_keeps_its_code_and_output() {
        let dir = workdir();
        let env = BTreeMap::new();
        let p = provider(
            r#"cat >/dev/null; echo '{"status":"failed","error":"VM_EXIT_CODE:3","output":{"stdout":"x"}}'; exit 1"#,
        );
        let got = p.run(&task("false", &env, &dir, 10_000)).await.unwrap();
        assert_eq!(
            got,
            ProviderResult::Failed {
                error: "VM_EXIT_CODE:3".into(),
                output: Some(serde_json::json!({"stdout": "x"}))
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_agents_environment_does_not_reach_the_provider() {
        std::env::set_var("VESPID_PROVIDER_TEST_SECRET", "hunter2");
        let dir = workdir();
        let env = BTreeMap::new();
        let p = provider(
            r#"cat >/dev/null; printf '{"status":"succeeded","output":"[%s]"}' "$VESPID_PROVIDER_TEST_SECRET""#,
        );
        let got = p.run(&task("true", &env, &dir, 10_000)).await.unwrap();
        assert_eq!(
            got,
            ProviderResult::Succeeded {
                output: serde_json::json!("[]")
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn answers_that_are_not_results_are_invalid() {
        let dir = workdir();
        let env = BTreeMap::new();
        for body in [
            "echo not json",
            r#"echo '{"status":"maybe"}'"#,
            r#"echo '{"status":"failed"}'"#,
            r#"echo '{"status":"failed","error":""}'"#,
            "printf '{\"status\":\"failed\",\"error\":\"A\\\\nB\"}'",
            "exit 0",
        ] {
            let got = provider(body).run(&task("true", &env, &dir, 10_000)).await;
            assert!(
                matches!(got, Err(ProviderError::Invalid(_))),
                "{body}: {got:?}"
            );
        }
        // More than the outputs could ever need.
        let got = provider("head -c 3000000 /dev/zero")
            .run(&task("true", &env, &dir, 10_000))
            .await;
        assert!(matches!(got, Err(ProviderError::Invalid(_))), "{got:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_missing_command_fails_to_load() {
        let dir = workdir();
        let env = BTreeMap::new();
        let p = ProviderSandbox::from_command_line("/nonexistent/vespid-provider").unwrap();
        let got = p.run(&task("true", &env, &dir, 10_000)).await;
        assert!(matches!(got, Err(ProviderError::LoadFailed(_))), "{got:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_provider_past_its_time_is_killed_with_what_it_started() {
        let dir = workdir();
        let env = BTreeMap::new();
        let p = provider("sleep 30 & echo $! > bg.pid; sleep 30")
            .with_report_grace(Duration::from_millis(100));
        let started = Instant::now();
        let got = p.run(&task("true", &env, &dir, 200)).await;
        assert_eq!(got, Err(ProviderError::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(dir.join("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The background sleep is gone (or a zombie about to be reaped by init).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "the provider's background process survived");
        let _ = std::fs::remove_dir_all(dir);
    }
}
