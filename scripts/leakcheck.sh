#!/usr/bin/env bash
# leakcheck.sh: after the tests, nothing of nubo may remain on the host: no
# sandbox process, mount, loop device, cgroup, bridge, veth or firewall
# table, no microVM (QEMU or its launcher). Run by scripts/test.sh last; exits non-zero listing what it found.
set -uo pipefail
found=()
while read -r line; do found+=("mount: $line"); done < <(awk '$5 ~ /\/sandboxes\// {print $5}' /proc/self/mountinfo)
while read -r line; do found+=("loop: $line"); done < <(losetup -a 2>/dev/null | grep "/sandboxes/")
while read -r line; do found+=("cgroup: $line"); done < <(find /sys/fs/cgroup -maxdepth 7 -type d \( -name 'nubo-*' -o -name 'nubocgtest-*' \) 2>/dev/null)
while read -r line; do found+=("link: $line"); done < <(ip -d -o link 2>/dev/null | grep "alias nubo netenv" | awk '{print $2}')
while read -r line; do found+=("nft: $line"); done < <(nft list tables 2>/dev/null | awk '$3 ~ /^(nubo|n[tlm][0-9a-f]+|nbench)$/')
while read -r line; do found+=("iptables: $line"); done < <(iptables-save 2>/dev/null | grep -E '^:(NUBO|N[TLM][0-9A-F]+)-' )
while read -r line; do found+=("process: $line"); done < <(ps -eo pid=,args= | awk '$2 == "nubo-agent" || $2 == "nubo-spawner" || $2 == "nubo-vmm" || $3 == "nsbox-init" || ($2 ~ /qemu-system-x86_64$/ && $3 == "-M" && $4 ~ /^microvm/)')
if [ ${#found[@]} -gt 0 ]; then
  echo "leakcheck: left behind by the tests:" >&2
  printf '  %s\n' "${found[@]}" >&2
  exit 1
fi
echo "leakcheck: nothing left behind"
