#!/usr/bin/env bash
# Bring up a local Docker engine for the node agent's Docker sandbox, and the local test image.
#
# Idempotent: installs docker.io only when dockerd is missing, starts dockerd only when `docker info` fails,
# and builds the image only when it is absent or was built by an older version of this script. No image is
# pulled: `vespid-sandbox:busybox` is imported from a root filesystem made of the host's busybox-static
# (/bin/busybox and one symlink per applet), /work and /tmp, and an /etc/passwd with the unprivileged
# `sandbox` user (uid/gid 1000) that the sandbox runs tasks as.
#
# Works as root (CI) or as a normal user with sudo. Designed for Debian/Ubuntu (apt); no systemd needed:
# dockerd is started by hand in the background, logging to $DOCKERD_LOG. If the overlay2 storage driver
# does not work on this kernel/filesystem it is restarted with `--storage-driver=vfs` (slow, but works).
#
# Exits non-zero, saying why, when Docker cannot be brought up; the callers decide whether that is fatal
# (scripts/test.sh under CI=true) or a warning (scripts/dev.sh, local test runs).
#
# Progress goes to stderr; the sandbox's env goes to stdout as KEY=value lines, so this works:
#   set -a; eval "$(bash scripts/docker.sh)"; set +a
#
# Env overrides: VESPID_AGENT_DOCKER_IMAGE (default vespid-sandbox:busybox), DOCKERD_LOG
# (default /tmp/vespid-dockerd.log), DOCKER_WAIT_SECS (default 60).
set -euo pipefail

IMAGE="${VESPID_AGENT_DOCKER_IMAGE:-vespid-sandbox:busybox}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/vespid-dockerd.log}"
WAIT_SECS="${DOCKER_WAIT_SECS:-60}"
# Bump when the image's contents change, so existing machines rebuild it.
IMAGE_REVISION=1
SANDBOX_UID=1000
SANDBOX_GID=1000

log() { printf '[docker] %s\n' "$*" >&2; }
# The first line of $DOCKERD_LOG written by the dockerd this run started (0: none started).
LOG_FROM=0
die() {
    printf '[docker] ERROR: %s\n' "$*" >&2
    if [[ "$LOG_FROM" -gt 0 && -f "$DOCKERD_LOG" ]]; then
        printf '[docker] what dockerd logged (%s):\n' "$DOCKERD_LOG" >&2
        tail -n +"$LOG_FROM" "$DOCKERD_LOG" | tail -n 20 >&2 || true
    fi
    exit 1
}

if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
else
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed"
    SUDO=(sudo)
fi

# ---------------------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}

if ! command -v dockerd >/dev/null 2>&1 && [[ ! -x /usr/sbin/dockerd ]]; then
    apt_install docker.io
fi
DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
command -v docker >/dev/null 2>&1 || die "the docker CLI is missing after installing docker.io"

# ---------------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------------
engine_up() { "${SUDO[@]}" docker info >/dev/null 2>&1; }

# Waits for `docker info` while the dockerd with pid $1 is alive; fails when it dies or after WAIT_SECS.
wait_engine() {
    local pid="$1" waited=0
    while ! engine_up; do
        if [[ -n "$pid" ]] && ! "${SUDO[@]}" kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if [[ "$waited" -ge $((WAIT_SECS * 2)) ]]; then
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

# Starts dockerd detached from this script (its own session, so it outlives the caller); prints its pid.
start_dockerd() {
    log "starting dockerd${*:+ $*} (log: $DOCKERD_LOG)"
    # setsid: not killed with the caller's process group; `$!` is dockerd itself (setsid execs it).
    "${SUDO[@]}" bash -c 'log="$1"; shift; printf "\n==> %s %s\n" "$(date -Is)" "$*" >>"$log"; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!' \
        _ "$DOCKERD_LOG" "$DOCKERD" "$@"
}

stop_dockerd() {
    local pid="$1"
    "${SUDO[@]}" kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 40); do
        "${SUDO[@]}" kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    "${SUDO[@]}" kill -9 "$pid" 2>/dev/null || true
}

if engine_up; then
    log "the Docker engine is running"
