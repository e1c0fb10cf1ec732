// Package nsbox is nubo's default execution backend: every environment runs
// in a sandbox built from Linux namespaces by nubo itself, pure Go, without
// Docker or any container runtime (DESIGN.md §4, §7).
//
// How a sandbox is made (the runc pattern, without cgo):
//
//  1. The host prepares: a directory per environment, a /tmp volume (an ext4
//     image on a loop device, capped at EphemeralStorage, disk-backed so it
//     is not charged to the function's memory; copied from an empty file
//     system made once per size, and mounted detached, in no mount table;
//     tmpvol_linux.go), and the environment's cgroup (package cgroup).
//  2. The host's spawner (spawner.go), a small helper process started once
//     in a mount namespace of its own, builds there the template root every
//     sandbox starts from (template_linux.go): a read-only tmpfs with the
//     host userland bound read-only, a minimal /dev, the mount points of
//     what each sandbox brings, and a proc of an empty pid namespace; it
//     pivots into it, and the host's root is gone from its namespace. It
//     clones each sandbox's first process in new user, mount, pid, net,
//     uts and ipc namespaces: its mount namespace is a copy of the
//     template, whose mounts it cannot unmount or remount. Cloning from the
//     small helper instead of nubo serve spares nubo a fork of its large
//     heap. Every sandbox dies with the spawner (parent-death signal), as
//     the spawner dies with nubo. The user namespace maps the sandbox's ids
//     0–999 onto a host range owned by no one and unique to the environment
//     (see slots).
//  3. The child runs the sandbox's init, a list of system calls the
//     spawner computed before the clone (initprog_linux.go: Go code cannot
//     run between fork and exec). It waits for its id maps, makes its own
//     /proc and turns IPv6 off through it (earlyProc), then waits for the
//     host's release: the host meanwhile places it in its cgroup (v1; on
//     v2 it was cloned straight into it) and wires its network (package
//     netenv).
//  4. Released, the init enters a new cgroup namespace rooted at its cgroup,
//     adds its own mounts to the template (a generated /etc, /var/runtime
//     read-only, the /tmp volume, its /proc masked, a private devpts and
//     /dev/shm; /var/task and /opt left empty; mountSandbox), brings up lo,
//     sets the hostname, switches to SCHED_OTHER (see
//     normalScheduling), widens its timer slack (Go runtimes then wake far
//     less often; see timerSlack), settles on its home CPU when the backend
//     places sandboxes (see placer), drops to uid/gid 993 with no
//     capabilities (bounding set cleared), sets no_new_privs, loads the
//     seccomp filter the host compiled, and execs the agent (package agent):
//     the small agent executable nubo embeds (cmd/nubo-agent, run from a
//     sealed memfd; agentexe.go), or nubo's own binary when it has none. The
//     agent is PID 1 of the pid namespace. By default it is only the agent's
//     keeper (package agent's Keep): it listens on the Runtime API's address
//     in the sandbox, makes the pipes the runtime's output goes to, and
//     hands the listener and the pipes' read ends to the host over its
//     connection (SCM_RIGHTS), to start, signal and reap processes on the
//     host's word from then on (supervise.go). This is a shell, made ahead
//     of demand (pool.go).
//  5. When a function gets the shell, the host moves detached, read-only
//     mount trees of its code and layers onto /var/task and /opt from a
//     thread of its own that joins the sandbox's mount namespace, sets the
//     memory limit, and starts the agent's supervisor in nubo serve
//     (package agent's Supervise), which gets Start: the runtime the keeper
//     starts reaches the Runtime API in nubo serve through the handed-over
//     listener, with no process in between. Nothing privileged is left
//     inside. (With Config.WholeAgent the agent inside is whole and gets
//     Start itself.)
//
// Everything of a sandbox dies with its PID 1: killing it kills the pid
// namespace, and with it the mount and network namespaces and the veth
// peer. The host then removes the cgroup, the veth, the /tmp volume and the
// directory. After a crash, New finds and removes what the previous run
// left (Cleanup).
package nsbox
