//! Development convenience: when no KEK is configured, a development install generates one on first start
//! and keeps it in a git-ignored local file with 0600 permissions, so a newcomer's first `scripts/dev.sh`
//! can store connector secrets. It says so in the log. Production (and test) never invent a key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use crate::app::config::{Config, RunEnv, Secret};

#[derive(Debug, thiserror::Error)]
pub enum DevKekError {
    #[error("development KEK file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("development KEK file {0} does not hold a base64 32-byte key; remove it to generate a new one (secrets stored under it become unreadable)")]
    Invalid(String),
}

/// Fills `secrets.kek_base64` from the development key file (creating it first) when the install is a
/// development one and no KEK was configured.
pub fn apply(config: &mut Config) -> Result<(), DevKekError> {
    if config.server.env != RunEnv::Development || !config.secrets.kek_base64.is_empty() {
        return Ok(());
    }
    let path = config.secrets.dev_kek_file.trim().to_string();
    if path.is_empty() || path == "none" {
        return Ok(());
    }
    let (key, created) = load_or_create(Path::new(&path))?;
    config.secrets.kek_base64 = Secret::new(key);
    tracing::warn!(
        path = %path,
        kek_id = %config.secrets.kek_id,
        created,
        "development install: connector secrets are encrypted under a KEK generated for this machine and kept in this file (0600, git-ignored). Set SECRETS_KEK_ID/SECRETS_KEK_BASE64 for anything else; production never generates a key"
    );
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevKekError + '_ {
    move |source| DevKekError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The key in `path`, or a new one written there. Creation is atomic (written to a private temporary
/// file, then linked into place only if nothing is there yet), so processes starting together agree.
fn load_or_create(path: &Path) -> Result<(String, bool), DevKekError> {
    if let Some(found) = read(path)? {
        return Ok((found, false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = STANDARD.encode(bytes);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(key.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((key, true)),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path)?
            .map(|k| (k, false))
            .ok_or_else(|| DevKekError::Invalid(path.display().to_string())),
        Err(e) => Err(io(path)(e)),
    }
}

fn read(path: &Path) -> Result<Option<String>, DevKekError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let key = text.trim().to_string();
    let valid = STANDARD.decode(&key).is_ok_and(|b| b.len() == 32);
    if !valid {
        return Err(DevKekError::Invalid(path.display().to_string()));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "development KEK file is readable by others; restricting it to 0600");
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(Some(key))
}
