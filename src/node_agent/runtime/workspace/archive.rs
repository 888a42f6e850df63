//! The `.tar.zst` format of workspace snapshots, made and unpacked in-process. Unpacking treats the
//! archive as hostile: any agent of the organisation may have uploaded it (a self-hosted one too), and
//! managed agents unpack it on shared machines. So nothing in it may land outside the destination, no
//! write may pass through a symlink, and sizes are capped while reading, not after: a few kilobytes of
//! zstd can decompress to a full disk.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use filetime::FileTime;
use tar::EntryType;

/// Fast, and most of the ratio.
const ZSTD_LEVEL: i32 = 3;
/// Tar framing allowed per entry on top of its content (header, GNU long-name records, padding).
const FRAMING_PER_ENTRY: u64 = 2048;
const COPY_BUFFER: usize = 64 * 1024;

/// What one archive (or tree) may hold, and until when the work may go on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Files, directories and links.
    pub max_entries: u64,
    pub deadline: Instant,
}

impl Limits {
    /// The decompressed stream may not be longer than its content plus framing. This also bounds the
    /// memory the tar reader spends on long-name records, which it reads whole.
    fn stream_bytes(&self) -> u64 {
        self.max_bytes
            .saturating_add(self.max_entries.saturating_mul(FRAMING_PER_ENTRY))
            .saturating_add(1 << 20)
    }
}

/// Why an archive or a tree was refused; [`Refusal::code`] is the reason in the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An absolute path, or one with `..`.
    PathEscape,
    /// A symlink whose target is absolute or leaves the tree.
    SymlinkEscape,
    /// A hard link to anything but a file already unpacked inside the tree.
    HardlinkEscape,
    /// An entry under a symlink (or under a file).
    LinkInPath,
    /// A device or a FIFO.
    SpecialFile,
    UnsupportedEntry,
    TooLarge,
    TooManyEntries,
    Timeout,
    /// Not a zstd-compressed tar, or a contradictory one (a file over a directory).
    Corrupt,
    /// The local disk failed us.
    Io,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::PathEscape => "path_escape",
            Self::SymlinkEscape => "symlink_escape",
            Self::HardlinkEscape => "hardlink_escape",
            Self::LinkInPath => "link_in_path",
            Self::SpecialFile => "special_file",
            Self::UnsupportedEntry => "unsupported_entry",
            Self::TooLarge => "too_large",
            Self::TooManyEntries => "too_many_entries",
            Self::Timeout => "timeout",
            Self::Corrupt => "corrupt",
            Self::Io => "io",
        }
    }
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        // The code says only `io`; the log says which.
        tracing::warn!(error = %e, "workspace archive i/o failed");
        Self::Io
    }
}

