#!/usr/bin/env bash
# The one test command (make test, .ci/run): installs what the tests need,
# builds nubo, runs every Go test (root-only tests run for real as root and
# must pass in CI), runs each fuzz target briefly, then drives a real
# `nubo serve` with the stock AWS CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test
export CGO_ENABLED=0
go build -o bin/nubo ./cmd/nubo
go vet ./...

echo "== go test"
# The microVM boot tests run alone afterwards: emulated guests (TCG) crawl
# when every core is busy with the other packages' tests.
go test -count=1 -timeout 20m $(go list ./... | grep -v /internal/microvm) 2>&1 | tee /tmp/nubo-go-test.log
status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "go test failed"; exit "$status"; }
go test -count=1 -timeout 10m ./internal/microvm

echo "== fuzz (briefly)"
fuzz_time=${NUBO_FUZZTIME:-8s}
for target in $(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' internal | sort -u | sed 's/func //'); do
  pkg=$(grep -rlE "^func ${target}\(" --include='*_test.go' internal | head -1 | xargs dirname)
  echo "-- $target ($pkg)"
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzz_time" "./$pkg" >/tmp/nubo-fuzz.log 2>&1 || { cat /tmp/nubo-fuzz.log; exit 1; }
done

echo "== aws cli smoke"
bash scripts/cli-smoke.sh

echo "== leak check"
bash scripts/leakcheck.sh