else
    existing="$(pgrep -x dockerd | head -n 1 || true)"
    if [[ -n "$existing" ]]; then
        # Someone (a previous run, systemd) is starting it already: give it the same time to come up.
        log "dockerd (pid $existing) is running but not answering yet; waiting"
        wait_engine "$existing" || die "dockerd (pid $existing) does not answer \`docker info\` after ${WAIT_SECS}s"
    else
        # Only this start's lines of the (appended) log say why it failed.
        LOG_FROM=$(($(wc -l 2>/dev/null <"$DOCKERD_LOG" || echo 0) + 1))
        pid="$(start_dockerd)"
        if ! wait_engine "$pid"; then
            # No `grep -q`: with pipefail, its early exit would fail the pipeline through SIGPIPE.
            if tail -n +"$LOG_FROM" "$DOCKERD_LOG" 2>/dev/null | grep -iE 'overlay|graphdriver|storage.driver' \
                | grep -iE 'error|fatal|fail|not supported' >/dev/null; then
                log "dockerd did not come up with the default storage driver; retrying with --storage-driver=vfs"
                stop_dockerd "$pid"
                pid="$(start_dockerd --storage-driver=vfs)"
                wait_engine "$pid" || die "dockerd did not come up, even with --storage-driver=vfs"
            else
                stop_dockerd "$pid"
                die "dockerd did not come up within ${WAIT_SECS}s"
            fi
        fi
        log "dockerd is up (pid $pid, storage driver $("${SUDO[@]}" docker info --format '{{.Driver}}' 2>/dev/null))"
    fi
fi

# ---------------------------------------------------------------------------------------------------------
# The local sandbox image
# ---------------------------------------------------------------------------------------------------------
image_revision() {
    "${SUDO[@]}" docker image inspect --format '{{index .Config.Labels "vespid.image.revision"}}' "$IMAGE" 2>/dev/null || true
}

if [[ "$IMAGE" != "vespid-sandbox:busybox" ]]; then
    # Another image was asked for: this script cannot build it and will not pull it.
    "${SUDO[@]}" docker image inspect "$IMAGE" >/dev/null 2>&1 \
        || die "image $IMAGE is not present (only vespid-sandbox:busybox can be built here; nothing is pulled)"
elif [[ "$(image_revision)" == "$IMAGE_REVISION" ]]; then
    log "image $IMAGE is present"
else
    # Debian's busybox-static installs a statically linked /bin/busybox, which runs in an empty rootfs.
    if [[ "$(dpkg-query -W -f '${Status}' busybox-static 2>/dev/null || true)" != "install ok installed" ]]; then
        apt_install busybox-static
    fi
    BUSYBOX=/bin/busybox
    [[ -x "$BUSYBOX" ]] || die "$BUSYBOX is missing after installing busybox-static"
    if ldd "$BUSYBOX" >/dev/null 2>&1; then
        die "$BUSYBOX is dynamically linked (is the busybox package installed instead of busybox-static?)"
    fi

    log "building $IMAGE from $BUSYBOX"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    # mktemp makes it 0700, and the tar's "./" entry carries that to the image's / (some storage
    # drivers, vfs among them, apply it): the sandbox user could not even reach /bin.
    chmod 0755 "$rootfs"
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,work,tmp,proc,sys,dev,root}
    cp "$BUSYBOX" "$rootfs/bin/busybox"
    # One symlink per applet, where busybox itself would install it (bin/sh, usr/bin/wc, ...).
    while read -r applet; do
        [[ -n "$applet" && ! -e "$rootfs/$applet" ]] || continue
        mkdir -p "$rootfs/$(dirname "$applet")"
        ln -s /bin/busybox "$rootfs/$applet"
    done < <("$BUSYBOX" --list-full)
    [[ -e "$rootfs/bin/sh" ]] || ln -s /bin/busybox "$rootfs/bin/sh"
    chmod 1777 "$rootfs/tmp"
    chmod 0755 "$rootfs/work"
    chmod 0700 "$rootfs/root"
    # HOME is /tmp (a tmpfs in the sandbox), so caches that tools drop in $HOME stay out of the workspace.
    cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
sandbox:x:${SANDBOX_UID}:${SANDBOX_GID}:vespid sandbox:/tmp:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$rootfs/etc/group" <<EOF
root:x:0:
sandbox:x:${SANDBOX_GID}:
nogroup:x:65534:
EOF
    tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . \
        | "${SUDO[@]}" docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'WORKDIR /work' \
            --change 'CMD ["sh"]' \
            --change "LABEL vespid.image.revision=$IMAGE_REVISION" \
            - "$IMAGE" >/dev/null \
        || die "docker import of $IMAGE failed"
    rm -rf "$rootfs"
    trap - EXIT
    # A smoke run: the image starts, and the sandbox user exists.
    out="$("${SUDO[@]}" docker run --rm --network none --user "${SANDBOX_UID}:${SANDBOX_GID}" "$IMAGE" sh -c 'id -u' 2>&1)" \
        || die "the new image $IMAGE does not run: $out"
    [[ "$out" == "$SANDBOX_UID" ]] || die "the new image $IMAGE runs as uid '$out', expected $SANDBOX_UID"
    log "image $IMAGE built"
fi

echo "VESPID_AGENT_DOCKER_IMAGE=$IMAGE"
