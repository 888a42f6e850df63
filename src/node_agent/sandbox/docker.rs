//! The Docker backend: each task runs in its own throw-away container, driven through the Engine API
//! over the local unix socket (bollard; `DOCKER_HOST=unix://…` picks another socket). Nothing goes
//! through the `docker` CLI, so the task's environment never appears on a command line.
//!
//! Every container is hardened the same way: read-only root filesystem, a 64 MiB `nosuid,nodev` tmpfs at
//! `/tmp`, the task's workdir bind-mounted read-write at `/work` (the working directory), an unprivileged
//! user (1000:1000 by default), every capability dropped, `no-new-privileges`, memory with swap equal to
//! it (so no swap), a CPU quota, a pids limit, `nofile` ulimits, an init process as PID 1 (so background
//! jobs are reaped and die with the shell) and no logging driver (output is streamed, never written to the
//! engine's disk). The network is `none` unless the task asks for it.
//!
//! Output is read from the attach (or exec) stream as it arrives: past `output_max_bytes` per stream the
//! bytes are counted and dropped, never buffered. On timeout the container is killed. Containers are
//! removed (forced) on every path: success, error, timeout, and when the caller drops the future. Once
//! the task's container has stopped (or, pooled, once nothing of the task is left in it) the outcome is
//! returned and the removal finishes in the background; [`DockerSandbox::shutdown`] waits for those.
//!
//! The workdir must be writable by the sandbox user without `chmod 0777`: the agent (root) chowns the
//! workdir tree to that uid/gid before the task. When the agent is not root it cannot chown, so the
//! sandbox user then defaults to the agent's own uid/gid (the workdir is already its own); an explicit
//! `VESPID_AGENT_DOCKER_USER` that differs from the agent's user then fails with a message. The default
//! 1000:1000 matches the `sandbox` user of the local image; on a host where uid 1000 is a person, set a
//! dedicated unused uid:gid.
//!
//! A [`WarmPool`] keeps a few started idle containers of the default image (network `none`), so a task
//! skips the create/start of a container: it runs through `exec` instead. A warm container serves
//! exactly one task and is then removed; the pool refills in the background. Its `/work` is a bind mount
//! of an empty pool-owned scratch directory: for the task, the workdir's entries are moved (renamed, not
//! copied) into the scratch directory, and moved back once nothing of the task is left in the container
//! (its cgroup holds only the idle processes; otherwise, or when the agent cannot see the cgroup, it is
//! killed first). That needs the pool directory and the workdir on the same filesystem; otherwise the
//! task runs cold.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptions, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::{NetworkMode, Outcome, Running, Sandbox, SandboxError, Task};

/// The image built locally by `scripts/docker.sh` (busybox, a `sandbox` user with uid 1000).
pub const DEFAULT_IMAGE: &str = "vespid-sandbox:busybox";
/// Where the workdir is mounted in the container, and the task's working directory.
const CONTAINER_WORKDIR: &str = "/work";
/// Every container this backend creates carries this label (value `1`), so they can be found and reaped.
pub const LABEL: &str = "vespid.sandbox";
/// `task` for a cold container, `warm` for a pool container.
pub const KIND_LABEL: &str = "vespid.sandbox.kind";
/// Once the task was killed, how long its output may take to end before it is cut.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Once the shell has exited, how long its output may stay open (held by a background job) before the
/// container is killed. Normally the output ends first; the grace only lets it arrive.
const LINGER: Duration = Duration::from_millis(50);
/// Warm containers older than their lifetime minus this are not handed out (they exit by themselves).
const WARM_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Between exec inspections while waiting for a pooled task's exit code (doubling up to the maximum).
const EXEC_POLL_FIRST: Duration = Duration::from_millis(1);
const EXEC_POLL_MAX: Duration = Duration::from_millis(100);

/// The uid/gid tasks run as (`--user uid:gid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxUser {
    pub uid: u32,
    pub gid: u32,
}

impl SandboxUser {
    /// The dedicated sandbox user when the agent is root (it can chown workdirs to it); otherwise the
    /// agent's own user, which already owns the workdirs.
    pub fn default_for_agent() -> Self {
        let uid = nix::unistd::geteuid();
        if uid.is_root() {
            Self {
                uid: 1000,
                gid: 1000,
            }
        } else {
            Self {
                uid: uid.as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            }
        }
    }

    fn spec(self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

impl FromStr for SandboxUser {
    type Err = String;

    /// `uid:gid`, or `uid` alone (the gid is then the same number). Names are not accepted: they would
    /// be resolved in the image, the chown on the host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (uid, gid) = s.split_once(':').unwrap_or((s, s));
        let parse = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("expected uid:gid, got {s:?}"))
        };
        Ok(Self {
            uid: parse(uid)?,
            gid: parse(gid)?,
        })
    }
}

/// Whether a missing image is pulled (like `docker run`) or the task fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Never,
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "missing" => Ok(Self::Missing),
            "never" => Ok(Self::Never),
            other => Err(format!("expected missing or never, got {other:?}")),
        }
    }
}

/// How containers are made. [`DockerConfig::from_env`] reads the agent's environment.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `VESPID_AGENT_DOCKER_IMAGE`, default [`DEFAULT_IMAGE`]; a node's `sandbox.docker.image` overrides
    /// it per task ([`DockerSandbox::run_with_image`]).
    pub image: String,
    /// `VESPID_AGENT_DOCKER_PULL` (`missing`, the default, or `never`).
    pub pull: PullPolicy,
    /// `VESPID_AGENT_DOCKER_USER` (`uid:gid`), default [`SandboxUser::default_for_agent`].
    pub user: SandboxUser,
    /// `VESPID_AGENT_DOCKER_MEMORY_MB`, default 256, at least 64; swap is not allowed beyond it.
    pub memory_mb: u64,
    /// `VESPID_AGENT_DOCKER_CPUS`, default 1, at least 0.1.
    pub cpus: f64,
    /// `VESPID_AGENT_DOCKER_PIDS`, default 256, at least 64.
    pub pids_limit: u32,
    /// `VESPID_AGENT_DOCKER_NOFILE` (soft = hard), default 1024, at least 64.
    pub nofile: u32,
    /// Size of the `/tmp` tmpfs, MiB (64).
    pub tmp_size_mb: u32,
    /// `VESPID_AGENT_DOCKER_WARM`: idle containers kept started for the default image (2; 0 disables).
    pub warm: usize,
    /// How long a warm container may sit idle before it exits by itself (and the engine removes it), so
    /// containers of an agent that died without cleaning up do not stay forever.
    pub warm_lifetime: Duration,
    /// `VESPID_AGENT_DOCKER_POOL_DIR`: where warm containers' scratch `/work` directories live, default
    /// `~/.vespid/docker-pool`. Must be on the workdirs' filesystem for the pool to be used.
    pub pool_dir: PathBuf,
    /// Extra labels on every container (the backend's own are [`LABEL`] and [`KIND_LABEL`]).
    pub labels: BTreeMap<String, String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        let pool_dir = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".vespid").join("docker-pool"))
            .unwrap_or_else(|| std::env::temp_dir().join("vespid-docker-pool"));
        Self {
            image: DEFAULT_IMAGE.to_string(),
            pull: PullPolicy::Missing,
            user: SandboxUser::default_for_agent(),
            memory_mb: 256,
            cpus: 1.0,
            pids_limit: 256,
            nofile: 1024,
            tmp_size_mb: 64,
            warm: 2,
            warm_lifetime: Duration::from_secs(3600),
            pool_dir,
            labels: BTreeMap::new(),
        }
    }
}

