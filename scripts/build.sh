#!/usr/bin/env bash
# Builds nubo into $1 (default bin/nubo): first the sandbox agent
# (cmd/nubo-agent), which nubo embeds, then nubo itself. Both get one random
# build stamp: nubo uses an embedded agent only if it carries its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bin/nubo}
cd "$root"
export CGO_ENABLED=0
stamp=nubo-build-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
x="-X github.com/nubo-dev/nubo/internal/nsbox.BuildStamp=$stamp"
# Built under a dot name, which go:embed's directory pattern skips, then
# renamed in the same directory: other builds reading the tree never see a
# half-written file.
tmp=cmd/nubo/agent/.nubo-agent.$$
trap 'rm -f "$tmp"' EXIT
go build -trimpath -ldflags="-s -w $x" -o "$tmp" ./cmd/nubo-agent
mv -f "$tmp" cmd/nubo/agent/nubo-agent
go build -ldflags="$x" -o "$out" ./cmd/nubo
