# Shell helpers shared by the jobs' ctl scripts (sourced, not executed).
#
# monit runs ctl scripts as root and waits for "start" to return, so a start
# launches the program in the background and returns once its pidfile exists;
# "stop" ends exactly the process named in the pidfile.

# as_vcap COMMAND...: runs COMMAND as vcap, with vcap's own HOME, USER and
# LOGNAME (PostgreSQL's programs refuse root; libpq reads ~/.pgpass). AS_VCAP
# is the same prefix as an array, for a background start whose $! must be
# the program's own pid (each word of it execs the next).
AS_VCAP=(setpriv --reuid=vcap --regid=vcap --init-groups env HOME=/home/vcap USER=vcap LOGNAME=vcap)
as_vcap() {
  "${AS_VCAP[@]}" "$@"
}

# ctl_log MESSAGE: one timestamped line on stderr (ctl scripts send it to their log).
ctl_log() {
  echo "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) $(basename "$0")[$$]: $*" >&2
}

# process_gone PID: no such process, or only its zombie is left.
process_gone() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  [[ "${stat#*) }" == Z* ]]
}

# pid_running PIDFILE NAME: the pidfile names a live (not zombie) process called NAME.
pid_running() {
  local pidfile=$1 name=$2 pid stat
  [[ -s "$pidfile" ]] || return 1
  pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
  [[ -n "$pid" ]] || return 1
  process_gone "$pid" && return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s until it succeeds;
# fails after SECONDS, saying what it waited for.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      ctl_log "gave up after ${seconds}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# stop_pidfile PIDFILE NAME SECONDS: SIGTERM the process, wait up to SECONDS,
# then SIGKILL; removes the pidfile. Returns 2 when SIGKILL was needed.
stop_pidfile() {
  local pidfile=$1 name=$2 seconds=$3 pid
  if ! pid_running "$pidfile" "$name"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
  ctl_log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for "$seconds" "$name (pid $pid) to exit" process_gone "$pid"; then
    ctl_log "$name (pid $pid) ignored SIGTERM for ${seconds}s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    return 2
  fi
  rm -f "$pidfile"
}