/// `name`'s value when set and non-empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `name` parsed, else `default` (with a warning when set but unparsable), never below `floor`.
fn env_number<T>(name: &str, default: T, floor: T) -> T
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let value = match env_var(name) {
        None => default,
        Some(raw) => raw.trim().parse::<T>().unwrap_or_else(|_| {
            tracing::warn!(%name, %raw, %default, "not a number; using the default");
            default
        }),
    };
    if value < floor {
        floor
    } else {
        value
    }
}

impl DockerConfig {
    /// The defaults, overridden by the `VESPID_AGENT_DOCKER_*` variables (see the fields). Limits below
    /// their floor are raised to it; a malformed user or pull policy is an error.
    pub fn from_env() -> Result<Self, SandboxError> {
        let mut config = Self::default();
        if let Some(image) = env_var("VESPID_AGENT_DOCKER_IMAGE") {
            config.image = image.trim().to_string();
        }
        if let Some(pull) = env_var("VESPID_AGENT_DOCKER_PULL") {
            config.pull = pull
                .parse()
                .map_err(|e| SandboxError::Failed(format!("VESPID_AGENT_DOCKER_PULL: {e}")))?;
        }
        if let Some(user) = env_var("VESPID_AGENT_DOCKER_USER") {
            config.user = user
                .parse()
                .map_err(|e| SandboxError::Failed(format!("VESPID_AGENT_DOCKER_USER: {e}")))?;
        }
        config.memory_mb = env_number("VESPID_AGENT_DOCKER_MEMORY_MB", config.memory_mb, 64);
        config.cpus = env_number("VESPID_AGENT_DOCKER_CPUS", config.cpus, 0.1);
        config.pids_limit = env_number("VESPID_AGENT_DOCKER_PIDS", config.pids_limit, 64);
        config.nofile = env_number("VESPID_AGENT_DOCKER_NOFILE", config.nofile, 64);
        config.warm = env_number("VESPID_AGENT_DOCKER_WARM", config.warm, 0);
        if let Some(dir) = env_var("VESPID_AGENT_DOCKER_POOL_DIR") {
            config.pool_dir = PathBuf::from(dir);
        }
        Ok(config)
    }
}

/// Which kind of container [`DockerConfig::container_body`] describes.
enum Role {
    /// Runs the task's shell as its main process.
    Task { cmd: Vec<String>, env: Vec<String> },
    /// Idles until an exec arrives, and exits by itself after `lifetime` if none does.
    Warm { lifetime: Duration },
}

impl DockerConfig {
    /// The container for `role`, with every hardening option of the module doc.
    fn container_body(
        &self,
        image: &str,
        role: Role,
        workdir: &Path,
        network: NetworkMode,
    ) -> ContainerCreateBody {
        let memory = i64::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        let nofile = i64::from(self.nofile);
        let mut labels: HashMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL.to_string(), "1".to_string());
        let (kind, cmd, env, auto_remove) = match role {
            Role::Task { cmd, env } => ("task", cmd, env, false),
            // `sleep` is busybox's or coreutils'; with the init as PID 1 it is killed with the container.
            Role::Warm { lifetime } => (
                "warm",
                vec!["sleep".to_string(), lifetime.as_secs().max(1).to_string()],
                Vec::new(),
                // An idle container that outlives its agent exits after its lifetime and is then removed
                // by the engine itself.
                true,
            ),
        };
        labels.insert(KIND_LABEL.to_string(), kind.to_string());
        let host_config = HostConfig {
            mounts: Some(vec![Mount {
                target: Some(CONTAINER_WORKDIR.to_string()),
                source: Some(workdir.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Default::default()
            }]),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}m", self.tmp_size_mb),
            )])),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((self.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(self.pids_limit)),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".to_string()),
                soft: Some(nofile),
                hard: Some(nofile),
            }]),
            init: Some(true),
            // Output is streamed through attach/exec; the engine keeps no copy of it on disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_string()),
                config: None,
            }),
            network_mode: match network {
                NetworkMode::None => Some("none".to_string()),
                NetworkMode::Enabled => None,
            },
            auto_remove: Some(auto_remove),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(image.to_string()),
            // An empty entrypoint replaces the image's (e.g. node's docker-entrypoint.sh): the command
            // runs as given.
            entrypoint: Some(Vec::new()),
            cmd: Some(cmd),
            env: Some(env),
            user: Some(self.user.spec()),
            working_dir: Some(CONTAINER_WORKDIR.to_string()),
            labels: Some(labels),
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(false),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// The task's environment as `KEY=value` items of the API's `Env` (never argv). A name with `=` or a
/// NUL, or a value with a NUL, would be split or cut by the engine: refused.
fn env_items(env: &BTreeMap<String, String>) -> Result<Vec<String>, SandboxError> {
    env.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                Err(SandboxError::Failed(format!(
                    "invalid environment variable {k:?} (empty name, or '=' or NUL in it, or NUL in its value)"
                )))
            } else {
                Ok(format!("{k}={v}"))
            }
        })
        .collect()
}

fn task_cmd(task: &Task) -> Vec<String> {
    vec![
        task.shell.program().to_string(),
        "-lc".to_string(),
        task.script.clone(),
    ]
}

