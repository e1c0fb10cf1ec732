#!/usr/bin/env bash
# Installs what nubo and its tests need from Debian's packages, idempotently:
# nothing is fetched when everything is already there.
#   mkfs.ext4 (e2fsprogs)       /tmp volumes of the namespace sandbox
#   nft, iptables               environment network rules
#   iproute2, util-linux        test helpers (ip, nsenter, unshare)
#   awscli                      the stock AWS CLI v2 used by the CLI smoke test
#   nats-server                 the --nats-url test against a real server
#   python3, nodejs             the python3.x / nodejs runtimes (optional for serving)
#   python3-boto3               the AWS SDK Lambda's Python runtimes include, so that
#                               a function's `import boto3` works as there (with
#                               serving: when Debian's python3 is installed)
#   crun                        the OCI runtime `make bench` compares cold starts with (--bench)
#   qemu-system-x86, linux-image-cloud-amd64, cpio
#                               the microVM tier (--isolation microvm) and its
#                               tests (--test; --microvm installs only these
#                               for serving; the cloud kernel package adds a
#                               kernel to /boot, which is why `make run` does
#                               not install it by default)
set -euo pipefail
want=(e2fsprogs nftables iptables iproute2 util-linux ca-certificates)
if [ "${1:-}" = "--test" ]; then
  want+=(awscli nats-server python3 python3-boto3 busybox-static qemu-system-x86 linux-image-cloud-amd64 cpio)
elif [ -z "${1:-}" ] && [ -x /usr/bin/python3 ]; then
  want+=(python3-boto3)
fi
if [ "${1:-}" = "--bench" ]; then
  want+=(crun python3)
fi
if [ "${1:-}" = "--microvm" ]; then
  want+=(qemu-system-x86 linux-image-cloud-amd64)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from elsewhere than Debian's nodejs package: only install it
# when no node binary exists at all.
if { [ "${1:-}" = "--test" ] || [ "${1:-}" = "--bench" ]; } && ! command -v node >/dev/null 2>&1; then
  missing+=(nodejs)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
