//! Copying a cached version into a task's workdir, and clearing a workdir. Neither follows a symlink:
//! the trees hold links a task made, which may point anywhere on this machine.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use filetime::FileTime;

/// Copies the contents of `from` into `to`, an existing empty directory: directories, files (with
/// their permission bits and modification time, so incremental builds stay incremental) and symlinks
/// as symlinks. Anything else is not workspace content and is skipped.
pub fn copy(from: &Path, to: &Path) -> io::Result<()> {
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(from.join(&dir))? {
            let rel = dir.join(entry?.file_name());
            let (src, dst) = (from.join(&rel), to.join(&rel));
            let meta = fs::symlink_metadata(&src)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                fs::create_dir(&dst)?;
                pending.push(rel);
            } else if kind.is_file() {
                fs::copy(&src, &dst)?;
                filetime::set_file_mtime(&dst, FileTime::from_last_modification_time(&meta))?;
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            }
        }
    }
    Ok(())
}

/// Removes everything inside `dir` but `dir` itself. A symlink is removed, not followed.
pub fn empty(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Removes `path` whatever it is; for cleanup, where a failure is only worth a log line.
pub fn discard(path: &Path) {
    let gone = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    if let Err(e) = gone {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a workspace scratch path");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_without_following_links_and_empties_without_leaving() {
        let base = std::env::temp_dir().join(format!("vespid-tree-{}", uuid::Uuid::new_v4()));
        let (from, to, outside) = (base.join("from"), base.join("to"), base.join("outside"));
        for d in [&from, &to, &outside] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(outside.join("keep"), "precious").unwrap();
        fs::create_dir_all(from.join("a/b")).unwrap();
        fs::write(from.join("a/b/f"), "data").unwrap();
        std::os::unix::fs::symlink(&outside, from.join("out")).unwrap();
        copy(&from, &to).unwrap();
        assert_eq!(fs::read_to_string(to.join("a/b/f")).unwrap(), "data");
        assert_eq!(fs::read_link(to.join("out")).unwrap(), outside);
        empty(&to).unwrap();
        assert_eq!(fs::read_dir(&to).unwrap().count(), 0);
        assert_eq!(
            fs::read_to_string(outside.join("keep")).unwrap(),
            "precious"
        );
        discard(&base);
        assert!(!base.exists());
    }
}