fn describe(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn engine(what: &'static str) -> impl FnOnce(EngineError) -> SandboxError {
    move |e| SandboxError::Failed(format!("docker {what}: {}", describe(&e)))
}

fn is_status(e: &EngineError, status: u16) -> bool {
    matches!(e, EngineError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Makes `root` and everything under it (symlinks themselves, never their targets) owned by `user`.
fn chown_tree(root: &Path, user: SandboxUser) -> std::io::Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.uid() != user.uid || meta.gid() != user.gid {
            std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Creates the workdir if missing and hands it to the sandbox user; its absolute, resolved path.
async fn prepare_workdir(workdir: &Path, user: SandboxUser) -> Result<PathBuf, SandboxError> {
    let workdir = workdir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&workdir)
            .map_err(|e| SandboxError::Failed(format!("workdir {}: {e}", workdir.display())))?;
        let workdir = workdir
            .canonicalize()
            .map_err(|e| SandboxError::Failed(format!("workdir {}: {e}", workdir.display())))?;
        chown_tree(&workdir, user).map_err(|e| {
            SandboxError::Failed(format!(
                "workdir {}: cannot give it to the sandbox user {}: {e} (run the agent as root, or \
                 set VESPID_AGENT_DOCKER_USER to the agent's own uid:gid)",
                workdir.display(),
                user.spec()
            ))
        })?;
        Ok(workdir)
    })
    .await
    .map_err(|e| SandboxError::Failed(format!("workdir: {e}")))?
}

/// One output stream: at most `max` bytes kept, the rest counted.
struct Capture {
    kept: Vec<u8>,
    dropped: u64,
    max: usize,
}

impl Capture {
    fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            dropped: 0,
            max,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.max.saturating_sub(self.kept.len()).min(chunk.len());
        let (keep, rest) = chunk.split_at_checked(room).unwrap_or((chunk, &[]));
        self.kept.extend_from_slice(keep);
        self.dropped = self.dropped.saturating_add(rest.len() as u64);
    }

    fn truncated(&self) -> bool {
        self.dropped > 0
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// What [`supervise`] saw.
struct Supervised {
    exit_code: Option<i64>,
    timed_out: bool,
    stdout: Capture,
    stderr: Capture,
}

impl Supervised {
    fn outcome(self) -> Outcome {
        if self.stdout.truncated() || self.stderr.truncated() {
            tracing::debug!(
                stdout_dropped = self.stdout.dropped,
                stderr_dropped = self.stderr.dropped,
                "sandbox output over the cap was dropped"
            );
        }
        Outcome {
            backend: "docker",
            exit_code: if self.timed_out {
                None
            } else {
                self.exit_code.and_then(|c| i32::try_from(c).ok())
            },
            timed_out: self.timed_out,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            stdout_truncated: self.stdout.truncated(),
            stderr_truncated: self.stderr.truncated(),
        }
    }
}

/// Where [`supervise`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The task runs; the deadline applies.
    Running,
    /// The shell has exited but something it started still holds the output open; killed at this
    /// instant (see [`LINGER`]).
    Lingering(Instant),
    /// Killed (timeout, or lingering); the output is read until it ends or until this instant.
    Draining(Instant),
}

/// Reads `output` while waiting for `exit`; at `deadline` runs `kill` and reports a timeout. Once the
/// shell has exited, whatever it left running holds the output open only for [`LINGER`]: then the
/// container is killed, as the host backend kills the process group (in a cold container the init
/// already did it when the shell exited). Ends once the output has ended and the exit is known or the
/// task was killed, or at the latest [`DRAIN_GRACE`] after the kill.
async fn supervise<S, E, K, KF>(
    mut output: S,
    exit: E,
    output_ended: &Notify,
    deadline: Instant,
    max: usize,
    kill: K,
) -> Result<Supervised, SandboxError>
where
    S: Stream<Item = Result<LogOutput, EngineError>> + Unpin,
    E: Future<Output = Result<i64, SandboxError>>,
    K: FnOnce() -> KF,
    KF: Future<Output = ()>,
{
    let mut stdout = Capture::new(max);
    let mut stderr = Capture::new(max);
    tokio::pin!(exit);
    let mut exit_code = None;
    let mut open = true;
    let mut timed_out = false;
    let mut kill = Some(kill);
    let mut phase = Phase::Running;
    loop {
        if !open && (exit_code.is_some() || timed_out) {
            break;
        }
        let wake_at = match phase {
            Phase::Running => deadline,
            Phase::Lingering(at) | Phase::Draining(at) => at,
        };
        tokio::select! {
            item = output.next(), if open => match item {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    stdout.push(&message);
                }
                Some(Ok(LogOutput::StdErr { message })) => stderr.push(&message),
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "sandbox output stream failed");
                    open = false;
                    output_ended.notify_one();
                }
                None => {
                    open = false;
                    output_ended.notify_one();
                }
            },
            code = &mut exit, if exit_code.is_none() && phase == Phase::Running => {
                exit_code = Some(code?);
                phase = Phase::Lingering(Instant::now() + LINGER);
            }
            () = tokio::time::sleep_until(wake_at) => {
                match phase {
                    Phase::Draining(_) => break,
                    Phase::Running => timed_out = true,
                    Phase::Lingering(_) => {}
                }
                if let Some(kill) = kill.take() {
                    kill().await;
                }
                phase = Phase::Draining(Instant::now() + DRAIN_GRACE);
            }
        }
    }
    Ok(Supervised {
        exit_code,
        timed_out,
        stdout,
        stderr,
    })
}

/// SIGKILL to the container (the engine waits until it is dead). "Not running" is fine.
async fn kill(docker: &Docker, id: &str) {
    if let Err(e) = docker
        .kill_container(id, None::<KillContainerOptions>)
        .await
    {
        if !is_status(&e, 404) && !is_status(&e, 409) {
            tracing::warn!(container = %id, error = %describe(&e), "docker kill failed");
        }
    }
}

/// Forced removal; a container already gone (or being removed by the engine) is fine.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        if !is_status(&e, 404) && !is_status(&e, 409) {
            tracing::warn!(container = %id, error = %describe(&e), "docker rm -f failed");
        }
    }
}

/// The exit code of a started container, once it stops.
async fn wait_exit(docker: &Docker, id: &str) -> Result<i64, SandboxError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut waits = docker.wait_container(id, Some(options));
    match waits.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(EngineError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(engine("wait")(e)),
        None => Err(SandboxError::Failed("docker wait: no answer".into())),
    }
}

/// The exit code of an exec, once its process has exited. The engine has no wait for execs, so it is
/// polled: slowly while the output is open (the shell may have exited while a background job holds
/// it), and from [`EXEC_POLL_FIRST`] again once `output_ended` fires, when the exit is imminent.
async fn exec_exit(
    docker: &Docker,
    exec_id: &str,
    output_ended: &Notify,
) -> Result<i64, SandboxError> {
    let mut pause = EXEC_POLL_FIRST;
    loop {
        let inspected = docker
            .inspect_exec(exec_id)
            .await
            .map_err(engine("exec inspect"))?;
        if inspected.running != Some(true) {
            if let Some(code) = inspected.exit_code {
                return Ok(code);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => pause = (pause * 2).min(EXEC_POLL_MAX),
            () = output_ended.notified() => pause = EXEC_POLL_FIRST,
        }
    }
}

/// The engine connection, and the cleanups running in the background (removals the task's result
/// does not wait for), so that a shutdown can wait for them.
#[derive(Clone)]
struct Engine {
    docker: Docker,
    background: Arc<Background>,
}

#[derive(Default)]
struct Background {
    pending: AtomicUsize,
    done: Notify,
}

impl Engine {
    /// Runs `cleanup` as its own task (also from a `Drop`); counted until it ends.
    fn spawn(&self, cleanup: impl Future<Output = ()> + Send + 'static) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime for a sandbox cleanup; a container may be left behind");
            return;
        };
        let background = self.background.clone();
        background.pending.fetch_add(1, Ordering::SeqCst);
        handle.spawn(async move {
            cleanup.await;
            if background.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                background.done.notify_waiters();
            }
        });
    }

    /// Waits until no cleanup is running, at most `within`.
    async fn settle(&self, within: Duration) {
        let settled = async {
            loop {
                let done = self.background.done.notified();
                if self.background.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                done.await;
            }
        };
        if tokio::time::timeout(within, settled).await.is_err() {
            tracing::warn!("sandbox cleanups still running at shutdown");
        }
    }
}

/// Removes a cold task's container when dropped before [`ContainerGuard::remove_now`] (an error path
/// returned early, or the caller dropped the future): the removal then runs as its own task.
struct ContainerGuard {
    engine: Engine,
    id: Option<String>,
}

impl ContainerGuard {
    fn disarm(mut self) {
        self.id = None;
    }

    fn remove_in_background(self) {
        drop(self);
    }

    async fn remove_now(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.engine.docker, &id).await;
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let docker = self.engine.docker.clone();
            self.engine.spawn(async move { remove(&docker, &id).await });
        }
    }
}

/// Moves every entry of `from` into `to` (renames: same filesystem). On failure, what was moved is
/// moved back and the error returned.
fn move_entries(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut moved: Vec<std::ffi::OsString> = Vec::new();
    let result = (|| {
        for entry in std::fs::read_dir(from)? {
            let name = entry?.file_name();
            std::fs::rename(from.join(&name), to.join(&name))?;
            moved.push(name);
        }
        Ok(())
    })();
    if result.is_err() {
        for name in moved {
            let _ = std::fs::rename(to.join(&name), from.join(&name));
        }
    }
    result
}

