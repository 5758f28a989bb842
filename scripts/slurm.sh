#!/usr/bin/env bash
# A private single-node Slurm for simai's tests and examples.
#
#   scripts/slurm.sh install   apt-get the Slurm and munge packages if missing
#   scripts/slurm.sh start     start munged (if none runs), slurmctld and slurmd; wait for idle
#   scripts/slurm.sh stop      cancel jobs, stop what start started, remove the state
#   scripts/slurm.sh status    print whether it runs, and sinfo
#   scripts/slurm.sh env       print `export SLURM_CONF=...` (eval it to use the cluster)
#
# Everything lives in $SIMAI_SLURM_DIR (default /tmp/simai-slurm). Clients find the cluster
# through SLURM_CONF=$SIMAI_SLURM_DIR/slurm.conf. Settings (environment):
#   SIMAI_SLURM_CPUS        CPUs the node advertises (default max(4, 2*nproc))
#   SIMAI_SLURM_PARTITION   partition name (default simai)
#   SIMAI_SLURM_PORT        slurmctld port; slurmd uses the next one (default 6817)
#   SIMAI_SLURM_TIMEOUT     seconds to wait for the node to be idle (default 30)
set -euo pipefail

DIR=${SIMAI_SLURM_DIR:-/tmp/simai-slurm}
CONF=$DIR/slurm.conf
PARTITION=${SIMAI_SLURM_PARTITION:-simai}
PORT=${SIMAI_SLURM_PORT:-6817}
TIMEOUT=${SIMAI_SLURM_TIMEOUT:-30}
NODE=$(hostname -s)
NPROC=$(nproc)
CPUS=${SIMAI_SLURM_CPUS:-$((NPROC * 2 > 4 ? NPROC * 2 : 4))}
PACKAGES=(slurmctld slurmd slurm-client munge libpmix2)
MUNGE_SOCKET=/run/munge/munge.socket.2
export SLURM_CONF=$CONF

die() {
    echo "slurm.sh: $*" >&2
    exit 1
}

log_tail() {
    local f
    for f in "$DIR"/log/*.log; do
        [[ -f $f ]] || continue
        echo "---- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

# True if pid $1 exists and is not a zombie.
alive() {
    [[ -n ${1:-} && -r /proc/$1/stat ]] || return 1
    local rest
    rest=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $rest && ${rest:0:1} != Z ]]
}

pid_of() { [[ -f $1 ]] && tr -dc '0-9' <"$1" || true; }

# Stop the process whose pid is in file $1: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pidfile() {
    local file=$1 pid i
    pid=$(pid_of "$file")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$file"
}

cmd_install() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    echo "slurm.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
        die "apt-get install ${missing[*]} failed"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_ok && return 0
    local d
    for d in /etc/munge /var/lib/munge /var/log/munge /run/munge; do
        mkdir -p "$d"
        chown munge:munge "$d"
    done
    chmod 0700 /etc/munge /var/log/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- /usr/sbin/munged --force ||
        start_failed "munged failed to start (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$DIR/munged.pid"
    local i
    for i in $(seq 50); do
        munge_ok && return 0
        sleep 0.1
    done
    start_failed "munged started but 'munge -n | unmunge' fails"
}

write_conf() {
    local mem
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [[ -n $mem ]] || start_failed "cannot read RealMemory from 'slurmd -C'"
    cat >"$CONF" <<EOF
# Written by simai scripts/slurm.sh: a private single-node cluster.
ClusterName=simai
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2,batch_sched_delay=0
ReturnToService=2
KillWait=2
InactiveLimit=0
MinJobAge=60
Waittime=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

running() {
    alive "$(pid_of "$DIR/slurmctld.pid")" && alive "$(pid_of "$DIR/slurmd.pid")"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true; }

# Show the logs, undo a half start, and exit with the message.
start_failed() {
    log_tail
    cmd_stop quiet
    die "$1"
}

cmd_start() {
    command -v slurmctld >/dev/null || die "slurmctld is not installed (run: $0 install)"
    [[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "SIMAI_SLURM_CPUS must be a positive integer, got '$CPUS'"
    [[ $PORT =~ ^[1-9][0-9]*$ ]] || die "SIMAI_SLURM_PORT must be a port number, got '$PORT'"
    if running && [[ $(node_state) == idle* ]]; then
        echo "slurm.sh: already running (SLURM_CONF=$CONF)" >&2
        return 0
    fi
    cmd_stop quiet
    local port
    for port in "$PORT" $((PORT + 1)); do
        if port_busy "$port"; then
            die "port $port is in use (another Slurm running? choose SIMAI_SLURM_PORT)"
        fi
    done
    mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log
    start_munge
    write_conf
    slurmctld -f "$CONF" -c -i || start_failed "slurmctld failed to start"
    slurmd -f "$CONF" || start_failed "slurmd failed to start"
    local deadline=$((SECONDS + TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
        idle*) break ;;
        down* | drain* | fail*)
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            ;;
        esac
        sleep 0.2
    done
    if [[ $state == idle* ]] && ! running; then
        state="idle, but slurmctld or slurmd exited"
    fi
    if [[ $state != idle* || $state == *exited ]]; then
        start_failed "node $NODE not idle after ${TIMEOUT}s (state: '${state:-no answer}')"
    fi
    echo "slurm.sh: running, partition $PARTITION, node $NODE; export SLURM_CONF=$CONF" >&2
}

cmd_stop() {
    local quiet=${1:-}
    [[ -d $DIR ]] || return 0
    if [[ -f $CONF ]] && alive "$(pid_of "$DIR/slurmctld.pid")"; then
        timeout 5 scancel --partition="$PARTITION" >/dev/null 2>&1 || true
        local i
        for i in $(seq 50); do
            [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null || true) ]] && break
            sleep 0.1
        done
    fi
    stop_pidfile "$DIR/slurmd.pid"
    stop_pidfile "$DIR/slurmctld.pid"
    stop_pidfile "$DIR/munged.pid"
    rm -rf "$DIR"
    [[ -n $quiet ]] || echo "slurm.sh: stopped" >&2
}

cmd_status() {
    if running; then
        echo "running (SLURM_CONF=$CONF)"
        timeout 5 sinfo || true
    else
        echo "not running"
        return 1
    fi
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac
