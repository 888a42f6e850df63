//! The per-run working directory of a shell task (spec gateway §3.5):
//! `<root>/<orgId>/<runId or "run">/<nodeId>/<attempt or 1>`. The ids come from the network, so each
//! must be one plain path component, and the directory must still resolve inside the root once created
//! (a symlink planted by an earlier task must not lead a later one elsewhere).

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::failure::Failure;

/// `VESPID_AGENT_WORKDIR_ROOT`'s default: `~/.vespid/workdir`.
pub fn default_root() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".vespid").join("workdir")
}

/// Where the task runs, before anything touches the disk; `WORKDIR_PATH_ESCAPE` for an id that is not
/// a single plain component.
pub fn path(
    root: &Path,
    org: Uuid,
    run_id: Option<Uuid>,
    node_id: &str,
    attempt: Option<u32>,
) -> Result<PathBuf, Failure> {
    let org = org.to_string();
    let run = run_id.map_or_else(|| "run".to_string(), |r| r.to_string());
    let attempt = attempt.unwrap_or(1).to_string();
    let mut dir = root.to_path_buf();
    for part in [org.as_str(), run.as_str(), node_id, attempt.as_str()] {
        dir.push(component(part)?);
    }
    Ok(dir)
}

fn component(part: &str) -> Result<&str, Failure> {
    let plain =
        !part.is_empty() && part != "." && part != ".." && !part.contains(['/', '\\', '\0']);
    if plain {
        Ok(part)
    } else {
        Err(Failure::WorkdirPathEscape)
    }
}

/// Creates `dir` (and the root) and returns its resolved path, which must lie inside the resolved root.
pub fn prepare(root: &Path, dir: &Path) -> Result<PathBuf, Failure> {
    let io = |e: std::io::Error| Failure::ExecutionFailedWith(format!("workdir: {e}"));
    std::fs::create_dir_all(root).map_err(io)?;
    let root = root.canonicalize().map_err(io)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let dir = dir.canonicalize().map_err(io)?;
    if dir.starts_with(&root) && dir != root {
        Ok(dir)
    } else {
        Err(Failure::WorkdirPathEscape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> Uuid {
        Uuid::parse_str("0b7e6a52-1f0e-4c43-9a4f-3f8d2c1b0a99").unwrap()
    }

    #[test]
    fn the_layout_and_its_defaults() {
        let run = Uuid::new_v4();
        assert_eq!(
            path(Path::new("/w"), org(), Some(run), "build", Some(3)).unwrap(),
            PathBuf::from(format!("/w/{}/{run}/build/3", org()))
        );
        assert_eq!(
            path(Path::new("/w"), org(), None, "build", None).unwrap(),
            PathBuf::from(format!("/w/{}/run/build/1", org()))
        );
    }

    #[test]
    fn ids_that_are_not_one_plain_component_are_refused() {
        for node in ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "a\0b"] {
            assert_eq!(
                path(Path::new("/w"), org(), None, node, None),
                Err(Failure::WorkdirPathEscape),
                "{node:?}"
            );
        }
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let base = std::env::temp_dir().join(format!("vespid-wd-{}", Uuid::new_v4().simple()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join(org().to_string()).join("run")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(org().to_string()).join("run").join("n"))
            .unwrap();
        let dir = path(&root, org(), None, "n", None).unwrap();
        assert_eq!(prepare(&root, &dir), Err(Failure::WorkdirPathEscape));
        let fine = path(&root, org(), None, "m", None).unwrap();
        let made = prepare(&root, &fine).unwrap();
        assert!(made.is_dir() && made.ends_with("run/m/1"));
        let _ = std::fs::remove_dir_all(base);
    }
}