/// The path of an entry as plain components below the root; `None` for the root itself.
fn relative(path: &Path) -> Result<Option<PathBuf>, Refusal> {
    let mut rel = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(Refusal::PathEscape)
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Whether a symlink in `parent` (relative to the root) pointing at `target` stays inside the tree.
/// Only leading `..` are allowed: they walk up real directories (no entry is ever written under a
/// symlink), so counting them is exact. A `..` after a name could climb out of a symlinked directory
/// (`d/l -> ..`, then `x -> d/l/..`), so it is refused rather than reasoned about.
pub fn stays_inside(parent: &Path, target: &Path) -> bool {
    let mut depth = parent.components().count();
    let mut named = false;
    for part in target.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(_) => named = true,
            Component::ParentDir if !named && depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !target.as_os_str().is_empty()
}

/// Reads at most `left` bytes, then fails (and says so in `hit`) if the stream goes on.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // A stream that ends exactly at the cap is fine: probe for one byte more.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.hit.set(true);
                    Err(io::Error::other("the archive decompresses past its cap"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

/// Unpacks the `.tar.zst` at `archive` into `dest`, an existing empty directory that nothing else
/// writes to. On failure `dest` holds a partial tree: the caller throws it away.
pub fn extract(archive: &Path, dest: &Path, limits: &Limits) -> Result<(), Refusal> {
    let hit = Rc::new(Cell::new(false));
    let decoder = zstd::stream::read::Decoder::new(File::open(archive)?)?;
    let stream = Capped {
        inner: decoder,
        left: limits.stream_bytes(),
        hit: Rc::clone(&hit),
    };
    let mut tar = tar::Archive::new(stream);
    let mut unpack = Unpack {
        dest,
        limits,
        entries: 0,
        bytes: 0,
        dirs: HashSet::new(),
        buf: vec![0u8; COPY_BUFFER],
    };
    // Any failure once the cap was hit is the cap's doing, whatever the reader made of it.
    let cause = |refusal: Refusal| {
        if hit.get() {
            Refusal::TooLarge
        } else {
            refusal
        }
    };
    for entry in tar.entries().map_err(|_| cause(Refusal::Corrupt))? {
        let mut entry = entry.map_err(|_| cause(Refusal::Corrupt))?;
        unpack.entry(&mut entry).map_err(cause)?;
    }
    Ok(())
}

struct Unpack<'a> {
    dest: &'a Path,
    limits: &'a Limits,
    entries: u64,
    bytes: u64,
    /// Directories (relative) known to be real directories: none is ever replaced during an unpack,
    /// so each is checked once.
    dirs: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl Unpack<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Refusal> {
        if Instant::now() > self.limits.deadline {
            return Err(Refusal::Timeout);
        }
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Refusal::TooManyEntries);
        }
        let path = entry.path().map_err(|_| Refusal::Corrupt)?;
        let Some(rel) = relative(&path)? else {
            return Ok(());
        };
        match kind {
            EntryType::Directory => self.directory(rel),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&rel, entry)
            }
            EntryType::Symlink => self.symlink(&rel, entry),
            EntryType::Link => self.hard_link(&rel, entry),
            EntryType::Char | EntryType::Block | EntryType::Fifo => Err(Refusal::SpecialFile),
            _ => Err(Refusal::UnsupportedEntry),
        }
    }

    /// Creates the missing directories above `rel` and returns where `rel` goes. Each one above must
    /// be a real directory: writing through a symlink is how an archive reaches outside.
    fn parents(&mut self, rel: &Path) -> Result<PathBuf, Refusal> {
        let mut walked = PathBuf::new();
        for part in rel.parent().into_iter().flat_map(Path::components) {
            walked.push(part);
            if self.dirs.contains(&walked) {
                continue;
            }
            let at = self.dest.join(&walked);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => return Err(Refusal::LinkInPath),
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
                Err(e) => return Err(e.into()),
            }
            self.dirs.insert(walked.clone());
        }
        Ok(self.dest.join(rel))
    }

    /// Makes room for a new file or link at `at`; a later entry replaces an earlier one, as in tar,
    /// except over a directory.
    fn clear(at: &Path) -> Result<(), Refusal> {
        match fs::symlink_metadata(at) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
            Ok(m) if m.file_type().is_dir() => Err(Refusal::Corrupt),
            Ok(_) => Ok(fs::remove_file(at)?),
        }
    }

    fn directory(&mut self, rel: PathBuf) -> Result<(), Refusal> {
        if self.dirs.contains(&rel) {
            return Ok(());
        }
        let at = self.parents(&rel)?;
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err(Refusal::LinkInPath),
            Ok(_) => return Err(Refusal::Corrupt),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e.into()),
        }
        self.dirs.insert(rel);
        Ok(())
    }

    fn file<R: Read>(&mut self, rel: &Path, entry: &mut tar::Entry<'_, R>) -> Result<(), Refusal> {
        if self.bytes.saturating_add(entry.size()) > self.limits.max_bytes {
            return Err(Refusal::TooLarge);
        }
        let at = self.parents(rel)?;
        Self::clear(&at)?;
        // create_new: never opens (or follows) anything already there.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&at)?;
        loop {
            let n = entry.read(&mut self.buf).map_err(|_| Refusal::Corrupt)?;
            if n == 0 {
                break;
            }
            // Counted as read, not as declared: a sparse entry reads longer than its size.
            self.bytes = self.bytes.saturating_add(n as u64);
            if self.bytes > self.limits.max_bytes {
                return Err(Refusal::TooLarge);
            }
            out.write_all(self.buf.get(..n).unwrap_or_default())?;
        }
        // Permission bits only (no setuid or sticky), and always readable by the agent, which copies
        // the file into each task's workdir.
        let mode = (entry.header().mode().unwrap_or(0o644) & 0o777) | 0o400;
        out.set_permissions(Permissions::from_mode(mode))?;
        if let Ok(mtime) = entry.header().mtime() {
            let mtime = FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
            filetime::set_file_handle_times(&out, None, Some(mtime))?;
        }
        Ok(())
    }

    fn symlink<R: Read>(&mut self, rel: &Path, entry: &tar::Entry<'_, R>) -> Result<(), Refusal> {
        let target = entry
            .link_name()
            .map_err(|_| Refusal::Corrupt)?
            .ok_or(Refusal::Corrupt)?
            .into_owned();
        if !stays_inside(rel.parent().unwrap_or(Path::new("")), &target) {
            return Err(Refusal::SymlinkEscape);
        }
        let at = self.parents(rel)?;
        Self::clear(&at)?;
        std::os::unix::fs::symlink(&target, &at)?;
        Ok(())
    }

    /// A hard link may only repeat a regular file this archive already unpacked, reached through real
    /// directories: anything else could alias a file outside the tree.
    fn hard_link<R: Read>(&mut self, rel: &Path, entry: &tar::Entry<'_, R>) -> Result<(), Refusal> {
        let target = entry
            .link_name()
            .map_err(|_| Refusal::Corrupt)?
            .ok_or(Refusal::Corrupt)?;
        let source = match relative(&target) {
            Ok(Some(source)) => source,
            Ok(None) | Err(_) => return Err(Refusal::HardlinkEscape),
        };
        if source == rel {
            return Ok(());
        }
        let mut walked = PathBuf::new();
        for part in source.parent().into_iter().flat_map(Path::components) {
            walked.push(part);
            let real_dir = self.dirs.contains(&walked)
                || fs::symlink_metadata(self.dest.join(&walked))
                    .is_ok_and(|m| m.file_type().is_dir());
            if !real_dir {
                return Err(Refusal::HardlinkEscape);
            }
        }
        let source = self.dest.join(source);
        if !fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_file()) {
            return Err(Refusal::HardlinkEscape);
        }
        let at = self.parents(rel)?;
        Self::clear(&at)?;
        fs::hard_link(&source, &at)?;
        Ok(())
    }
}

