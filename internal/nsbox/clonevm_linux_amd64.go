//go:build !race

package nsbox

import "syscall"

// shareMemory: sandboxes' inits are cloned with CLONE_VM here (see
// cloneVM in clonevm_linux_amd64.s).
//
// A fork copies the spawner's page tables, and until the child execs,
// every page the spawner writes is copied first and its old mapping
// flushed from the other CPUs' TLBs; the child's exec then tears the copy
// down. The child waits for nubo serve's release for milliseconds, so
// under a burst the spawner writes its heap while one child or more still
// shares it: figure 4 put 41 % of the spawner's CPU in those copies,
// flushes and teardowns, about 7.5 ms per sandbox (docs/performance.md,
// "Where it stands (session 18)"). A child that shares the memory costs
// none of it. It needs a stack of its own (it runs beside the spawner,
// not instead of it as a vfork child does), which only assembly can
// switch to; and nothing it reads may be freed or reused before it has
// exec'd (forkInit's exec watch).
//
// What sharing the memory brings with it:
//   - The first child's credential change (setresgid, setresuid to the
//     sandbox's root) marks the shared memory not dumpable, for good: it
//     is the spawner's. From then on the spawner writes no core dump, and
//     only a process with CAP_SYS_PTRACE (root) may read its /proc files
//     or trace it. Making it dumpable again would let the sandbox's host
//     uid trace a child not yet exec'd, and through it the spawner.
//   - Until the child's exec, a kill of the child for memory kills every
//     process that shares its memory, the spawner too. Before its exec
//     the child is charged for little but the kernel objects it makes
//     (mounts, a socket, the seccomp filter; its page faults go to the
//     spawner's cgroup, the memory's owner), in a new cgroup whose limit
//     is the function's memory, 128 MB at least.
const shareMemory = true

// cloneVM is implemented in clonevm_linux_amd64.s.
func cloneVM(args *cloneArgs, size uintptr, p *initProg) (r uintptr, errno syscall.Errno)
