# shellcheck shell=bash
# Helpers shared by cluster.sh (the control plane) and node.sh (the real node): messages, and background
# components with a PID file and a log each in $run_dir.
# The caller sets: who (the prefix of messages), run_dir (PID files and logs), bin and addons (where binaries are).

log() { echo "$who: $*" >&2; }
die() { echo "$who: error: $*" >&2; exit 1; }

running() { # component -> 0 when its recorded PID is alive and is that component
  local pidf="$run_dir/$1.pid"
  [[ -f "$pidf" ]] || return 1
  local pid; pid=$(cat "$pidf")
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q -- "$1" "/proc/$pid/cmdline" 2>/dev/null
}

start() { # name, args...
  local name="$1"; shift
  running "$name" && return 0
  local exe="$bin/$name"; [[ -x "$exe" ]] || exe="$addons/bin/$name"; [[ -x "$exe" ]] || exe="$(command -v "$name")"
  # setsid: the component outlives the shell that started it and never holds its terminal.
  setsid "$exe" "$@" >"$run_dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$run_dir/$name.pid"
}

stop() { # name: TERM, five seconds, then KILL
  local name="$1" pid
  if running "$name"; then
    pid=$(cat "$run_dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $name ($pid)"
  fi
  rm -f "$run_dir/$name.pid"
}

wait_for() { # description, seconds, command...
  local what="$1" secs="$2"; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < end )) || die "$what did not come up in ${secs}s; see $run_dir/*.log"
    sleep 0.3
  done
}
