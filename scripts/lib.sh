# Helpers shared by the test and benchmark scripts (sourced: `. "$(dirname "$0")/lib.sh"`).

# A free TCP port on the loopback interface.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 30 s for URL to answer with a success status.
wait_http() { for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

# A RabbitMQ vhost of one's own, where guest may do everything.
new_vhost() { rabbitmqctl add_vhost "$1" >/dev/null && rabbitmqctl set_permissions -p "$1" guest ".*" ".*" ".*" >/dev/null; }

# stop_all VHOST DIR PID...: stops the processes, deletes the vhost and the work directory.
stop_all() {
  local vhost=$1 dir=$2; shift 2
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