/// Archives the tree at `root` into a new `.tar.zst` at `archive`: directories, files and symlinks
/// (stored as links, never followed), in name order. Sockets and FIFOs a task left behind are not
/// content and are skipped. The same limits as for unpacking apply, so a snapshot this agent uploads
/// is one that agents will accept.
pub fn pack(root: &Path, archive: &Path, limits: &Limits) -> Result<(), Refusal> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(archive)?;
    let encoder = zstd::stream::write::Encoder::new(BufWriter::new(out), ZSTD_LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let (mut entries, mut bytes) = (0u64, 0u64);
    // Depth-first with an explicit stack: a tree as deep as the filesystem allows must not overflow
    // this thread's stack. Each directory's entry is written before its contents.
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let mut names = fs::read_dir(root.join(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        for name in names {
            if Instant::now() > limits.deadline {
                return Err(Refusal::Timeout);
            }
            let rel = dir.join(name);
            let at = root.join(&rel);
            let meta = fs::symlink_metadata(&at)?;
            let kind = meta.file_type();
            if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
                tracing::debug!(path = %rel.display(), "not archived: not a file, directory or symlink");
                continue;
            }
            entries += 1;
            if entries > limits.max_entries {
                return Err(Refusal::TooManyEntries);
            }
            if kind.is_file() {
                bytes = bytes.saturating_add(meta.len());
                if bytes > limits.max_bytes {
                    return Err(Refusal::TooLarge);
                }
            }
            tar.append_path_with_name(&at, &rel)?;
            if kind.is_dir() {
                pending.push(rel);
            }
        }
    }
    let encoder = tar.into_inner()?;
    encoder.finish()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_that_stay_inside() {
        let inside = [
            ("", "a"),
            ("", "./a/b"),
            ("d", "../a"),
            ("d/e", "../../a/b"),
            ("d", "."),
            ("", "node_modules/.bin/x"),
        ];
        for (parent, target) in inside {
            assert!(
                stays_inside(Path::new(parent), Path::new(target)),
                "{parent} {target}"
            );
        }
        let outside = [
            ("", "/etc"),
            ("", ".."),
            ("d", "../.."),
            ("d", "../../x"),
            ("d", "l/.."),
            ("", "a/../b"),
            ("", ""),
        ];
        for (parent, target) in outside {
            assert!(
                !stays_inside(Path::new(parent), Path::new(target)),
                "{parent} {target}"
            );
        }
    }

    #[test]
    fn entry_paths_are_plain_components() {
        assert_eq!(
            relative(Path::new("./a/./b")),
            Ok(Some(PathBuf::from("a/b")))
        );
        assert_eq!(relative(Path::new("./")), Ok(None));
        assert_eq!(relative(Path::new("/etc/x")), Err(Refusal::PathEscape));
        assert_eq!(relative(Path::new("a/../../b")), Err(Refusal::PathEscape));
    }
}
