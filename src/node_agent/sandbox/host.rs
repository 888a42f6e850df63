//! The host backend: the task runs as `sh -c <script>` (or bash) in its own process group, with stdin
//! closed, a clean environment (only `PATH, HOME, USER, TMPDIR, LANG, LC_ALL` of the agent's, then the
//! task's own), each output stream capped, and a wall-clock timeout that terminates the whole group
//! (SIGTERM, then SIGKILL after a grace). The group is also killed when the shell exits, or when the
//! run is abandoned (its future dropped), so nothing it started in the background outlives the task.
//! A task that must have no network gets its own, empty network namespace (see [`netns`]); where the
//! kernel refuses one, the task fails with `HOST_NETWORK_MODE_UNSUPPORTED` instead of running online.
//!
//! Not a login shell (the original runs `sh -lc`): a login shell would source the machine's
//! `/etc/profile` and the agent user's `~/.profile` into the task, bringing back the host environment the
//! clean environment keeps out (and costing ~3 ms per task).

mod netns;

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{NetworkMode, Outcome, Running, Sandbox, SandboxError, Task};

/// Variables of the agent's own environment a task may see.
pub(super) const PASSTHROUGH: [&str; 6] = ["PATH", "HOME", "USER", "TMPDIR", "LANG", "LC_ALL"];

pub struct HostSandbox {
    /// Between SIGTERM and SIGKILL on timeout.
    pub kill_grace: Duration,
}

impl Default for HostSandbox {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_millis(500),
        }
    }
}

/// Reads `stream` to its end, keeping at most `max` bytes; whether anything was dropped.
pub(super) async fn capped(mut stream: impl AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut dropped = false;
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                let room = max.saturating_sub(kept.len());
                if chunk.len() > room {
                    dropped = true;
                }
                kept.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
            }
        }
    }
    (kept, dropped)
}

