#!/usr/bin/env bash
# Run one load-test scenario of docs/benchmarks.md from scratch: build the
# programs, start a tether-server on loopback (SQLite and files in
# $BENCH_DIR/data), enroll the scenario's agents once (kept in
# $BENCH_DIR/ids-GROUP.jsonl for the next runs), run tether-loadtest with
# --baseline, write docs/results/SCENARIO.json and print the table, then stop the
# server.
#
#   scripts/loadtest/run.sh idle-10k        # one scenario
#   scripts/loadtest/run.sh all             # every scenario, one after the other
#   go run ./scripts/benchplot -o docs/img docs/results/*.json   # the plots
#
# Scenarios: idle-10k idle-17k idle-50k idle-100k ingest-1k past-limit.
# Bounded: every run ends by itself (--duration, --ramp-timeout,
# --fanout-timeout); traffic stays on 127.0.0.0/8.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/tether-bench}
RESULTS=${RESULTS:-$root/docs/results}
DURATION=${DURATION:-60s}
mkdir -p "$BENCH_DIR" "$RESULTS"

scenario_flags() {
	case $1 in
	idle-10k) echo "--agents 10000 --group lt-10k --command-rate 20 --fanout" ;;
	# Each agent its own TLS connection, up to what one process may open
	# here (ulimit -n 20000 in the server and in the load program).
	idle-17k) echo "--agents 17000 --group lt-17k --command-rate 20 --fanout --source-ips 127.0.0.2-127.0.0.9" ;;
	# Past the open-file limit, agents share connections (each its own
	# identity, token and long-poll).
	idle-50k) echo "--agents 50000 --group lt-50k --agents-per-connection 3 --command-rate 20 --fanout --source-ips 127.0.0.2-127.0.0.9" ;;
	idle-100k) echo "--agents 100000 --group lt-100k --agents-per-connection 6 --command-rate 20 --fanout --source-ips 127.0.0.2-127.0.0.9 --fanout-timeout 5m" ;;
	ingest-1k) echo "--agents 1000 --group lt-1k --events-per-second 500 --event-size 200 --command-rate 5" ;;
	past-limit) echo "--agents 3000 --group lt-3k --command-rate 10 --ramp-timeout 60s" ;;
	*) return 1 ;;
	esac
}

server_flags() {
	case $1 in
	# A node limited to 2,000 connections, 1,500 waiting polls.
	past-limit) echo "--max-connections 2000 --max-waiting-polls 1500" ;;
	# Agents sharing connections: more waiting polls than connections.
	idle-50k | idle-100k) echo "--max-waiting-polls 110000" ;;
	*) echo "" ;;
	esac
}

run_one() {
	local name=$1 flags
	flags=$(scenario_flags "$name") || { echo "unknown scenario $name (see $0)" >&2; exit 2; }
	local data=$BENCH_DIR/data log=$BENCH_DIR/server-$name.log
	# shellcheck disable=SC2046
	"$root/bin/tether-server" run --data-dir "$data" --comms-addr 127.0.0.1:7443 --api-addr 127.0.0.1:7444 \
		$(server_flags "$name") >"$log" 2>&1 &
	local pid=$!
	trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' RETURN
	for _ in $(seq 100); do
		[ -s "$data/admin.token" ] && curl -skf https://127.0.0.1:7444/readyz >/dev/null && break
		sleep 0.2
	done
	local common=(--server https://127.0.0.1:7444 --token "$(cat "$data/admin.token")" --ca-cert "$data/tls/ca.crt")
	local group
	group=$(sed -E 's/.*--group ([^ ]+).*/\1/' <<<"$flags")
	# Enroll once (the server keeps them in its data directory), then measure
	# a fresh server process.
	"$root/bin/tether-loadtest" "${common[@]}" $flags --identities "$BENCH_DIR/ids-$group.jsonl" --enroll-only
	kill "$pid"; wait "$pid" 2>/dev/null || true
	"$root/bin/tether-server" run --data-dir "$data" --comms-addr 127.0.0.1:7443 --api-addr 127.0.0.1:7444 \
		$(server_flags "$name") >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do curl -skf https://127.0.0.1:7444/readyz >/dev/null && break; sleep 0.2; done
	# shellcheck disable=SC2086
	"$root/bin/tether-loadtest" "${common[@]}" $flags --identities "$BENCH_DIR/ids-$group.jsonl" \
		--duration "$DURATION" --settle 10s --server-pid "$pid" --baseline --label "$name" \
		--report-file "$RESULTS/$name.json"
}

[ $# -eq 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
make -C "$root" build >/dev/null
if [ "$1" = all ]; then
	for s in idle-10k idle-17k idle-50k idle-100k ingest-1k past-limit; do run_one "$s"; done
else
	run_one "$1"
fi