/// A started idle container of a [`WarmPool`], and its scratch directory (its `/work`).
struct Warm {
    id: String,
    scratch: PathBuf,
    born: Instant,
    /// The container's `cgroup.procs`, when the agent sees the engine's cgroups and pids (it runs on
    /// the host): lets [`Lease::finish`] see that nothing of the task is left without killing first.
    procs: Option<PathBuf>,
}

impl Warm {
    /// Whether only the container's own two processes (the init and its idle `sleep`) are left, so
    /// nothing of the task can still write to `/work`. A task's leftover is a third process: while the
    /// `sleep` lives nothing else can have taken its place, and when it dies the container stops.
    fn only_idle_processes_left(&self) -> bool {
        self.procs
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|procs| procs.lines().filter(|l| !l.trim().is_empty()).count() <= 2)
    }
}

/// The `cgroup.procs` file of the cgroup that host process `pid` is in, if it lists `pid` (that is, the
/// agent sees that cgroup under `/sys/fs/cgroup` and shares the engine's pid namespace).
fn cgroup_procs(pid: i64) -> Option<PathBuf> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let wanted = if unified {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "pids")
        };
        wanted.then(|| path.trim_start_matches('/').to_string())
    })?;
    let base = if unified {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/pids")
    };
    let procs = base.join(path).join("cgroup.procs");
    let listed = std::fs::read_to_string(&procs).ok()?;
    listed
        .lines()
        .any(|l| l.trim() == pid.to_string())
        .then_some(procs)
}

/// A warm container serving one task. Until [`Lease::finish`], dropping it (an error path, or the caller
/// dropping the future) kills the container, moves the task's files back and removes everything, in a
/// task of its own.
struct Lease {
    engine: Engine,
    warm: Option<Warm>,
    /// The task's workdir while its entries are in the scratch directory.
    moved_from: Option<PathBuf>,
}

impl Lease {
    /// Makes sure nothing the task started can still touch `/work` (killing the container when needed),
    /// then moves the task's files back. The container and the scratch directory are removed in the
    /// background: the engine needs tens of milliseconds for it, and the task's result does not depend
    /// on it.
    async fn finish(mut self) -> Result<(), SandboxError> {
        let Some(warm) = self.warm.take() else {
            return Ok(());
        };
        // Normally the task left nothing behind, and the kill (tens of milliseconds) can wait for the
        // background removal; otherwise its leftovers die before its files move.
        if !warm.only_idle_processes_left() {
            kill(&self.engine.docker, &warm.id).await;
        }
        let restored = match self.moved_from.take() {
            Some(workdir) => {
                let scratch = warm.scratch.clone();
                tokio::task::spawn_blocking(move || move_entries(&scratch, &workdir))
                    .await
                    .map_err(|e| SandboxError::Failed(format!("restore workdir: {e}")))
                    .and_then(|r| {
                        r.map_err(|e| {
                            SandboxError::Failed(format!(
                                "restore workdir: {e} (the task's files are in {})",
                                warm.scratch.display()
                            ))
                        })
                    })
            }
            None => Ok(()),
        };
        let docker = self.engine.docker.clone();
        let keep_scratch = restored.is_err();
        self.engine
            .spawn(async move { discard(&docker, warm, keep_scratch).await });
        restored
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(warm) = self.warm.take() else {
            return;
        };
        let docker = self.engine.docker.clone();
        let moved_from = self.moved_from.take();
        self.engine.spawn(async move {
            kill(&docker, &warm.id).await;
            let mut keep_scratch = false;
            if let Some(workdir) = moved_from {
                let scratch = warm.scratch.clone();
                let restored =
                    tokio::task::spawn_blocking(move || move_entries(&scratch, &workdir)).await;
                if !matches!(restored, Ok(Ok(()))) {
                    tracing::warn!(scratch = %warm.scratch.display(), "could not move a cancelled task's files back");
                    keep_scratch = true;
                }
            }
            discard(&docker, warm, keep_scratch).await;
        });
    }
}

/// Removes a warm container and (unless it still holds a task's files) its scratch directory.
async fn discard(docker: &Docker, warm: Warm, keep_scratch: bool) {
    remove(docker, &warm.id).await;
    if !keep_scratch {
        remove_tree(warm.scratch).await;
    }
}

/// Best effort: a leftover directory is only clutter.
async fn remove_tree(path: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path)).await;
}

struct PoolState {
    idle: VecDeque<Warm>,
    closed: bool,
}

struct PoolInner {
    engine: Engine,
    config: Arc<DockerConfig>,
    image: String,
    size: usize,
    /// This pool's own directory under `config.pool_dir`, holding one scratch directory per container.
    root: PathBuf,
    /// Its filesystem: workdirs elsewhere cannot be moved in by rename.
    device: u64,
    state: Mutex<PoolState>,
    /// Wakes the filler when a container was taken (or on shutdown).
    wake: Arc<Notify>,
    filler: Mutex<Option<JoinHandle<()>>>,
    /// Tasks run through this pool.
    served: AtomicU64,
}

impl PoolInner {
    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding this lock cannot leave the queue inconsistent: take the data anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn create_warm(&self) -> Result<Warm, SandboxError> {
        let scratch = self.root.join(Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&scratch)
            .map_err(|e| SandboxError::Failed(format!("pool scratch dir: {e}")))?;
        let user = self.config.user;
        let created = async {
            std::os::unix::fs::lchown(&scratch, Some(user.uid), Some(user.gid))
                .map_err(|e| SandboxError::Failed(format!("pool scratch dir: {e}")))?;
            let body = self.config.container_body(
                &self.image,
                Role::Warm {
                    lifetime: self.config.warm_lifetime,
                },
                &scratch,
                NetworkMode::None,
            );
            let name = format!("vespid-warm-{}", Uuid::new_v4().simple());
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let created = self
                .engine
                .docker
                .create_container(Some(options), body)
                .await
                .map_err(engine("create"))?;
            let guard = ContainerGuard {
                engine: self.engine.clone(),
                id: Some(created.id.clone()),
            };
            self.engine
                .docker
                .start_container(&created.id, None)
                .await
                .map_err(engine("start"))?;
            // Started: from here on the pool owns it.
            guard.disarm();
            let pid = self
                .engine
                .docker
                .inspect_container(&created.id, None)
                .await
                .ok()
                .and_then(|c| c.state)
                .and_then(|s| s.pid)
                .filter(|pid| *pid > 0);
            Ok((created.id, pid))
        }
        .await;
        match created {
            Ok((id, pid)) => Ok(Warm {
                id,
                scratch,
                born: Instant::now(),
                procs: pid.and_then(cgroup_procs),
            }),
            Err(e) => {
                remove_tree(scratch).await;
                Err(e)
            }
        }
    }

    /// An idle container young enough to serve a task; the filler is told to replace it.
    fn take(&self) -> Option<Warm> {
        let usable = self.config.warm_lifetime.saturating_sub(WARM_EXPIRY_MARGIN);
        let mut expired = Vec::new();
        let found = {
            let mut state = self.state();
            let mut found = None;
            while let Some(warm) = state.idle.pop_front() {
                if warm.born.elapsed() < usable {
                    found = Some(warm);
                    break;
                }
                expired.push(warm);
            }
            found
        };
        for warm in expired {
            let docker = self.engine.docker.clone();
            self.engine
                .spawn(async move { discard(&docker, warm, false).await });
        }
        self.wake.notify_one();
        found
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Normally [`WarmPool::shutdown`] has emptied it; otherwise clean up in the background.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        let idle: Vec<Warm> = state.idle.drain(..).collect();
        self.wake.notify_one();
        let docker = self.engine.docker.clone();
        let root = self.root.clone();
        self.engine.spawn(async move {
            for warm in idle {
                discard(&docker, warm, false).await;
            }
            let _ = std::fs::remove_dir(&root);
        });
    }
}

