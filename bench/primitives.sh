#!/usr/bin/env bash
# primitives.sh measures what the kernel operations an environment cannot
# do without cost on this machine, alone: machine-wide busy CPU time
# (/proc/stat, so kernel work done in workers, such as a network
# namespace's teardown, counts) per operation, over N runs in a shell loop.
# Each figure includes the loop's own fork+exec, which the first row
# measures. Run as root, on a quiet machine:
#
#   bash bench/primitives.sh [N]     (default 300)
#
# The echo bootstrap (bench/.bin/echo-bootstrap, `make bench` builds it)
# runs outside any sandbox until its runtime client is up and fails to
# reach a Runtime API: the start of the function's own process.
set -euo pipefail
n=${1:-300}
root=$(cd "$(dirname "$0")/.." && pwd)
hello=$(mktemp -d)
trap 'rm -rf "$hello"' EXIT
printf 'package main\n\nfunc main() {}\n' >"$hello/main.go"
(cd "$hello" && printf 'module hello\n\ngo 1.26\n' >go.mod && CGO_ENABLED=0 go build -ldflags='-s -w' -o hello .)
measure() {
	python3 - "$n" "$1" "$2" <<'PY'
import os, subprocess, sys, time
n, label, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tick = os.sysconf("SC_CLK_TCK")
def busy():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (v[0] + v[1] + v[2] + v[5] + v[6]) * 1000 / tick
time.sleep(0.5)
b0, t0 = busy(), time.time()
subprocess.run(["bash", "-c", f"for i in $(seq {n}); do {cmd}; done"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t1 = time.time()
time.sleep(1)  # kernel work that outlives the process (namespace teardown)
b1 = busy()
print(f"{label:44s} {(b1 - b0) / n:6.2f} ms CPU/op   {(t1 - t0) / n * 1000:6.2f} ms wall/op")
PY
}
measure "fork+exec /bin/true (the loop itself)" /bin/true
measure "unshare, no namespace" "unshare /bin/true"
measure "unshare --net" "unshare -n /bin/true"
measure "unshare --pid --fork" "unshare -p -f /bin/true"
measure "unshare --mount" "unshare -m /bin/true"
measure "unshare --uts --ipc" "unshare -u -i /bin/true"
measure "unshare net+pid+mount+uts+ipc" "unshare -n -p -m -u -i -f /bin/true"
measure "an empty Go program" "$hello/hello"
if [[ -x $root/bench/.bin/echo-bootstrap ]]; then
	measure "echo bootstrap to its first Runtime API call" "AWS_LAMBDA_RUNTIME_API=127.0.0.1:1 $root/bench/.bin/echo-bootstrap"
fi
