#!/usr/bin/env bash
# `make e2e-docker`: build the mpc image offline and run the three compose demos (raises,
# referendum and poll) end to end, on a machine with no Docker engine and no registry access.
#
#   a. installs Debian's docker.io, docker-compose, debootstrap and python3-venv (if missing)
#   b. starts a private dockerd (and its own containerd) inside a new network namespace, with
#      all its state under a temporary directory; DOCKER_HOST points at its socket
#   c. makes the base image with debootstrap (Debian bookworm, Python 3.11) and `docker import`;
#      the rootfs tarball is cached in $MPC_E2E_CACHE (default /var/cache/mpc-e2e)
#   d. downloads the project's dependency wheels from PyPI into deploy/e2e/wheels/ and builds
#      deploy/Dockerfile through the compose files with BASE=that image, installing only from
#      those wheels (--no-index; the build has no network anyway)
#   e. runs each demo with docker-compose, checks the coordinator's answer (3171.5; YES), what
#      the nodes' policies allow on data already released (a sum after the average; a second
#      allowed threshold) and refuse (any other threshold), that the nodes are PID 1 and exit 0
#      on SIGTERM, and, with check_privacy.py, that no node's input shows up in any other
#      container's logs, configuration or volumes; for the poll, that 1,000 voters' submissions
#      were accepted, the coordinator prints YES, and each node's store holds 1,000 shares that
#      look like fair coins and none of which is a ballot
#   f. tears everything down on exit, also after a failure, Ctrl-C or SIGTERM: compose down -v,
#      images, dockerd and containerd (by PID), the namespace, the temporary files and wheels
#
# Needs root (namespaces, dockerd, apt). Network: apt and debootstrap reach deb.debian.org,
# pip reaches PyPI, all from the root namespace; every container runs inside the private
# namespace, which has no route out. MPC_E2E_KEEP=1 keeps the temporary directory (logs,
# collected artifacts) for a look after the run; processes are stopped regardless.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$REPO/deploy/e2e
CACHE=${MPC_E2E_CACHE:-/var/cache/mpc-e2e}
MIRROR=${MPC_E2E_MIRROR:-http://deb.debian.org/debian}
PIP_INDEX=${MPC_E2E_PIP_INDEX:-https://pypi.org/simple}
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv
HOST_PACKAGES=(docker.io docker-compose debootstrap python3-venv iptables iproute2)
NODES=(alice bob carlos david)
RUN_ID=$(date +%Y%m%d%H%M%S)-$$
NS=mpc-e2e-$RUN_ID
BASE_IMAGE=mpc-e2e-base:$SUITE
IMAGE=mpc-e2e:$RUN_ID
# Debian's docker client matches the daemon we start (20.10); docker-compose 1.29 builds
# through the daemon's API (classic builder), not through whichever `docker` is first on PATH.
DOCKER=/usr/bin/docker
COMPOSE=/usr/bin/docker-compose
export COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0 COMPOSE_INTERACTIVE_NO_CLI=1

STEP=setup
TMP=
CHILD=
DOCKERD_PID=
CONTAINERD_PID=
NS_CREATED=
POLICY_RC_CREATED=
PROJECTS=()
COPIED_WHEELS=()

log() { printf '%s [e2e %4ss] %s\n' "$(date +%T)" "$SECONDS" "$*" >&2; }
step() { STEP=$1; log "== $1"; }
fail() { log "FAILED in step '$STEP': $*"; exit 1; }

# spawn OUT ERR CMD...: run CMD (which starts with `timeout`) in the background with its
# stdout in OUT and its stderr in ERR ("-": with stdout), and wait for it. Unlike a command in
# the foreground, `wait` returns at once when a signal arrives, so Ctrl-C or SIGTERM goes
# straight to the teardown, which stops CMD by its PID.
spawn() {
    local out=$1 err=$2 rc=0
    shift 2
    if [[ $err == - ]]; then "$@" >"$out" 2>&1 & else "$@" >"$out" 2>"$err" & fi
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

# quiet NAME CMD...: spawn CMD with its output in $TMP/logs/NAME.log; show the log's tail if it fails.
quiet() {
    local name=$1 rc=0
    shift
    spawn "$TMP/logs/$name.log" - "$@" || rc=$?
    if ((rc != 0)); then
        log "  '$*' exited $rc; last lines of logs/$name.log:"
        tail -n 40 "$TMP/logs/$name.log" >&2 || true
    fi
    return "$rc"
}

# retry N DELAY CMD...: run CMD until it succeeds, at most N times.
retry() {
    local n=$1 delay=$2 i
    shift 2
    for ((i = 1; i <= n; i++)); do
        "$@" && return 0
        ((i < n)) && { log "  attempt $i/$n failed; retrying in ${delay}s"; sleep "$delay"; }
    done
    return 1
}

# Short docker calls (inspect, logs, exec, ...), each bounded.
docker() { timeout 120 "$DOCKER" "$@"; }

# ---------------------------------------------------------------------------------- teardown

stop_pid() {  # stop_pid PID NAME SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL
    local pid=$1 name=$2 grace=$3 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "  $name (pid $pid) did not stop in ${grace}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

cleanup() {
    local rc=$? p pid cmd left
    set +e
    trap - EXIT INT TERM
    trap '' INT TERM  # a second Ctrl-C must not cut the teardown short
    if ((rc != 0)); then
        log "FAILED in step '$STEP' (exit $rc); tearing down"
        if [[ -n $TMP && -s $TMP/dockerd.log && $STEP == b.* ]]; then
            log "  last lines of dockerd.log:"
            tail -n 20 "$TMP/dockerd.log" >&2
        fi
    else
        log "== f. teardown"
    fi
    # The step's command, if a signal interrupted it (`timeout` passes SIGTERM on).
    stop_pid "$CHILD" "the step's command" 15
    if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        for p in "${PROJECTS[@]}"; do
            timeout 120 "$COMPOSE" -p "e2e-$p" -f "$REPO/deploy/compose/$p/compose.yaml" \
                down -v --remove-orphans >"$TMP/logs/teardown-$p.log" 2>&1 || log "  compose down failed for $p"
        done
        timeout 60 "$DOCKER" rmi -f "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1
        left=$(timeout 30 "$DOCKER" ps -aq 2>/dev/null | wc -l)
        ((left == 0)) || log "  $left containers are left; stopping dockerd stops them"
    fi
    # dockerd stops the containerd it started; stop_pid on containerd is for a dockerd that
    # had to be killed.
    stop_pid "$DOCKERD_PID" dockerd 30
    stop_pid "$CONTAINERD_PID" containerd 10
    # Anything still running from our state directory (a shim orphaned by a killed dockerd):
    # matched by our unique temporary path, stopped by PID.
    if [[ -n $TMP ]]; then
        for pid in $(grep -lsF -- "$TMP/" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
            [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
            cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | cut -c1-100) || continue
            [[ -n $cmd && $cmd != grep* ]] || continue
            log "  stopping leftover process $pid: $cmd"
            stop_pid "$pid" leftover 5
        done
    fi
    [[ -n $NS_CREATED ]] && { ip netns delete "$NS" || log "  could not delete namespace $NS"; }
    [[ -n $POLICY_RC_CREATED ]] && rm -f /usr/sbin/policy-rc.d
    for p in "${COPIED_WHEELS[@]}"; do rm -f "$E2E/wheels/$p"; done
    if [[ -n $TMP ]]; then
        if grep -qF -- "$TMP/" /proc/self/mountinfo; then
            log "  unmounting what is left under $TMP"
            grep -F -- "$TMP/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
        fi
        if [[ ${MPC_E2E_KEEP:-} == 1 ]]; then
            log "  kept $TMP (MPC_E2E_KEEP=1); delete it with: rm -rf $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    if ((rc == 0)); then
        log "PASSED: all three demos, in ${SECONDS}s"
    else
        log "FAILED in step '$STEP' after ${SECONDS}s; everything it started is stopped and removed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted (SIGINT)"; exit 130' INT
trap 'log "terminated (SIGTERM)"; exit 143' TERM

[[ $(id -u) == 0 ]] || fail "run as root (it installs packages, creates a network namespace and runs dockerd)"
# One run at a time: runs share deploy/e2e/wheels/ and the cache.
mkdir -p "$CACHE"
exec 9>"$CACHE/run.lock"
flock -n 9 || fail "another e2e run holds $CACHE/run.lock"
TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/mpc-e2e.XXXXXX")
mkdir -p "$TMP/logs"
log "run $RUN_ID, temporary directory $TMP"

# ------------------------------------------------------------------------------ a. packages
step "a. host packages"
missing=()
for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # Installing docker.io must not start the system's dockerd: policy-rc.d says no (101).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    retry 3 10 quiet apt-update timeout 300 apt-get update -q || fail "apt-get update"
    retry 3 10 quiet apt-install timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || fail "apt-get install ${missing[*]}"
    if [[ -n $POLICY_RC_CREATED ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=; fi
else
    log "already installed: ${HOST_PACKAGES[*]}"
fi
for tool in "$DOCKER" "$COMPOSE" /usr/sbin/dockerd /usr/sbin/debootstrap; do
    [[ -x $tool ]] || fail "$tool is missing after the install"
done
log "$("$DOCKER" --version), docker-compose $("$COMPOSE" version --short 2>/dev/null)"

# ------------------------------------------------------------------------------- b. dockerd
step "b. dockerd in network namespace $NS"
ip netns add "$NS" || fail "ip netns add $NS"
NS_CREATED=1
ip -n "$NS" link set lo up
# The host's cgroup mounts, replayed inside the namespace by netns-exec.sh (see there why).
awk '{
    for (k = 7; k <= NF && $k != "-"; k++) ;
    fs = $(k + 1); if (fs != "cgroup" && fs != "cgroup2") next
    n = split($(k + 3), o, ","); s = ""
    for (i = 1; i <= n; i++) if (o[i] != "rw" && o[i] != "ro") s = s (s == "" ? "" : ",") o[i]
    if (fs == "cgroup" && s ~ /^name=/) s = "none," s
    print $5, fs, s
}' /proc/self/mountinfo >"$TMP/cgroup-mounts"
[[ -s $TMP/cgroup-mounts ]] || fail "no cgroup file systems are mounted on this host"
# Its own daemon.json (not the host's /etc/docker/daemon.json), which also keeps the daemon's
# identity key out of /etc/docker.
printf '{"deprecated-key-path": "%s"}\n' "$TMP/key.json" >"$TMP/daemon.json"
ip netns exec "$NS" "$E2E/netns-exec.sh" "$TMP/cgroup-mounts" \
    /usr/sbin/dockerd \
    --config-file "$TMP/daemon.json" \
    --data-root "$TMP/docker" \
    --exec-root "$TMP/exec" \
    --pidfile "$TMP/dockerd.pid" \
    --host "unix://$TMP/docker.sock" \
    --log-level warn \
    >"$TMP/dockerd.log" 2>&1 9>&- &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$TMP/docker.sock
deadline=$((SECONDS + 60))
until timeout 10 "$DOCKER" version >/dev/null 2>&1; do
    kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited"
    ((SECONDS < deadline)) || fail "dockerd did not answer on $DOCKER_HOST within 60s"
    sleep 0.5
done
# `ip netns exec` and netns-exec.sh exec, so $! should already be dockerd; trust its pidfile.
pid=$(cat "$TMP/dockerd.pid" 2>/dev/null || true)
if [[ -n $pid && $pid != "$DOCKERD_PID" ]]; then
    log "dockerd's pidfile says $pid, not $DOCKERD_PID"
    DOCKERD_PID=$pid
fi
CONTAINERD_PID=$(cat "$TMP/exec/containerd/containerd.pid" 2>/dev/null || true)
log "dockerd pid $DOCKERD_PID (containerd pid ${CONTAINERD_PID:-?}), $DOCKER_HOST"

# ---------------------------------------------------------------------------- c. base image
step "c. base image $BASE_IMAGE (debootstrap $SUITE)"
# The cache key covers everything that shapes the rootfs.
key=$(printf '%s\n' v1 "$SUITE" minbase "$BASE_PACKAGES" "$MIRROR" | sha256sum | cut -c1-16)
tarball=$CACHE/base-$SUITE-$key.tar.gz
if [[ -s $tarball ]]; then
    log "cached: $tarball"
else
    log "debootstrap $SUITE (minbase + $BASE_PACKAGES) from $MIRROR; cached afterwards in $tarball"
    ok=
    for attempt in 1 2; do
        rm -rf "$TMP/rootfs"
        if quiet debootstrap timeout 900 debootstrap --variant=minbase --include="$BASE_PACKAGES" \
            "$SUITE" "$TMP/rootfs" "$MIRROR"; then
            ok=1
            break
        fi
        log "  debootstrap attempt $attempt failed"
    done
    [[ -n $ok ]] || fail "debootstrap $SUITE from $MIRROR"
    # Trim what an image does not need: downloaded .debs, package lists, docs, locales.
    (cd "$TMP/rootfs" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* usr/share/doc/* \
        usr/share/man/* usr/share/info/* usr/share/locale/* var/cache/debconf/*-old var/log/*.log)
    tar --numeric-owner -C "$TMP/rootfs" -c . | gzip -1 >"$tarball.tmp.$$"
    mv "$tarball.tmp.$$" "$tarball"
    rm -rf "$TMP/rootfs"
fi
quiet import timeout 300 "$DOCKER" import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$tarball" "$BASE_IMAGE" \
    || fail "docker import $tarball"
docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11)' \
    || fail "the base image has no Python 3.11 with venv"

# ------------------------------------------------------------------- d. wheelhouse and image
step "d. wheelhouse from PyPI and image $IMAGE"
quiet venv timeout 120 python3 -m venv "$TMP/pip-venv" || fail "python3 -m venv"
python3 - "$REPO/pyproject.toml" >"$TMP/requirements.txt" <<'EOF' || fail "reading pyproject.toml"
import sys, tomllib
meta = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(meta["project"]["dependencies"] + meta["build-system"]["requires"]))
EOF
log "requirements: $(tr '\n' ' ' <"$TMP/requirements.txt")"
# Every manylinux tag bookworm's glibc 2.36 runs, newest first (pip prefers earlier ones).
platforms=()
for v in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
mkdir -p "$TMP/wheels"
# Only PyPI: this machine's pip configuration (extra indexes, find-links) is left out.
retry 3 10 quiet pip-download env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    timeout 300 "$TMP/pip-venv/bin/pip" download --disable-pip-version-check --index-url "$PIP_INDEX" \
    --dest "$TMP/wheels" --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    "${platforms[@]}" -r "$TMP/requirements.txt" || fail "pip download (cp311, manylinux x86_64) from $PIP_INDEX"
for f in "$E2E"/wheels/*.whl; do
    [[ -e $f ]] || continue
    log "removing a leftover $(basename "$f") from deploy/e2e/wheels"
    rm -f "$f"
done
for f in "$TMP"/wheels/*.whl; do
    cp "$f" "$E2E/wheels/"
    COPIED_WHEELS+=("$(basename "$f")")
done
log "${#COPIED_WHEELS[@]} wheels in deploy/e2e/wheels: $(printf '%s ' "${COPIED_WHEELS[@]}" | cut -c1-160)..."
export MPC_IMAGE=$IMAGE MPC_BASE=$BASE_IMAGE MPC_PIP_OPTS="--no-index --find-links /wheels"
for demo in raises referendum poll; do
    # The compose files' own build section, as a user runs it (the second build is cached).
    quiet "build-$demo" timeout 600 "$COMPOSE" -p "e2e-$demo" -f "$REPO/deploy/compose/$demo/compose.yaml" build \
        || fail "building the image through deploy/compose/$demo/compose.yaml"
done
grep -q "Looking in links: /wheels" "$TMP/logs/build-raises.log" || fail "pip did not use the local wheelhouse"
! grep -q "Looking in indexes" "$TMP/logs/build-raises.log" || fail "pip looked at an index during the build"
[[ $(docker image inspect -f '{{.Config.User}} {{json .Config.Entrypoint}}' "$IMAGE") == 'mpc:mpc ["mpc"]' ]] \
    || fail "image $IMAGE should run as mpc:mpc with the exec-form entrypoint [\"mpc\"]"
log "image $IMAGE: $(docker run --rm --network none "$IMAGE" --version), user mpc," \
    "$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}')"

# --------------------------------------------------------------------------------- e. demos
# coordinator_says NAME EXPECTED_RC COMPOSE... -- ARGS...: `compose run --no-deps coordinator ARGS`
# (the input jobs do not run again, so the stored versions stay those already released);
# fails unless it exits EXPECTED_RC. Its stdout and stderr are in $TMP/logs/NAME.out and .err.
coordinator_says() {
    local name=$1 want=$2 rc=0 dc=()
    shift 2
    while [[ $1 != -- ]]; do dc+=("$1"); shift; done
    shift
    spawn "$TMP/logs/$name.out" "$TMP/logs/$name.err" timeout 300 "${dc[@]}" run --rm -T --no-deps coordinator \
        "$@" --cluster /etc/mpc/cluster.toml || rc=$?
    if ((rc != want)); then
        log "  mpc $* exited $rc, not $want: $(cat "$TMP/logs/$name.out" "$TMP/logs/$name.err")"
        return 1
    fi
}

# check_rules DEMO COMPOSE...: what each node's policy allows on data already released, and what not.
check_rules() {
    local demo=$1
    shift
    if [[ $demo == raises ]]; then
        # The sum follows from the average already released: free, not a second query.
        coordinator_says "rules-$demo-sum" 0 "$@" -- sum raise || fail "sum after the average was refused"
        [[ $(<"$TMP/logs/rules-$demo-sum.out") == 12686 ]] || fail "sum raise printed $(<"$TMP/logs/rules-$demo-sum.out")"
        log "sum after the average: 12686 (implied by the average, no new release)"
    else
        # The owners allow exactly two questions: "at least half?" (asked) and "at least 7?".
        coordinator_says "rules-$demo-t7" 0 "$@" -- vote referendum --threshold 7 || fail "vote --threshold 7 was refused"
        [[ $(<"$TMP/logs/rules-$demo-t7.out") == NO ]] || fail "vote --threshold 7 printed $(<"$TMP/logs/rules-$demo-t7.out")"
        coordinator_says "rules-$demo-t5" 1 "$@" -- vote referendum --threshold 5 \
            || fail "vote --threshold 5 was not refused"
        grep -q "(thresholds)" "$TMP/logs/rules-$demo-t5.err" && grep -q "nothing was revealed" "$TMP/logs/rules-$demo-t5.err" \
            && [[ ! -s $TMP/logs/rules-$demo-t5.out ]] || fail "the refusal of --threshold 5: $(cat "$TMP/logs/rules-$demo-t5.err")"
        log "vote --threshold 7: NO; --threshold 5 refused by the nodes' policy (thresholds), nothing revealed"
    fi
}

# stop_nodes DEMO "NODE..." COMPOSE...: every node is `mpc node` as PID 1; `compose stop` ends them all
# with exit code 0 (SIGTERM handled, never killed).
stop_nodes() {
    local demo=$1 nodes=$2 n cid pid1 code t0
    shift 2
    for n in $nodes; do
        cid=$(timeout 60 "$@" ps -q "$n")
        pid1=$(docker exec "$cid" cat /proc/1/cmdline | tr '\0' ' ') || fail "cannot read PID 1 of $n"
        [[ $pid1 == *"mpc node --cluster /etc/mpc/cluster.toml --name $n "* ]] || fail "PID 1 of $n is $pid1"
    done
    t0=$SECONDS
    quiet "stop-$demo" timeout 120 "$@" stop || fail "docker-compose stop ($demo)"
    for n in $nodes; do
        cid=$(timeout 60 "$@" ps -q "$n")
        code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
        [[ $code == 0 ]] || fail "node $n exited $code on SIGTERM (137: it had to be killed)"
    done
    log "$(wc -w <<<"$nodes") nodes are PID 1 and exited 0 on SIGTERM ($((SECONDS - t0))s for all)"
}

# run_demo DEMO INPUT KIND BOUNDS PARTY=VALUES...   (BOUNDS: LO,HI as the input jobs declare them)
# Bring a demo's compose project up (NAME LIMIT COMPOSE-COMMAND...) and wait, at most LIMIT seconds, for
# its coordinator container to exit: sets COORD (the container) and COORD_CODE (its exit code).
up_and_wait() {
    local name=$1 limit=$2
    shift 2
    quiet "up-$name" timeout "$limit" "$@" up -d || fail "docker-compose up ($name)"
    COORD=$(timeout 60 "$@" ps -q coordinator)
    [[ -n $COORD ]] || fail "no coordinator container ($name)"
    spawn "$TMP/logs/wait-$name.log" - timeout "$limit" "$DOCKER" wait "$COORD" \
        || fail "the coordinator of $name did not finish within ${limit}s"
    COORD_CODE=$(<"$TMP/logs/wait-$name.log")
}

run_demo() {
    local demo=$1 input=$2 kind=$3 bounds=$4
    shift 4
    local project=e2e-$demo art=$TMP/artifacts/$demo
    local dc=("$COMPOSE" -p "$project" -f "$REPO/deploy/compose/$demo/compose.yaml")
    local coord code cid svc vol
    PROJECTS+=("$demo")
    mkdir -p "$art/containers" "$art/volumes"

    step "e. $demo: compose up (certificates, inputs, healthy nodes, coordinator)"
    up_and_wait "$demo" 300 "${dc[@]}"
    coord=$COORD code=$COORD_CODE
    [[ $code == 0 ]] || { docker logs "$coord" >&2; fail "the coordinator exited $code"; }
    log "coordinator: $(docker logs "$coord" 2>/dev/null)"

    step "e. $demo: a second computation with compose run"
    spawn "$art/containers/coordinator-run.out" "$art/containers/coordinator-run.err" \
        timeout 300 "${dc[@]}" run --rm -T coordinator || fail "docker-compose run coordinator ($demo)"
    log "coordinator (run): $(<"$art/containers/coordinator-run.out")"

    step "e. $demo: the owners' rules across sessions"
    check_rules "$demo" "${dc[@]}"

    step "e. $demo: nodes are PID 1 and stop cleanly on SIGTERM"
    stop_nodes "$demo" "${NODES[*]}" "${dc[@]}"

    step "e. $demo: privacy checks"
    for cid in $(docker ps -aq --filter "label=com.docker.compose.project=$project"); do
        svc=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$cid")
        docker logs "$cid" >"$art/containers/$svc.out" 2>"$art/containers/$svc.err"
        docker inspect "$cid" >"$art/containers/$svc.json"
    done
    for vol in $(docker volume ls -q --filter "label=com.docker.compose.project=$project"); do
        spawn "$art/volumes/$vol.tar" "$TMP/logs/export-$vol.log" timeout 120 "$DOCKER" run --rm --network none \
            --user 0:0 -v "$vol:/v:ro" "$BASE_IMAGE" tar -C /v -cf - . || fail "copying volume $vol"
    done
    python3 "$E2E/check_privacy.py" "$art" --project "$project" --input "$input" --kind "$kind" \
        --bounds "$bounds" "${@/#/--party=}" || fail "privacy checks of $demo (see the FAIL lines above)"

    step "e. $demo: compose down -v"
    quiet "down-$demo" timeout 120 "${dc[@]}" down -v || fail "docker-compose down -v ($demo)"
}

# The raises of README.md: the coordinator must print 3171.5 (check_privacy.py computes it).
# The input jobs declare --bounds 0,100000.
run_demo raises raise scalar 0,100000 alice=3800 bob=2514 carlos=2982 david=3390
# The referendum of mpc/cli/demo.py: 6 of the 9 ballots are 1, so "at least half" must say
# YES (check_privacy.py computes the expected answer from these ballots). Stored with
# --ballots, whose bounds are always 0,1.
run_demo referendum referendum ballots 0,1 alice=1,0,1 bob=1,1 carlos=0,0,1 david=1

# The poll of deploy/compose/poll: 1,000 voters who run no node submit shares of their ballots (600
# yes) to 3 nodes with issued credentials; the coordinator must print YES after a validated vote.
run_poll() {
    local project=e2e-poll art=$TMP/artifacts/poll
    local dc=("$COMPOSE" -p "$project" -f "$REPO/deploy/compose/poll/compose.yaml")
    local coord code n voters vol
    PROJECTS+=("poll")
    mkdir -p "$art/containers" "$art/volumes"

    step "e. poll: compose up (certificates, owner, collections, nodes, 1000 voters, close, coordinator)"
    up_and_wait poll 600 "${dc[@]}"
    coord=$COORD code=$COORD_CODE
    voters=$(timeout 60 "${dc[@]}" ps -q voters)
    [[ $code == 0 ]] || { docker logs "$voters" >&2; docker logs "$coord" >&2; fail "the coordinator exited $code"; }
    [[ $(docker logs "$voters" 2>/dev/null) == "1000 of 1000 submissions accepted" ]] \
        || fail "the voters said: $(docker logs "$voters" 2>&1 | tail -5)"
    [[ $(docker logs "$coord" 2>/dev/null) == YES ]] || fail "the poll's coordinator printed $(docker logs "$coord" 2>&1)"
    log "voters: 1000 of 1000 submissions accepted; coordinator: YES (600 of 1000 ballots are 1)"

    step "e. poll: the same vote again with compose run (a repeated query is allowed)"
    spawn "$art/containers/coordinator-run.out" "$art/containers/coordinator-run.err" \
        timeout 300 "${dc[@]}" run --rm -T --no-deps coordinator || fail "docker-compose run coordinator (poll)"
    [[ $(<"$art/containers/coordinator-run.out") == YES ]] || fail "the second vote printed $(cat "$art/containers/coordinator-run.out")"

    step "e. poll: nodes are PID 1 and stop cleanly on SIGTERM; no node store holds the ballots"
    stop_nodes poll "alice bob carlos" "${dc[@]}"
    for n in alice bob carlos; do
        vol=${project}_${n}-data
        spawn "$art/volumes/$n-data.tar" "$TMP/logs/export-poll-$n.log" timeout 120 "$DOCKER" run --rm --network none \
            --user 0:0 -v "$vol:/v:ro" "$BASE_IMAGE" tar -C /v -cf - . || fail "copying volume $vol"
    done
    python3 - "$art/volumes" <<'PY' || fail "a node's store of the poll holds something other than shares"
import io, sqlite3, sys, tarfile, tempfile, pathlib
for tar in sorted(pathlib.Path(sys.argv[1]).glob("*-data.tar")):
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tar) as t:
        t.extractall(tmp)
        db = next(pathlib.Path(tmp).rglob("*.sqlite3"), None) or next(pathlib.Path(tmp).rglob("*.db"), None)
        assert db is not None, f"{tar.name}: no store"
        rows = sqlite3.connect(db).execute("SELECT share FROM submissions WHERE collection = 'poll'").fetchall()
        words = [int.from_bytes(r[0], "little") for r in rows]
        assert len(words) == 1000, (tar.name, len(words))
        small = sum(w in (0, 1) for w in words)     # a ballot in the clear would be 0 or 1
        assert small <= 1, (tar.name, small)
        ones = sum(bin(w).count("1") for w in words)
        assert abs(ones - 32 * len(words)) < 6 * (16 * len(words)) ** 0.5, (tar.name, ones)   # fair coins
        print(f"{tar.name}: 1000 shares, none a ballot, {ones} of {64 * len(words)} bits set")
PY

    step "e. poll: compose down -v"
    quiet "down-poll" timeout 120 "${dc[@]}" down -v || fail "docker-compose down -v (poll)"
}
run_poll
STEP=done
