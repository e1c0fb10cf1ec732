// Package cgroup owns nubo's control groups: one per execution environment,
// limiting memory (the function's MemorySize, never swapped), CPU (a quota
// proportional to memory, one vCPU per 1769 MB, settable after init so init
// runs unthrottled), pids (at most MaxPids) and io weight; freezing the
// environment between invocations; reporting its peak memory and OOM kills
// for the REPORT line; and killing everything in it when it is retired.
//
// cgroup v1 (hybrid hosts: what nubo's dev and CI machines have) and cgroup
// v2 are both real implementations of one Manager/Cgroup pair. New picks one
// from the mounts (Detect); NewV1 and NewV2 take a filesystem root so tests
// can aim them at a fake cgroupfs. FakeManager records calls in memory for the
// tests of other packages.
//
// # Layout
//
// nubo never writes at a hierarchy's root. It builds its tree under the
// cgroup it was started in (on v1 per controller, since each hierarchy puts
// the daemon somewhere else), found through /proc/self/cgroup and
// /proc/self/mountinfo:
//
//	<self>/<prefix>-<pid>-<start>/             the manager's root, one per daemon process
//	<self>/<prefix>-<pid>-<start>/env-<name>   one environment
//	<self>/<prefix>-<pid>-<start>/daemon       v2 only: the leaf the daemon moves into
//
// <prefix> defaults to "nubo"; <pid> and <start> (the start time in clock
// ticks from /proc/<pid>/stat) name the owning process, so CleanupStale can
// tell the leftovers of a daemon killed with SIGKILL from the live tree of a
// sibling daemon sharing the same parent, even after pid reuse.
//
// On v2 the no-internal-processes rule forbids enabling controllers in a
// cgroup that holds processes, and the daemon itself sits in <self>; so,
// unless <self> is the hierarchy's true root (which is exempt), the daemon
// first moves into the daemon leaf, then enables memory, cpu, pids (and io
// where offered) in <self> and in its root. Close undoes this in reverse.
//
// # Invariants
//
//   - Every directory this package creates has "nubo" in its name or lies
//     under one that does, so leak checks can find them.
//   - Environment cgroups are leaves; no cgroup nubo creates holds processes
//     and enabled child controllers at once.
//   - pids.max is never above MaxPids, and an environment never swaps: v1
//     sets memory.memsw.limit_in_bytes to the memory limit (or swappiness 0
//     where swap accounting is off), v2 sets memory.swap.max to 0.
//   - A Cgroup is safe for concurrent use; Set may be called any number of
//     times.
package cgroup