/// Keeps `size` started idle containers of one image (network `none`); each serves one task through
/// `exec` and is then removed, and a background task creates its replacement.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<PoolInner>,
}

impl WarmPool {
    /// Creates the pool's directory and starts filling it in the background (needs a Tokio runtime).
    fn start(
        engine: Engine,
        config: Arc<DockerConfig>,
        image: &str,
        size: usize,
    ) -> Result<Self, SandboxError> {
        let fail = |e: std::io::Error| {
            SandboxError::Failed(format!("pool dir {}: {e}", config.pool_dir.display()))
        };
        std::fs::create_dir_all(&config.pool_dir).map_err(fail)?;
        let root = config.pool_dir.join(Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&root).map_err(fail)?;
        let device = std::fs::metadata(&root).map_err(fail)?.dev();
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(PoolInner {
            engine,
            config,
            image: image.to_string(),
            size,
            root,
            device,
            state: Mutex::new(PoolState {
                idle: VecDeque::new(),
                closed: false,
            }),
            wake: wake.clone(),
            filler: Mutex::new(None),
            served: AtomicU64::new(0),
        });
        let filler = tokio::spawn(fill(Arc::downgrade(&inner), wake));
        *inner.filler.lock().unwrap_or_else(|e| e.into_inner()) = Some(filler);
        Ok(Self { inner })
    }

    pub fn image(&self) -> &str {
        &self.inner.image
    }

    /// Tasks this pool has run (each in a container of its own).
    pub fn served(&self) -> u64 {
        self.inner.served.load(Ordering::Relaxed)
    }

    /// Idle containers right now.
    pub fn idle(&self) -> usize {
        self.inner.state().idle.len()
    }

