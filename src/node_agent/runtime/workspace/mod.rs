//! The workspace cycle of a tool call (spec gateway §3.3-3.4, with its Improve lines): fetch the
//! version the gateway names (from this agent's cache when it has it), give the task its own copy,
//! then archive what the task left, upload it as the next version and keep it in the cache, so the
//! next call here skips the download. A call without `workspace` and `workspaceAccess` (an older
//! gateway) has none of this.

mod archive;
mod cache;
mod transfer;
mod tree;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::failure::{Failed, Failure};
use super::RuntimeContext;
use crate::domain::gateway::protocol::{InvokeToolV2, WorkspaceUpload};

/// How much longer than the task's own timeout the downloads and uploads of one call may run: the
/// gateway waits for the result this much past the timeout.
const IO_GRACE: Duration = Duration::from_secs(15);
const DEFAULT_MAX_BYTES: u64 = 1 << 30;
const DEFAULT_MAX_ENTRIES: u64 = 200_000;

/// Where versions are cached and how large one may be.
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// `VESPID_EXECUTOR_WORKSPACE_CACHE_ROOT`, default `~/.vespid/workspaces`.
    pub cache_root: PathBuf,
    /// `VESPID_EXECUTOR_WORKSPACE_MAX_BYTES` (default 1 GiB): file content of one version, and the
    /// most a download may be.
    pub max_bytes: u64,
    /// `VESPID_EXECUTOR_WORKSPACE_MAX_ENTRIES` (default 200000): files, directories and links.
    pub max_entries: u64,
}

impl WorkspaceConfig {
    pub fn from_env() -> Self {
        let cache_root = std::env::var_os("VESPID_EXECUTOR_WORKSPACE_CACHE_ROOT")
            .filter(|p| !p.is_empty())
            .map_or_else(default_cache_root, PathBuf::from);
        Self {
            cache_root,
            max_bytes: positive_env("VESPID_EXECUTOR_WORKSPACE_MAX_BYTES", DEFAULT_MAX_BYTES),
            max_entries: positive_env("VESPID_EXECUTOR_WORKSPACE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES),
        }
    }

    fn limits(&self, budget: &Budget) -> archive::Limits {
        archive::Limits {
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
            deadline: budget.deadline,
        }
    }
}

fn default_cache_root() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".vespid").join("workspaces")
}

fn positive_env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                tracing::warn!(%name, value = %v, default, "not a positive number; using the default");
                default
            }
        },
    }
}

/// The workspace side of the runtime: its settings, and which task workdirs are in use.
pub struct Workspaces {
    pub config: WorkspaceConfig,
    /// Two calls can name the same per-run workdir (a retry while the first still runs); the second
    /// then works beside it, never in it.
    in_use: Mutex<HashSet<PathBuf>>,
}

impl Workspaces {
    pub fn new(config: WorkspaceConfig) -> Self {
        Self {
            config,
            in_use: Mutex::new(HashSet::new()),
        }
    }

    /// `wanted` if no running call has it, else a fresh sibling of it.
    pub fn claim(&self, wanted: PathBuf) -> Claim<'_> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        let path = if in_use.contains(&wanted) {
            let name = wanted
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            wanted.with_file_name(format!("{name}.{}", Uuid::new_v4().simple()))
        } else {
            wanted
        };
        in_use.insert(path.clone());
        Claim {
            owner: &self.in_use,
            path,
        }
    }
}

/// A workdir held by one call until dropped.
pub struct Claim<'a> {
    owner: &'a Mutex<HashSet<PathBuf>>,
    path: PathBuf,
}

impl Claim<'_> {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut in_use = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        in_use.remove(&self.path);
    }
}

/// Until when one call's workspace transfers may run: its timeout plus [`IO_GRACE`], from its start.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    pub fn for_call(timeout_ms: u64) -> Self {
        let now = Instant::now();
        let deadline = now
            .checked_add(Duration::from_millis(timeout_ms).saturating_add(IO_GRACE))
            .or_else(|| now.checked_add(IO_GRACE))
            .unwrap_or(now);
        Self { deadline }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// How a call ended, and the workspace version it produced (none on failures before or during the
/// workspace transfers).
#[derive(Debug)]
pub struct Finished {
    pub done: Result<Value, Failed>,
    pub workspace: Option<Value>,
}

impl Finished {
    pub fn without_workspace(done: Result<Value, Failed>) -> Self {
        Self {
            done,
            workspace: None,
        }
    }
}

/// The version a call starts from, unpacked in the cache, and where its successor goes.
#[derive(Debug)]
pub struct Checkout {
    workspace_id: Uuid,
    upload: WorkspaceUpload,
    /// The cached tree: read-only, shared by every call on this version.
    tree: PathBuf,
}

