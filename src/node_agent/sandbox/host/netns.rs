//! "No network" for a host task: the shell starts in a fresh network namespace, which has only a
//! loopback interface (down) and no route anywhere, so neither the internet nor the agent's own
//! localhost services are reachable.
//!
//! As root (or with CAP_SYS_ADMIN) `unshare(CLONE_NEWNET)` is enough. Without that privilege the kernel
//! still lets an unprivileged process create a user namespace and, inside it, a network namespace; the
//! user namespace maps only the agent's own uid and gid, so the task keeps exactly the agent's identity
//! on files. When neither works the spawn fails with a private error code that the backend reports as
//! `HOST_NETWORK_MODE_UNSUPPORTED`: a task that must be offline never runs online.
//!
//! As root the agent makes one empty namespace when it first needs it and each task enters it with
//! `setns` (creating a namespace costs milliseconds per task; entering one, microseconds). Tasks share
//! that namespace: it has no interface but a loopback that is down, so it connects them to nothing (the
//! host backend does not isolate tasks from each other anyway; the Docker backend does).
//!
//! All of this happens between fork and exec, where only async-signal-safe calls are allowed (another
//! thread of the agent may have held the allocator's lock at fork time). So the uid/gid map lines are
//! formatted before the fork, and the child only makes raw system calls on memory it already has.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{close, getgid, getuid, write};
use tokio::process::Command;

/// What the child reports when it cannot get a network namespace. Not a Linux errno (those stay below
/// 200), so it cannot be confused with a real exec failure such as ENOENT; std passes the value from
/// the child to `spawn`'s error unchanged.
const NETNS_UNAVAILABLE: i32 = 0x4E45;

/// Whether a spawn failed because the task could not be taken offline.
pub(super) fn is_unavailable(err: &io::Error) -> bool {
    err.raw_os_error() == Some(NETNS_UNAVAILABLE)
}

/// An empty network namespace made once per agent (as root): entering it with `setns` costs
/// microseconds where creating a namespace per task costs milliseconds. `None` when it cannot be made
/// (not privileged): each task then creates its own.
fn shared() -> Option<i32> {
    static SHARED: OnceLock<Option<OwnedFd>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // A namespace of its own for one short-lived thread (unshare affects only the calling
            // thread), kept alive by the descriptor after the thread ends.
            std::thread::spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET).ok()?;
                std::fs::File::open("/proc/thread-self/ns/net")
                    .ok()
                    .map(OwnedFd::from)
            })
            .join()
            .ok()
            .flatten()
        })
        .as_ref()
        .map(|fd| fd.as_raw_fd())
}

/// Makes `cmd` start its program without network: in the agent's shared empty namespace, or in a
/// namespace of its own.
pub(super) fn isolate(cmd: &mut Command) {
    // The identity is read here, in the parent: the map lines must be ready before the fork.
    let uid_map = format!("{0} {0} 1", getuid().as_raw()).into_bytes();
    let gid_map = format!("{0} {0} 1", getgid().as_raw()).into_bytes();
    let shared = shared();
    // SAFETY: the closure runs in the forked child before exec. It only calls setns, unshare, open,
    // write and close (all async-signal-safe) on buffers allocated before the fork, and allocates
    // nothing: the error it returns is built from a raw code, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = shared {
                // SAFETY: the descriptor lives in a static for the whole life of the process.
                let ns = BorrowedFd::borrow_raw(fd);
                if setns(ns, CloneFlags::CLONE_NEWNET).is_ok() {
                    return Ok(());
                }
            }
            enter_private_network(&uid_map, &gid_map)
        });
    }
}

fn enter_private_network(uid_map: &[u8], gid_map: &[u8]) -> io::Result<()> {
    let unavailable = || io::Error::from_raw_os_error(NETNS_UNAVAILABLE);
    match unshare(CloneFlags::CLONE_NEWNET) {
        Ok(()) => return Ok(()),
        // Not privileged: try the unprivileged route below. Anything else (no netns support in the
        // kernel, a namespace limit) will not be fixed by a user namespace.
        Err(Errno::EPERM) => {}
        Err(_) => return Err(unavailable()),
    }
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|_| unavailable())?;
    // The kernel requires `setgroups` to be denied before an unprivileged process may write its gid map.
    write_proc_file(c"/proc/self/setgroups", b"deny").map_err(|_| unavailable())?;
    write_proc_file(c"/proc/self/uid_map", uid_map).map_err(|_| unavailable())?;
    write_proc_file(c"/proc/self/gid_map", gid_map).map_err(|_| unavailable())?;
    Ok(())
}

/// One `write` of the whole buffer: the kernel takes an id map only as a single write.
fn write_proc_file(path: &CStr, contents: &[u8]) -> Result<(), Errno> {
    let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `fd` was just opened here and is closed only below, after its last use.
    let written = write(unsafe { BorrowedFd::borrow_raw(fd) }, contents);
    let closed = close(fd);
    match written {
        Ok(n) if n == contents.len() => closed,
        Ok(_) => Err(Errno::EIO),
        Err(e) => Err(e),
    }
}
