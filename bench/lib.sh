# Shell functions shared by bench/registry-build, bench/run-steps and
# bench/build-cache; sourced, not run. They use the caller's globals:
#   W        the work dir (KILN_BENCH_DIR), absolute
#   R        the script's own dir under W (registry config and log, pids, copies)
#   S        where the tools' state lives (set by scratch_choose)
#   SCRATCH  ext4 | disk | tmpfs
#   DOCKER, DOCKER_HOST, BUILDAH (a buildah command line with --root/--runroot)
# and set DOCKERD_PID and SAMPLER_PID, which bench_cleanup uses.

log() { printf '\n== %s\n' "$*" >&2; }
q() { printf '%q' "$1"; }

# SCRATCH -> S. ext4 (default): a fresh journaled ext4 loop file system
# (8 GB sparse file) in the work dir; disk: the work dir itself; tmpfs.
# Why not disk: this VM's root file system is ext4 without a journal, where
# creating files right after deleting thousands costs ~100 us each (the inode
# allocator skips recently deleted inodes); see bench/README.md.
scratch_choose() {
    SCRATCH=${SCRATCH:-ext4}
    case $SCRATCH in
        disk) S=$W ;;
        ext4|tmpfs) S=$W/scratch-$SCRATCH ;;
        *) echo "SCRATCH must be ext4, disk or tmpfs, not $SCRATCH" >&2; exit 2 ;;
    esac
}

# Refuses to start over what an earlier run (or another bench script) left up.
bench_check_leftovers() {
    if [ -f "$W/docker.pid" ] && kill -0 "$(cat "$W/docker.pid")" 2>/dev/null; then
        echo "a dockerd from an earlier run is still up (pid $(cat "$W/docker.pid")); stop it first" >&2
        exit 1
    fi
    if [ -f "$R/registry.pid" ] && kill -0 "$(cat "$R/registry.pid")" 2>/dev/null; then
        echo "a registry from an earlier run is still up (pid $(cat "$R/registry.pid")); stop it first" >&2
        exit 1
    fi
    if [ "$S" != "$W" ] && grep -qF " $S " /proc/self/mounts; then
        echo "$S is mounted already (an earlier run, or another bench script running?): unmount it first" >&2
        exit 1
    fi
}

scratch_make() {
    [ "$S" != "$W" ] || return 0
    rm -rf "$S" "$S.img"; mkdir -p "$S"
    if [ "$SCRATCH" = ext4 ]; then
        truncate -s 8G "$S.img"
        mkfs.ext4 -q -F "$S.img"
        mount -o loop "$S.img" "$S"
    else
        mount -t tmpfs -o size=8g tmpfs "$S"
    fi
}

# A sentence saying where the tools' state is, for the summaries.
scratch_sentence() {
    local what="The tools' state (kiln's cache, dockerd's data root, buildah's root, the registry's storage)"
    case $SCRATCH in
        ext4) echo "$what is on a fresh journaled ext4 loop file system." ;;
        disk) echo "$what is on the work dir's file system ($(findmnt -n -o FSTYPE --target "$W"), $(ls -d "/proc/fs/jbd2/$(basename "$(findmnt -n -o SOURCE --target "$W")")"-* >/dev/null 2>&1 && echo "journaled" || echo "no journal"))." ;;
        tmpfs) echo "$what is on a tmpfs." ;;
    esac
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# registry_write ADDR: Debian's docker-registry config ($R/config.yml, storage
# in $S/registry-storage, access log on) and `$R/registry.sh
# fresh|restart|stop`, which (re)starts it on an empty storage dir, or on a
# copy of $S/registry-pristine; a file, not a function, so that hyperfine's
# --prepare can call it. The registry's pid is in $R/registry.pid.
registry_write() {
    local addr=$1
    cat > "$R/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $S/registry-storage
  delete:
    enabled: true
http:
  addr: $addr
EOF
    cat > "$R/registry.sh" <<EOF
#!/bin/sh
set -e
R=$(q "$R")
S=$(q "$S")
stop() {
    [ -f "\$R/registry.pid" ] || return 0
    pid=\$(cat "\$R/registry.pid")
    kill "\$pid" 2>/dev/null || true
    i=0
    while [ -d /proc/\$pid ] && ! grep -q '^State:.*Z' /proc/\$pid/status 2>/dev/null; do
        i=\$((i + 1)); [ \$i -lt 200 ] || { kill -9 "\$pid"; break; }
        sleep 0.05
    done
    rm -f "\$R/registry.pid"
}
stop
case "\$1" in
    stop) exit 0 ;;
    fresh) rm -rf "\$S/registry-storage"; mkdir "\$S/registry-storage" ;;
    restart) rm -rf "\$S/registry-storage"; cp -a "\$S/registry-pristine" "\$S/registry-storage" ;;
    *) echo "usage: \$0 fresh|restart|stop" >&2; exit 2 ;;
