#!/usr/bin/env bash
# Builds nubo into $1 (default bin/nubo): first the sandbox agent
# (cmd/nubo-agent), which nubo embeds, then nubo itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bin/nubo}
cd "$root"
export CGO_ENABLED=0
go build -trimpath -ldflags='-s -w' -o cmd/nubo/agent/nubo-agent ./cmd/nubo-agent
go build -o "$out" ./cmd/nubo
