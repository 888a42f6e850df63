//! The agent's copy of each workspace version it has seen (spec gateway §3.3): the unpacked tree of a
//! version lives in `<root>/<workspaceId>/<version>/extracted`. A tree is built beside it under a
//! temporary name and renamed into place only once complete, so `extracted` existing means a whole,
//! accepted version; a failed download or a refused archive leaves no entry behind.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::archive;
use super::{blocking, transfer, tree, Budget, WorkspaceConfig};
use crate::node_agent::runtime::failure::Failure;

const EXTRACTED: &str = "extracted";

pub fn version_dir(root: &Path, workspace: Uuid, version: i64) -> PathBuf {
    root.join(workspace.to_string()).join(version.to_string())
}

pub fn extracted(version_dir: &Path) -> PathBuf {
    version_dir.join(EXTRACTED)
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// Creates `dir` and whatever is missing above it, owner-only: workspaces hold the organisation's
/// files, which other local users have no business reading.
pub async fn create_private(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
    })
    .await
    .unwrap_or_else(|| Err(std::io::Error::other("the blocking task died")))
}

/// Renames the finished tree `staging` to `extracted`. If another call on the same version got there
/// first, its tree is as good as ours (a version never changes), so ours is dropped.
pub async fn promote(staging: &Path, extracted: &Path) -> std::io::Result<()> {
    match tokio::fs::rename(staging, extracted).await {
        Ok(()) => Ok(()),
        Err(_) if is_real_dir(extracted) => {
            let staging = staging.to_path_buf();
            blocking(move || tree::discard(&staging)).await;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The unpacked tree of `version`: from the cache, else downloaded and unpacked (version 0 without a
/// URL is the empty workspace).
pub async fn ensure(
    config: &WorkspaceConfig,
    http: &reqwest::Client,
    workspace: Uuid,
    version: i64,
    url: Option<&str>,
    budget: &Budget,
) -> Result<PathBuf, Failure> {
    let dir = version_dir(&config.cache_root, workspace, version);
    let extracted = extracted(&dir);
    if is_real_dir(&extracted) {
        tracing::debug!(%workspace, version, "workspace version cached");
        return Ok(extracted);
    }
    if url.is_none() && version != 0 {
        return Err(Failure::WorkspaceDownloadUrlRequired);
    }
    let io_failed = |e: std::io::Error| {
        tracing::warn!(error = %e, "workspace cache i/o failed");
        Failure::WorkspaceExtractFailed("io".into())
    };
    create_private(&dir).await.map_err(io_failed)?;
    let tag = Uuid::new_v4().simple();
    let staging = dir.join(format!(".extract-{tag}"));
    let built = match url {
        None => tokio::fs::create_dir(&staging).await.map_err(io_failed),
        Some(url) => {
            tracing::info!(%workspace, version, "downloading a workspace version");
            let archive = dir.join(format!(".download-{tag}.tar.zst"));
            let unpacked = fetch(config, http, url, &archive, &staging, budget).await;
            let _ = tokio::fs::remove_file(&archive).await;
            unpacked
        }
    };
    let placed = match built {
        Ok(()) => promote(&staging, &extracted).await.map_err(io_failed),
        Err(f) => Err(f),
    };
    if placed.is_err() {
        let staging = staging.clone();
        blocking(move || tree::discard(&staging)).await;
        // Only if nothing else is in there (another call's download, say).
        let _ = tokio::fs::remove_dir(&dir).await;
    }
    placed.map(|()| extracted)
}

async fn fetch(
    config: &WorkspaceConfig,
    http: &reqwest::Client,
    url: &str,
    archive: &Path,
    staging: &Path,
    budget: &Budget,
) -> Result<(), Failure> {
    transfer::download(http, url, archive, config.max_bytes, budget.remaining()).await?;
    let limits = config.limits(budget);
    let (archive, staging) = (archive.to_path_buf(), staging.to_path_buf());
    let unpacked = blocking(move || {
        std::fs::create_dir(&staging)?;
        archive::extract(&archive, &staging, &limits)
    })
    .await
    .unwrap_or(Err(archive::Refusal::Io));
    unpacked.map_err(|r| Failure::WorkspaceExtractFailed(r.code().into()))
}