esac
docker-registry serve "\$R/config.yml" >>"\$R/registry.log" 2>&1 </dev/null &
echo \$! > "\$R/registry.pid"
i=0
until curl -fs http://$addr/v2/ >/dev/null; do
    i=\$((i + 1)); [ \$i -lt 400 ] || { echo "the registry did not come up, see \$R/registry.log" >&2; exit 1; }
    sleep 0.05
done
EOF
    chmod +x "$R/registry.sh"
}

# A private dockerd on $DOCKER_HOST with the containerd image store (which
# buildx's docker driver needs to export type=oci), data root on the scratch,
# no iptables and no default bridge. Sets DOCKERD_PID.
dockerd_start() {
    mkdir -p "$S/docker" "$W/exec"
    echo '{"features": {"containerd-snapshotter": true}}' > "$W/daemon.json"
    log "starting dockerd (log: $W/dockerd.log)"
    dockerd --iptables=false --bridge=none --data-root "$S/docker" --exec-root "$W/exec" \
        --pidfile "$W/docker.pid" -H "$DOCKER_HOST" --config-file "$W/daemon.json" \
        >"$W/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null || { echo "dockerd did not come up, see $W/dockerd.log" >&2; exit 1; }
}

# The common part of the scripts' EXIT traps: the load sampler, the registry
# and dockerd stopped by pid, buildah's containers and images removed, and
# whatever is left mounted under W (dockerd's, containerd's and buildah's
# mounts, the scratch file system) unmounted, deepest first.
bench_cleanup() {
    [ -n "${SAMPLER_PID:-}" ] && kill "$SAMPLER_PID" 2>/dev/null
    [ -x "$R/registry.sh" ] && "$R/registry.sh" stop
    if [ -n "${DOCKERD_PID:-}" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill "$DOCKERD_PID"
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID"
    fi
    $BUILDAH rm -a >/dev/null 2>&1
    $BUILDAH rmi -af >/dev/null 2>&1
    findmnt -rn -o TARGET | grep -F "$W/" | sort -r | while read -r m; do umount -l "$m"; done
    grep -qF " $W " /proc/self/mounts && umount -l "$W"
    # The scratch file system went with the mounts above.
    [ "$S" = "$W" ] || rm -rf "$S" "$S.img"
    return 0
}

# The 1-minute load average every 5 s into FILE, in the background; sets
# SAMPLER_PID. load_sampler_stop prints the maximum.
load_sampler_start() {
    while sleep 5; do cut -d' ' -f1 /proc/loadavg; done > "$1" &
    SAMPLER_PID=$!
}
load_sampler_stop() {
    kill "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=
    sort -g "$1" | tail -1
}

# wait_idle MAX TIMEOUT: waits (checking every 15 s) until the 1-minute load
# average is at most MAX; fails after TIMEOUT seconds. On 2 cores anything
# else running (a cargo build, a test suite) spoils absolute timings.
wait_idle() {
    local max=$1 timeout=$2 start=$SECONDS
    until awk -v m="$max" '{exit !($1 <= m)}' /proc/loadavg; do
        if [ $((SECONDS - start)) -ge "$timeout" ]; then
            echo "the 1-minute load average stayed above $max for ${timeout} s ($(cut -d' ' -f1-3 /proc/loadavg)): something else is running; not timing" >&2
            exit 1
        fi
        echo "load average $(cut -d' ' -f1-3 /proc/loadavg) > $max: waiting for the machine to be idle ($((SECONDS - start)) s so far)" >&2
        sleep 15
    done
}

machine_line() {
    echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')."
}

# kiln_version KILN KILN_SRC HERE: the copy's version, the source binary's
# mtime and the tree's commit.
kiln_version() {
    echo "kiln $("$1" --version | awk '{print $NF}') ($2, built $(stat -c %y "$2" | cut -d. -f1); tree at $(git -C "$3" rev-parse --short HEAD 2>/dev/null)$(git -C "$3/.." diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo " with uncommitted changes in src/"))"
}
tool_versions() {
    echo "dockerd $("$DOCKER" version --format '{{.Server.Version}}'), buildx $("$DOCKER" buildx version | awk '{print $2}'), containerd $(containerd --version | awk '{print $3}');" \
         "buildah $(buildah --version | awk '{print $3}') ($BUILDAH_DRIVER); skopeo $(skopeo --version | awk '{print $3}'); docker-registry $(docker-registry --version | awk '{print $3}');" \
         "hyperfine $(hyperfine --version | awk '{print $2}')"
}
