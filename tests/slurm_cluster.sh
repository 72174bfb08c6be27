#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests (Debian's slurm-wlm and munge).
#   tests/slurm_cluster.sh start DIR   -> writes DIR/slurm.conf, starts munged, slurmctld, slurmd;
#                                          prints the line to export (SLURM_CONF=...)
#   tests/slurm_cluster.sh stop DIR    -> stops the daemons by their pid files
# Needs root (slurmd runs jobs as the submitting user; munged runs as the munge user).
# cred_expire=10: SLURM holds a requeued job back that long (default 120 s) before it restarts;
# bf_interval=5: the backfill pass that then starts it runs every 5 s (default 30 s).
set -euo pipefail
cmd=${1:?start or stop}; dir=$(realpath -m "${2:?scratch folder}")
host=$(hostname -s)
case "$cmd" in
start)
    mkdir -p "$dir"/{state,spool,log}
    if ! pgrep -x munged > /dev/null; then
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge
        [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key; chown munge:munge /etc/munge/munge.key; }
        su -s /bin/sh munge -c munged
    fi
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
    cat > "$dir/slurm.conf" <<CONF
ClusterName=tests
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=1
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
        sleep 0.5
    done
    echo "slurm did not come up; see $dir/log" >&2; exit 1 ;;
stop)
    for d in slurmd slurmctld; do
        [ -f "$dir/$d.pid" ] && kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
    done ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