    /// Waits until at least `n` containers are idle; false if that did not happen `within`.
    pub async fn wait_idle(&self, n: usize, within: Duration) -> bool {
        let give_up = Instant::now() + within;
        while self.idle() < n {
            if Instant::now() >= give_up {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Whether a workdir can be moved into this pool's scratch directories (same filesystem).
    fn serves(&self, workdir: &Path) -> bool {
        std::fs::metadata(workdir).is_ok_and(|m| m.dev() == self.inner.device)
    }

    /// Stops refilling, removes the idle containers and the pool's directory.
    pub async fn shutdown(&self) {
        let idle: Vec<Warm> = {
            let mut state = self.inner.state();
            state.closed = true;
            state.idle.drain(..).collect()
        };
        self.inner.wake.notify_one();
        let filler = self
            .inner
            .filler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(filler) = filler {
            let _ = filler.await;
        }
        for warm in idle {
            discard(&self.inner.engine.docker, warm, false).await;
        }
        let _ = std::fs::remove_dir(&self.inner.root);
    }
}

/// The pool's background task: keeps the idle queue full. Holds the pool weakly, so a pool dropped
/// without [`WarmPool::shutdown`] still ends it.
async fn fill(pool: Weak<PoolInner>, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let wanted = {
            let state = inner.state();
            if state.closed {
                return;
            }
            inner.size.saturating_sub(state.idle.len())
        };
        if wanted == 0 {
            drop(inner);
            wake.notified().await;
            continue;
        }
        match inner.create_warm().await {
            Ok(warm) => {
                backoff = Duration::from_millis(250);
                let rejected = {
                    let mut state = inner.state();
                    if state.closed {
                        Some(warm)
                    } else {
                        state.idle.push_back(warm);
                        None
                    }
                };
                if let Some(warm) = rejected {
                    discard(&inner.engine.docker, warm, false).await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(image = %inner.image, error = %e, "warm sandbox container not created");
                drop(inner);
                // Woken early by a take or a shutdown; otherwise retried after the backoff.
                let _ = tokio::time::timeout(backoff, wake.notified()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The Docker backend. One engine connection; a [`WarmPool`] for the default image when
/// `config.warm > 0`.
pub struct DockerSandbox {
    engine: Engine,
    config: Arc<DockerConfig>,
    pool: Option<WarmPool>,
}

impl DockerSandbox {
    /// Connects to the local engine (negotiating the API version down to the engine's) and, when
    /// `config.warm > 0`, starts the warm pool. Needs a Tokio runtime.
    pub async fn connect(config: DockerConfig) -> Result<Self, SandboxError> {
        let docker = Docker::connect_with_unix_defaults()
            .map_err(engine("connect"))?
            .negotiate_version()
            .await
            .map_err(engine("connect"))?;
        docker.ping().await.map_err(engine("ping"))?;
        let engine = Engine {
            docker,
            background: Arc::new(Background::default()),
        };
        let config = Arc::new(config);
        let pool = if config.warm > 0 {
            Some(WarmPool::start(
                engine.clone(),
                config.clone(),
                &config.image,
                config.warm,
            )?)
        } else {
            None
        };
        Ok(Self {
            engine,
            config,
            pool,
        })
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The engine connection (shared; cheap to clone).
    pub fn docker(&self) -> &Docker {
        &self.engine.docker
    }

    pub fn pool(&self) -> Option<&WarmPool> {
        self.pool.as_ref()
    }

    /// Empties the warm pool and waits (10 s at most) for the removals still running in the
    /// background. Tasks in flight finish normally.
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
        self.engine.settle(Duration::from_secs(10)).await;
    }

    /// Runs `task` in `image` (a node's `sandbox.docker.image`), or the configured image when `None`.
    /// A task with network `none` in the default image goes through the warm pool when a container is
    /// idle; anything else gets a container of its own.
    pub async fn run_with_image(
        &self,
        task: Task,
        image: Option<&str>,
    ) -> Result<Outcome, SandboxError> {
        let env = env_items(&task.env)?;
        let image = image
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .unwrap_or(&self.config.image);
        let workdir = prepare_workdir(&task.workdir, self.config.user).await?;
        let deadline = Instant::now() + task.timeout;
        if let Some(pool) = self
            .pool
            .as_ref()
            .filter(|p| task.network == NetworkMode::None && p.image() == image)
        {
            if pool.serves(&workdir) {
                if let Some(warm) = pool.inner.take() {
                    if let Some(outcome) = self
                        .run_warm(warm, &task, env.clone(), &workdir, deadline)
                        .await?
                    {
                        pool.inner.served.fetch_add(1, Ordering::Relaxed);
                        return Ok(outcome);
                    }
                }
            } else {
                tracing::debug!(workdir = %workdir.display(), "workdir not on the pool's filesystem; running cold");
            }
        }
        self.run_cold(&task, env, image, &workdir, deadline).await
    }

    async fn create_task_container(
        &self,
        body: ContainerCreateBody,
        image: &str,
    ) -> Result<String, SandboxError> {
        let name = format!("vespid-{}", Uuid::new_v4().simple());
        let create = || {
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            self.engine
                .docker
                .create_container(Some(options), body.clone())
        };
        match create().await {
            Ok(created) => Ok(created.id),
            Err(e) if is_status(&e, 404) && self.config.pull == PullPolicy::Missing => {
                self.pull(image).await?;
                Ok(create().await.map_err(engine("create"))?.id)
            }
            Err(e) => Err(engine("create")(e)),
        }
    }

    async fn pull(&self, image: &str) -> Result<(), SandboxError> {
        tracing::info!(%image, "pulling the sandbox image");
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut progress = self.engine.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.map_err(engine("pull"))?;
        }
        Ok(())
    }

    async fn run_cold(
        &self,
        task: &Task,
        env: Vec<String>,
        image: &str,
        workdir: &Path,
        deadline: Instant,
    ) -> Result<Outcome, SandboxError> {
        let body = self.config.container_body(
            image,
            Role::Task {
                cmd: task_cmd(task),
                env,
            },
            workdir,
            task.network,
        );
        let id = self.create_task_container(body, image).await?;
        let guard = ContainerGuard {
            engine: self.engine.clone(),
            id: Some(id.clone()),
        };
        let result = self.drive_cold(&id, task, deadline).await;
        if result.is_ok() {
            // The container has stopped (its exit is known, or it was killed): nothing depends on
            // its removal, which takes the engine tens of milliseconds.
            guard.remove_in_background();
        } else {
            guard.remove_now().await;
        }
        result
    }

    async fn drive_cold(
        &self,
        id: &str,
        task: &Task,
        deadline: Instant,
    ) -> Result<Outcome, SandboxError> {
        // Attached before the start, so no output can be missed.
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .engine
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(engine("attach"))?;
        self.engine
            .docker
            .start_container(id, None)
            .await
            .map_err(engine("start"))?;
        let supervised = supervise(
            attached.output,
            wait_exit(&self.engine.docker, id),
            // The engine's wait needs no hint.
            &Notify::new(),
            deadline,
            task.output_max_bytes,
            || kill(&self.engine.docker, id),
        )
        .await?;
        Ok(supervised.outcome())
    }

    /// The task through a warm container; `None` when the container turned out unusable before the
    /// task's files were touched (the caller then runs it cold).
    async fn run_warm(
        &self,
        warm: Warm,
        task: &Task,
        env: Vec<String>,
        workdir: &Path,
        deadline: Instant,
    ) -> Result<Option<Outcome>, SandboxError> {
        let scratch = warm.scratch.clone();
        let id = warm.id.clone();
        let mut lease = Lease {
            engine: self.engine.clone(),
            warm: Some(warm),
            moved_from: None,
        };
        let exec = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            env: Some(env),
            cmd: Some(task_cmd(task)),
            user: Some(self.config.user.spec()),
            working_dir: Some(CONTAINER_WORKDIR.to_string()),
            ..Default::default()
        };
        let exec = match self.engine.docker.create_exec(&id, exec).await {
            Ok(exec) => exec,
            Err(e) => {
                tracing::warn!(container = %id, error = %describe(&e), "warm container unusable; running cold");
                return Ok(None);
            }
        };
        let (from, to) = (workdir.to_path_buf(), scratch.clone());
        match tokio::task::spawn_blocking(move || move_entries(&from, &to)).await {
            Ok(Ok(())) => lease.moved_from = Some(workdir.to_path_buf()),
            Ok(Err(e)) => {
                tracing::warn!(workdir = %workdir.display(), error = %e, "cannot move the workdir into a warm container; running cold");
                return Ok(None);
            }
            Err(e) => return Err(SandboxError::Failed(format!("workdir: {e}"))),
        }
        let started = self
            .engine
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await;
        let output = match started {
            Ok(StartExecResults::Attached { output, .. }) => output,
            Ok(StartExecResults::Detached) => {
                lease.finish().await?;
                return Err(SandboxError::Failed("docker exec: not attached".into()));
            }
            Err(e) => {
                lease.finish().await?;
                return Err(engine("exec start")(e));
            }
        };
        let output_ended = Notify::new();
        let supervised = supervise(
            output,
            exec_exit(&self.engine.docker, &exec.id, &output_ended),
            &output_ended,
            deadline,
            task.output_max_bytes,
            || kill(&self.engine.docker, &id),
        )
        .await;
        lease.finish().await?;
        Ok(Some(supervised?.outcome()))
    }
}

impl Sandbox for DockerSandbox {
    fn run(&self, task: Task) -> Running<'_> {
        Box::pin(self.run_with_image(task, None))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant as StdInstant;

    use bollard::query_parameters::ListContainersOptionsBuilder;

    use super::super::Shell;
    use super::*;

    /// `CI` set (and not `false`/`0`), as scripts/test.sh reads it.
    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
    }

    /// The engine, or `None` (with a notice) when it is not reachable outside CI; in CI it must be.
    async fn engine_or_skip(test: &str) -> Option<Docker> {
        let connected = async {
            let docker = Docker::connect_with_unix_defaults()?
                .negotiate_version()
                .await?;
            docker.ping().await?;
            Ok::<_, EngineError>(docker)
        }
        .await;
        match connected {
            Ok(docker) => Some(docker),
            Err(e) if !in_ci() => {
                eprintln!("SKIPPED {test}: no Docker engine ({e}); run scripts/docker.sh");
                None
            }
            Err(e) => panic!("CI: the Docker engine must be reachable (scripts/docker.sh): {e}"),
        }
    }

    fn test_image() -> String {
        env_var("VESPID_AGENT_DOCKER_IMAGE").unwrap_or_else(|| DEFAULT_IMAGE.to_string())
    }

    fn test_root() -> PathBuf {
        std::env::temp_dir().join("vespid-docker-tests")
    }

    /// A config whose containers carry a label unique to this test, and no pool unless asked for.
    fn config(warm: usize) -> (DockerConfig, String) {
        let tag = Uuid::new_v4().simple().to_string();
        let config = DockerConfig {
            image: test_image(),
            pull: PullPolicy::Never,
            user: SandboxUser {
                uid: 1000,
                gid: 1000,
            },
            warm,
            // On the workdirs' filesystem (both under the temp dir).
            pool_dir: test_root().join("pool"),
            labels: BTreeMap::from([("vespid.test".to_string(), tag.clone())]),
            ..DockerConfig::default()
        };
        (config, tag)
    }

    async fn sandbox(test: &str, warm: usize) -> Option<(DockerSandbox, String)> {
        engine_or_skip(test).await?;
        let (config, tag) = config(warm);
        let sandbox = DockerSandbox::connect(config).await.unwrap();
        Some((sandbox, tag))
    }

    fn task(script: &str) -> Task {
        Task {
            script: script.to_string(),
            shell: Shell::Sh,
            env: BTreeMap::new(),
            workdir: test_root().join(format!("work-{}", Uuid::new_v4().simple())),
            timeout: Duration::from_secs(20),
            network: NetworkMode::None,
            output_max_bytes: 65_536,
        }
    }

    /// Containers (running or not) carrying this test's label.
    async fn containers(docker: &Docker, tag: &str) -> Vec<bollard::models::ContainerSummary> {
        let filters = HashMap::from([("label", vec![format!("vespid.test={tag}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        docker.list_containers(Some(options)).await.unwrap()
    }

    /// Waits (a few seconds at most) until no container of this test is left.
    async fn assert_all_removed(docker: &Docker, tag: &str) {
        for _ in 0..100 {
            if containers(docker, tag).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("containers left: {:?}", containers(docker, tag).await);
    }

    /// Empties the pool, waits for background removals, and checks nothing of this test is left.
    async fn finish(sb: &DockerSandbox, tag: &str) {
        sb.shutdown().await;
        assert_all_removed(sb.docker(), tag).await;
    }

    #[tokio::test]
    async fn echo_output_and_exit_codes() {
        let Some((sb, tag)) = sandbox("echo_output_and_exit_codes", 0).await else {
            return;
        };
        let t = task("pwd; echo out; echo err >&2; exit 3");
        let o = sb.run(t).await.unwrap();
        assert_eq!(o.backend, "docker");
        assert_eq!(o.exit_code, Some(3));
        assert!(!o.timed_out);
        assert_eq!(o.stdout, "/work\nout\n");
        assert_eq!(o.stderr, "err\n");
        assert!(!o.stdout_truncated && !o.stderr_truncated);
        let o = sb.run(task("echo hello")).await.unwrap();
        assert_eq!((o.exit_code, o.stdout.as_str()), (Some(0), "hello\n"));
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn a_timeout_kills_and_removes_the_container() {
        let Some((sb, tag)) = sandbox("a_timeout_kills_and_removes_the_container", 0).await else {
            return;
        };
        let mut t = task("echo started; sleep 30");
        t.timeout = Duration::from_secs(1);
        let started = StdInstant::now();
        let o = sb.run(t).await.unwrap();
        let took = started.elapsed();
        assert!(o.timed_out);
        assert_eq!(o.exit_code, None);
        assert_eq!(o.stdout, "started\n");
        assert!(took < Duration::from_secs(4), "took {took:?}");
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn no_network_unless_enabled() {
        let Some((sb, tag)) = sandbox("no_network_unless_enabled", 0).await else {
            return;
        };
        let t = task("ls /sys/class/net; wget -q -T 2 -O- http://1.1.1.1/ && echo reached || echo unreachable");
        let o = sb.run(t).await.unwrap();
        assert_eq!(o.stdout, "lo\nunreachable\n", "{o:?}");
        let mut t = task("ls /sys/class/net | grep -v '^lo$' | wc -l");
        t.network = NetworkMode::Enabled;
        let o = sb.run(t).await.unwrap();
        assert_eq!(o.stdout.trim(), "1", "an interface besides lo: {o:?}");
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn read_only_root_writable_work_and_tmp() {
        let Some((sb, tag)) = sandbox("read_only_root_writable_work_and_tmp", 0).await else {
            return;
        };
        let t = task(
            "touch /etc/x 2>/dev/null && echo root-writable || echo root-ro; \
             echo data > out.txt && echo work-ok; \
             echo t > /tmp/t && echo tmp-ok; \
             mkdir -p sub && echo nested > sub/n.txt",
        );
        let dir = t.workdir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("in.txt"), "from host").unwrap();
        let t = Task {
            script: format!("{}; cat in.txt", t.script),
            ..t
        };
        let o = sb.run(t).await.unwrap();
        assert_eq!(o.stdout, "root-ro\nwork-ok\ntmp-ok\nfrom host", "{o:?}");
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            "data\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/n.txt")).unwrap(),
            "nested\n"
        );
        // Handed to the sandbox user, not opened to everyone.
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
        assert_eq!(meta.mode() & 0o002, 0, "workdir is world-writable");
        finish(&sb, &tag).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn runs_as_the_unprivileged_user() {
        let Some((sb, tag)) = sandbox("runs_as_the_unprivileged_user", 0).await else {
            return;
        };
        let o = sb
            .run(task("id -u; id -g; grep CapEff /proc/self/status"))
            .await
            .unwrap();
        assert_eq!(o.stdout, "1000\n1000\nCapEff:\t0000000000000000\n", "{o:?}");
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn the_pids_limit_contains_a_fork_bomb() {
        let Some((sb, tag)) = sandbox("the_pids_limit_contains_a_fork_bomb", 0).await else {
            return;
        };
        // The subshell dies on its first failed fork; the outer shell counts what is alive (a glob and
        // echo need no fork) and then waits, without forking, until the timeout.
        let mut t = task(
            "(for i in $(seq 1 2000); do sleep 30 & done) 2>/dev/null; \
             set -- /proc/[0-9]*; echo \"procs=$#\"; exec sleep 30",
        );
        t.timeout = Duration::from_secs(3);
        let started = StdInstant::now();
        let o = sb.run(t).await.unwrap();
        assert!(o.timed_out, "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(8));
        let procs: u32 = o
            .stdout
            .trim()
            .strip_prefix("procs=")
            .unwrap()
            .parse()
            .unwrap();
        assert!((100..=256).contains(&procs), "{procs} processes");
        // The host can still start processes.
        assert!(std::process::Command::new("true")
            .status()
            .unwrap()
            .success());
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn huge_output_is_capped() {
        let Some((sb, tag)) = sandbox("huge_output_is_capped", 0).await else {
            return;
        };
        let mut t = task("yes | head -c 50000000; echo done >&2");
        t.output_max_bytes = 10_000;
        let o = sb.run(t).await.unwrap();
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout.len(), 10_000);
        assert!(o.stdout.starts_with("y\ny\n"));
        assert!(o.stdout_truncated);
        assert_eq!(o.stderr, "done\n");
        assert!(!o.stderr_truncated);
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn the_env_goes_through_the_api_not_the_command_line() {
        let Some((sb, tag)) = sandbox("the_env_goes_through_the_api_not_the_command_line", 0).await
        else {
            return;
        };
        let mut t = task("echo \"[$MY_SECRET][$OTHER]\"; sleep 2");
        t.env.insert("MY_SECRET".into(), "hunter2".into());
        t.env.insert("OTHER".into(), "a b=c".into());
        let sb = Arc::new(sb);
        let docker = sb.docker().clone();
        let running = sb.clone();
        let run = tokio::spawn(async move { running.run(t).await });
        // Inspect the container while the task runs.
        let mut inspected = None;
        for _ in 0..100 {
            if let Some(c) = containers(&docker, &tag).await.first() {
                let id = c.id.clone().unwrap();
                inspected = docker.inspect_container(&id, None).await.ok();
                if inspected.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let inspected = inspected.expect("the task's container");
        let config = inspected.config.unwrap();
        let cmd = config.cmd.unwrap();
        assert_eq!(
            cmd,
            vec!["sh", "-lc", "echo \"[$MY_SECRET][$OTHER]\"; sleep 2"]
        );
        let args = inspected.args.unwrap_or_default();
        assert!(!format!("{cmd:?}{args:?}").contains("hunter2"));
        assert!(config
            .env
            .unwrap_or_default()
            .contains(&"MY_SECRET=hunter2".to_string()));
        let host = inspected.host_config.unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.memory, host.memory_swap);
        assert_eq!(host.pids_limit, Some(256));
        let o = run.await.unwrap().unwrap();
        assert_eq!(o.stdout, "[hunter2][a b=c]\n");
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn a_bad_env_name_or_missing_image_is_an_error() {
        let Some((sb, tag)) = sandbox("a_bad_env_name_or_missing_image_is_an_error", 0).await
        else {
            return;
        };
        let mut t = task("true");
        t.env.insert("A=B".into(), "x".into());
        assert!(matches!(sb.run(t).await, Err(SandboxError::Failed(_))));
        let err = sb
            .run_with_image(task("true"), Some("vespid-no-such-image:never"))
            .await
            .unwrap_err();
        assert!(format!("{err}").contains("docker create"), "{err}");
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn the_warm_pool_serves_one_task_per_container() {
        let Some((sb, tag)) = sandbox("the_warm_pool_serves_one_task_per_container", 2).await
        else {
            return;
        };
        let pool = sb.pool().unwrap().clone();
        assert!(pool.wait_idle(2, Duration::from_secs(30)).await);
        let mut t = task("hostname; echo \"$X\" > note.txt; cat in.txt; id -u; pwd");
        t.env.insert("X".into(), "from-env".into());
        let dir = t.workdir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("in.txt"), "input\n").unwrap();
        let o1 = sb.run(t).await.unwrap();
        assert_eq!(o1.exit_code, Some(0), "{o1:?}");
        let mut lines = o1.stdout.lines();
        let host1 = lines.next().unwrap().to_string();
        assert_eq!(lines.collect::<Vec<_>>(), vec!["input", "1000", "/work"]);
        // The files came back to the task's workdir, and the new one with them.
        assert_eq!(
            std::fs::read_to_string(dir.join("note.txt")).unwrap(),
            "from-env\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("in.txt")).unwrap(),
            "input\n"
        );
        let o2 = sb.run(task("hostname; ls -A /work | wc -l")).await.unwrap();
        let mut lines = o2.stdout.lines();
        let host2 = lines.next().unwrap().to_string();
        assert_ne!(host1, host2, "a warm container served two tasks");
        assert_eq!(pool.served(), 2, "not run through the pool");
        // The second task does not see the first one's files.
        assert_eq!(lines.next(), Some("0"));
        // Both used containers (a hostname is its container's id) are removed, in the background.
        let mut gone = false;
        for _ in 0..100 {
            let left = containers(sb.docker(), &tag).await;
            if left.iter().all(|c| {
                let id = c.id.clone().unwrap();
                !id.starts_with(&host1) && !id.starts_with(&host2)
            }) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "a used warm container was not removed");
        // A timeout through the pool kills it too.
        assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
        let mut t = task("sleep 30");
        t.timeout = Duration::from_secs(1);
        let started = StdInstant::now();
        let o = sb.run(t).await.unwrap();
        assert!(
            o.timed_out && started.elapsed() < Duration::from_secs(4),
            "{o:?}"
        );
        finish(&sb, &tag).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_pool_output_cap_and_background_jobs() {
        let Some((sb, tag)) = sandbox("the_pool_output_cap_and_background_jobs", 1).await else {
            return;
        };
        let pool = sb.pool().unwrap().clone();
        assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
        let mut t = task("yes | head -c 5000000");
        t.output_max_bytes = 1000;
        let o = sb.run(t).await.unwrap();
        assert_eq!((o.stdout.len(), o.stdout_truncated), (1000, true));
        // A background job holding stdout open does not keep the task alive past the shell.
        assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
        let started = StdInstant::now();
        let o = sb.run(task("sleep 30 & echo bg")).await.unwrap();
        assert_eq!((o.exit_code, o.stdout.as_str()), (Some(0), "bg\n"));
        assert!(!o.timed_out);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(pool.served(), 2, "not run through the pool");
        // A leftover that does not hold the output is killed before the files move back: it cannot
        // write into the workdir afterwards.
        assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
        let t = task("(sleep 1; echo late > late.txt) >/dev/null 2>&1 & echo early > early.txt");
        let dir = t.workdir.clone();
        let o = sb.run(t).await.unwrap();
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(pool.served(), 3, "not run through the pool");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(dir.join("early.txt").exists());
        assert!(
            !dir.join("late.txt").exists(),
            "a leftover wrote after the task"
        );
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn a_dropped_run_still_removes_its_container() {
        let Some((sb, tag)) = sandbox("a_dropped_run_still_removes_its_container", 0).await else {
            return;
        };
        let run = sb.run(task("sleep 30"));
        assert!(tokio::time::timeout(Duration::from_millis(1500), run)
            .await
            .is_err());
        finish(&sb, &tag).await;
    }

    #[tokio::test]
    async fn a_dropped_pool_run_gives_the_files_back() {
        let Some((sb, tag)) = sandbox("a_dropped_pool_run_gives_the_files_back", 1).await else {
            return;
        };
        let pool = sb.pool().unwrap().clone();
        assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
        let t = task("echo more > more.txt; sleep 30");
        let dir = t.workdir.clone();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("in.txt"), "input\n").unwrap();
        let run = sb.run(t);
        assert!(tokio::time::timeout(Duration::from_millis(1500), run)
            .await
            .is_err());
        let mut back = false;
        for _ in 0..100 {
            if dir.join("in.txt").exists() && dir.join("more.txt").exists() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back, "the task's files did not come back");
        finish(&sb, &tag).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    }

    fn summary(name: &str, mut times: Vec<Duration>) {
        times.sort();
        println!(
            "{name}: n={} p50={:.1}ms p95={:.1}ms min={:.1}ms max={:.1}ms",
            times.len(),
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
    }

    /// `cargo test --release --lib node_agent::sandbox::docker::tests::bench_docker_sandbox --
    /// --ignored --nocapture` (bench/sandbox.sh): the latency of `Sandbox::run` for `true`, 30 times
    /// cold (create, attach, start, wait; the removal runs in the background) and 30 times through the
    /// warm pool (exec, files back; kill and removal in the background), each warm run waiting first
    /// until the pool is full again; then 30 warm-pool tasks back to back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn bench_docker_sandbox() {
        let runs: usize = env_var("BENCH_RUNS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let Some((cold, tag)) = sandbox("bench_docker_sandbox", 0).await else {
            return;
        };
        let workdir = test_root().join("bench");
        let bench_task = || Task {
            workdir: workdir.clone(),
            ..task("true")
        };
        // One unmeasured run warms the engine's caches.
        cold.run(bench_task()).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..runs {
            let started = StdInstant::now();
            let o = cold.run(bench_task()).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(o.exit_code, Some(0));
        }
        summary(
            "docker cold (create+attach+start+wait; rm in background)",
            times,
        );

        let (mut config, _) = config(2);
        config.labels = BTreeMap::from([("vespid.test".to_string(), tag.clone())]);
        let warm = DockerSandbox::connect(config).await.unwrap();
        let pool = warm.pool().unwrap().clone();
        let mut times = Vec::new();
        for _ in 0..runs {
            assert!(pool.wait_idle(2, Duration::from_secs(60)).await);
            let started = StdInstant::now();
            let o = warm.run(bench_task()).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(o.exit_code, Some(0));
        }
        summary(
            "docker warm pool (exec+files back; rm in background)",
            times,
        );
        // Back to back, as fast as the pool refills (a pool of 2 drained by sequential tasks).
        let started = StdInstant::now();
        for _ in 0..runs {
            warm.run(bench_task()).await.unwrap();
        }
        println!(
            "docker warm pool back to back: {runs} tasks in {:.0}ms ({:.1} tasks/s)",
            started.elapsed().as_secs_f64() * 1e3,
            runs as f64 / started.elapsed().as_secs_f64()
        );
        warm.shutdown().await;
        finish(&cold, &tag).await;
    }

    #[test]
    fn config_parsing() {
        assert_eq!(
            "1000:1001".parse::<SandboxUser>(),
            Ok(SandboxUser {
                uid: 1000,
                gid: 1001
            })
        );
        assert_eq!(
            "1234".parse::<SandboxUser>(),
            Ok(SandboxUser {
                uid: 1234,
                gid: 1234
            })
        );
        assert!("sandbox".parse::<SandboxUser>().is_err());
        assert_eq!("never".parse::<PullPolicy>(), Ok(PullPolicy::Never));
        assert!("always".parse::<PullPolicy>().is_err());
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        c.push(b"ij");
        assert_eq!((c.text().as_str(), c.dropped), ("abcde", 5));
    }
}