/// Fetches the call's workspace version; `None` when the invoke has no workspace.
pub async fn checkout(
    invoke: &InvokeToolV2,
    ctx: &RuntimeContext,
    budget: &Budget,
) -> Result<Option<Checkout>, Failure> {
    let (Some(workspace), Some(access)) = (&invoke.workspace, &invoke.workspace_access) else {
        return Ok(None);
    };
    let tree = cache::ensure(
        &ctx.workspaces.config,
        &ctx.http,
        workspace.workspace_id,
        workspace.version,
        access.download_url.as_deref().filter(|u| !u.is_empty()),
        budget,
    )
    .await?;
    Ok(Some(Checkout {
        workspace_id: workspace.workspace_id,
        upload: access.upload.clone(),
        tree,
    }))
}

impl Checkout {
    /// Makes `dir` (an existing directory) a private copy of the version: emptied of whatever an
    /// earlier call left, then filled from the cache.
    pub async fn materialize(&self, dir: &Path) -> Result<(), Failure> {
        let (from, to) = (self.tree.clone(), dir.to_path_buf());
        let copied = blocking(move || {
            tree::empty(&to)?;
            tree::copy(&from, &to)
        })
        .await
        .unwrap_or_else(|| Err(std::io::Error::other("the blocking task died")));
        copied.map_err(|e| {
            tracing::warn!(error = %e, "could not copy the workspace into the workdir");
            Failure::WorkspaceExtractFailed("copy".into())
        })
    }

    /// Archives `tree` (the task's workdir, or the cached tree when nothing ran), uploads it as the
    /// next version and caches it under that version. The archive is unpacked into the cache before
    /// the upload: what this agent caches is exactly what it uploaded, and a tree that agents would
    /// refuse to unpack is never uploaded.
    pub async fn snapshot(
        &self,
        tree: Option<&Path>,
        ctx: &RuntimeContext,
        budget: &Budget,
    ) -> Result<Value, Failure> {
        let config = &ctx.workspaces.config;
        let dir = cache::version_dir(&config.cache_root, self.workspace_id, self.upload.version);
        cache::create_private(&dir).await.map_err(|e| {
            tracing::warn!(error = %e, "workspace cache i/o failed");
            Failure::WorkspaceSnapshotFailed("io".into())
        })?;
        let tag = Uuid::new_v4().simple();
        let archive = dir.join(format!(".upload-{tag}.tar.zst"));
        let seed = dir.join(format!(".seed-{tag}"));
        let source = tree.unwrap_or(&self.tree).to_path_buf();
        let stored = self
            .pack_upload_and_cache(ctx, budget, source, &archive, &seed, &dir)
            .await;
        let leftovers = [archive, seed];
        blocking(move || leftovers.iter().for_each(|p| tree::discard(p))).await;
        stored
    }

    async fn pack_upload_and_cache(
        &self,
        ctx: &RuntimeContext,
        budget: &Budget,
        source: PathBuf,
        archive: &Path,
        seed: &Path,
        dir: &Path,
    ) -> Result<Value, Failure> {
        let limits = ctx.workspaces.config.limits(budget);
        let (packed_to, seeded_in) = (archive.to_path_buf(), seed.to_path_buf());
        let packed = blocking(move || {
            archive::pack(&source, &packed_to, &limits)?;
            std::fs::create_dir(&seeded_in)?;
            archive::extract(&packed_to, &seeded_in, &limits)
        })
        .await
        .unwrap_or(Err(archive::Refusal::Io));
        packed.map_err(|r| Failure::WorkspaceSnapshotFailed(r.code().into()))?;
        let etag =
            transfer::upload(&ctx.http, &self.upload.url, archive, budget.remaining()).await?;
        // The version is stored; failing to cache it only costs the next call a download.
        if let Err(e) = cache::promote(seed, &cache::extracted(dir)).await {
            tracing::warn!(error = %e, "could not cache the uploaded workspace version");
        }
        let mut result = Map::new();
        result.insert("workspaceId".into(), json!(self.workspace_id));
        result.insert("version".into(), json!(self.upload.version));
        result.insert("objectKey".into(), json!(self.upload.object_key));
        if let Some(etag) = etag {
            result.insert("etag".into(), json!(etag));
        }
        Ok(Value::Object(result))
    }
}

/// Ends a call: with a checkout, snapshots `tree` (the cached tree when the task did not run) and
/// attaches the new version, whether the call succeeded or not. A failed snapshot or upload fails the
/// whole call and drops its output (spec §3.4): the gateway must not see work it cannot keep.
pub async fn finish(
    checkout: Option<&Checkout>,
    tree: Option<&Path>,
    done: Result<Value, Failed>,
    ctx: &RuntimeContext,
    budget: &Budget,
) -> Finished {
    let Some(checkout) = checkout else {
        return Finished::without_workspace(done);
    };
    match checkout.snapshot(tree, ctx, budget).await {
        Ok(workspace) => Finished {
            done,
            workspace: Some(workspace),
        },
        Err(failure) => Finished::without_workspace(Err(failure.into())),
    }
}

/// Removes a task's workdir once its tree is uploaded (or lost): the cache keeps every version.
pub async fn discard(dir: &Path) {
    let dir = dir.to_path_buf();
    blocking(move || tree::discard(&dir)).await;
}

/// Runs filesystem work off the async threads; `None` only if it panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

#[cfg(test)]
mod tests;