pub(super) fn signal_group(pgid: i32, signal: Signal) {
    // ESRCH (the group is gone) is the normal case after a clean exit.
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Kills the task's process group when dropped: at the end of a run, and also when the run's future is
/// dropped half-way (the agent shutting down), which `kill_on_drop` alone would not cover since it
/// kills only the shell, not what the shell started.
pub(super) struct GroupGuard(pub(super) i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}

impl HostSandbox {
    async fn execute(&self, task: Task) -> Result<Outcome, SandboxError> {
        std::fs::create_dir_all(&task.workdir)
            .map_err(|e| SandboxError::Failed(format!("workdir: {e}")))?;
        let mut cmd = Command::new(task.shell.program());
        cmd.arg("-c")
            .arg(&task.script)
            .current_dir(&task.workdir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for key in PASSTHROUGH {
            if let Some(v) = std::env::var_os(key).filter(|v| !v.is_empty()) {
                cmd.env(key, v);
            }
        }
        cmd.envs(&task.env);
        if task.network == NetworkMode::None {
            netns::isolate(&mut cmd);
        }
        let mut child = cmd.spawn().map_err(|e| {
            if netns::is_unavailable(&e) {
                SandboxError::NetworkModeUnsupported
            } else {
                SandboxError::Failed(format!("spawn {}: {e}", task.shell.program()))
            }
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| SandboxError::Failed("no process id".into()))?;
        let group = GroupGuard(pgid);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SandboxError::Failed("no output pipes".into()));
        };
        let max = task.output_max_bytes;
        let out = tokio::spawn(capped(stdout, max));
        let err = tokio::spawn(capped(stderr, max));
        let (status, timed_out) = match tokio::time::timeout(task.timeout, child.wait()).await {
            Ok(status) => (status.ok(), false),
            Err(_) => {
                signal_group(pgid, Signal::SIGTERM);
                let waited = tokio::time::timeout(self.kill_grace, child.wait()).await;
                signal_group(pgid, Signal::SIGKILL);
                let status = match waited {
                    Ok(status) => status.ok(),
                    Err(_) => child.wait().await.ok(),
                };
                (status, true)
            }
        };
        // Whatever the shell left running in the background goes with it; the pipes then close.
        drop(group);
        let (stdout, stdout_truncated) = out.await.unwrap_or_default();
        let (stderr, stderr_truncated) = err.await.unwrap_or_default();
        Ok(Outcome {
            backend: "host",
            exit_code: status.and_then(|s| s.code()),
            timed_out,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_truncated,
            stderr_truncated,
        })
    }
}

impl Sandbox for HostSandbox {
    fn run(&self, task: Task) -> Running<'_> {
        Box::pin(self.execute(task))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::super::Shell;
    use super::*;

    fn task(script: &str) -> Task {
        Task {
            script: script.to_string(),
            shell: Shell::Sh,
            env: BTreeMap::new(),
            workdir: std::env::temp_dir()
                .join(format!("vespid-host-{}", uuid::Uuid::new_v4().simple())),
            timeout: Duration::from_secs(10),
            network: NetworkMode::Enabled,
            output_max_bytes: 65_536,
        }
    }

    #[tokio::test]
    async fn runs_in_its_workdir_and_reports_output_and_exit_code() {
        let t = task("pwd; echo out; echo err >&2; exit 3");
        let dir = t.workdir.clone();
        let o = HostSandbox::default().run(t).await.unwrap();
        assert_eq!(o.exit_code, Some(3));
        assert!(!o.timed_out);
        assert_eq!(o.stdout, format!("{}\nout\n", dir.display()));
        assert_eq!(o.stderr, "err\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_agents_environment_does_not_leak_in() {
        std::env::set_var("VESPID_HOST_TEST_SECRET", "hunter2");
        let mut t = task("echo \"[$VESPID_HOST_TEST_SECRET][$MINE]\"");
        t.env.insert("MINE".into(), "yes".into());
        let o = HostSandbox::default().run(t).await.unwrap();
        assert_eq!(o.stdout, "[][yes]\n");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let mut t = task("sleep 30 & echo $! > bg.pid; sleep 30");
        t.timeout = Duration::from_millis(300);
        let dir = t.workdir.clone();
        let started = Instant::now();
        let o = HostSandbox::default().run(t).await.unwrap();
        assert!(o.timed_out);
        assert_eq!(o.exit_code, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(dir.join("bg.pid")).unwrap();
        let pid = pid.trim();
        // Reaped by init once killed: give it a moment.
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "background process {pid} survived the timeout");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn background_processes_do_not_outlive_a_finished_task() {
        let t = task("sleep 30 & echo $! > bg.pid; echo done");
        let dir = t.workdir.clone();
        let started = Instant::now();
        let o = HostSandbox::default().run(t).await.unwrap();
        assert_eq!(o.exit_code, Some(0));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for the background job"
        );
        let pid = std::fs::read_to_string(dir.join("bg.pid")).unwrap();
        let mut gone = false;
        for _ in 0..50 {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn output_is_capped_and_says_so() {
        let mut t = task("head -c 200000 /dev/zero | tr '\\0' 'a'");
        t.output_max_bytes = 1024;
        let o = HostSandbox::default().run(t).await.unwrap();
        assert_eq!(o.stdout.len(), 1024);
        assert!(o.stdout_truncated);
        assert!(!o.stderr_truncated);
    }

    #[tokio::test]
    async fn an_abandoned_run_takes_its_whole_group_with_it() {
        let t = task("sleep 30 & echo $! > bg.pid; sleep 30");
        let dir = t.workdir.clone();
        let sandbox = HostSandbox::default();
        // The agent drops a run when it gives up on it at shutdown.
        let abandoned = tokio::time::timeout(Duration::from_millis(300), sandbox.run(t)).await;
        assert!(abandoned.is_err());
        let pid = std::fs::read_to_string(dir.join("bg.pid")).unwrap();
        let mut gone = false;
        for _ in 0..50 {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "background process {} survived", pid.trim());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A listener on the agent's loopback: reachable with the network enabled, not without it (the
    /// task has its own namespace, whose loopback is not the agent's). Needs root or unprivileged user
    /// namespaces, which the test environment has.
    #[tokio::test]
    async fn a_task_without_network_cannot_reach_the_agents_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
        let mut online = task(&script);
        online.shell = Shell::Bash;
        let o = HostSandbox::default().run(online).await.unwrap();
        assert_eq!((o.exit_code, o.stdout.as_str()), (Some(0), "connected\n"));

        let mut offline = task(&script);
        offline.shell = Shell::Bash;
        offline.network = NetworkMode::None;
        let o = HostSandbox::default().run(offline).await.unwrap();
        assert_ne!(o.exit_code, Some(0), "{o:?}");
        assert_eq!(o.stdout, "");

        let mut ifaces = task("cat /proc/net/dev");
        ifaces.network = NetworkMode::None;
        let o = HostSandbox::default().run(ifaces).await.unwrap();
        let names: Vec<&str> = o
            .stdout
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(names, ["lo"]);
    }
}
