// Package sandbox defines the execution backend interface — what an
// environment runs in — and its development implementation, the process
// backend. The namespace sandbox (package nsbox) and the microVM backend
// implement the same interface.
//
// A sandbox runs nubo's agent (package agent) as its first process and
// hands the host a connection to it (Conn); everything else (runtime,
// extensions, Runtime API) is the agent's business. A namespace sandbox
// splits the agent: its keeper runs inside, its supervisor (the Runtime
// API) in nubo serve, and Conn is the supervisor's in-process connection.
// The agent is nubo's own binary re-executed with NUBO_AGENT=1 (see
// reexec.go), so test binaries that import this package can act as agents
// too.
package sandbox

import (
	"context"
	"errors"
	"io"
)

// ErrNoRoom is wrapped by the errors of a Create refused because the
// backend's own capacity is taken by sandboxes that exist, idle
// environments' among them: the caller may shut some of those down and try
// again. Such an error also carries the throttle to answer if it cannot.
var ErrNoRoom = errors.New("sandbox: no room on this node")

// Spec describes the sandbox one execution environment needs.
type Spec struct {
	// ID is unique per environment; it names cgroups, directories, links.
	ID      string
	Account string
	// MemoryMB is the function's MemorySize; EphemeralMB its /tmp size.
	MemoryMB    int
	EphemeralMB int
	// CodeDir holds the unpacked function code (mounted at /var/task);
	// LayersDir the merged layers (/opt), RuntimeDir nubo's runtime
	// interface clients (/var/runtime). All are read-only inside.
	CodeDir    string
	LayersDir  string
	RuntimeDir string
	// NoNetwork gives the sandbox no network at all.
	NoNetwork bool
}

// Paths say where the sandbox's processes see things.
type Paths struct {
	TaskRoot   string // /var/task
	OptDir     string // /opt
	RuntimeDir string // /var/runtime
	TmpDir     string // /tmp
	// RuntimeAPI is the host:port the agent serves the Runtime API on.
	RuntimeAPI string
	// UID and GID the runtime runs as; 0 keeps the agent's.
	UID, GID int
	// HostTaskRoot and HostOptDir are the same directories as the host sees them.
	HostTaskRoot, HostOptDir string
}

// Stats are resource figures of a sandbox.
type Stats struct {
	// MemoryPeak is the high-water mark of the sandbox's memory use over its
	// life: what Lambda's REPORT shows as Max Memory Used, which never
	// drops between invocations of a warm environment.
	MemoryPeak uint64
	// OOMKilled counts kernel OOM kills inside the sandbox.
	OOMKilled uint64
}

// Sandbox is one running sandbox.
type Sandbox interface {
	// ID names the sandbox in logs (and its cgroup, directory, veth).
	ID() string
	// Conn is the connection to the agent.
	Conn() io.ReadWriteCloser
	Paths() Paths
	// Freeze stops every process of the sandbox; Thaw resumes them.
	Freeze() error
	Thaw() error
	// AfterInit applies what Lambda applies only once init is over (the CPU
	// quota: init runs unthrottled).
	AfterInit() error
	Stats() (Stats, error)
	// Done is closed when the sandbox's agent has exited.
	Done() <-chan struct{}
	// Destroy kills everything in the sandbox and removes all it created.
	Destroy() error
}

// PeakReader is a Sandbox that reads its memory peak alone, cheaper than
// Stats: an invocation that succeeded needs no OOM count, and its REPORT
// reads the peak every time.
type PeakReader interface {
	MemoryPeak() (uint64, error)
}

// MemoryPeak reads s's memory peak: alone where s can (PeakReader), else
// from its Stats.
func MemoryPeak(s Sandbox) (uint64, error) {
	if p, ok := s.(PeakReader); ok {
		return p.MemoryPeak()
	}
	st, err := s.Stats()
	return st.MemoryPeak, err
}

// Placed is a sandbox whose backend chooses the CPUs it runs on (see
// nsbox's placer): the environment says when each invocation starts and
// ends, and the backend may move the sandbox to a less busy CPU as one
// starts.
type Placed interface {
	InvocationStarted()
	InvocationEnded()
}

// HostCode is a Backend whose sandboxes see Spec.CodeDir and LayersDir
// themselves, as the host has them (bind mounts), not copies: a file nubo
// adds there later (compiled Python bytecode; see package pycache) reaches
// them, with the modification times of the host's files. The microVM tier
// copies the code into its guests instead.
type HostCode interface {
	SeesHostCode() bool
}

// SeesHostCode reports whether b's sandboxes see the host's code
// directories (see HostCode).
func SeesHostCode(b Backend) bool {
	h, ok := b.(HostCode)
	return ok && h.SeesHostCode()
}

// Expecting is a Backend that makes ahead what a sandbox it is told to
// expect will take (nsbox's shell pool): nubo tells it when a function
// is deployed or changed, since its next invoke starts a new environment.
// Expect must return at once; the work it starts is a guess and may be
// wasted.
type Expecting interface {
	Expect(spec Spec)
}

// Backend creates sandboxes.
type Backend interface {
	Name() string
	Create(ctx context.Context, spec Spec) (Sandbox, error)
	// Close destroys every sandbox still alive and what the backend made.
	Close() error
}

// ByAccount routes each account's sandboxes to a backend: Accounts names
// the accounts with a backend of their own, the rest go to Default.
type ByAccount struct {
	Default  Backend
	Accounts map[string]Backend
}

// For returns the backend of account's sandboxes.
func (r *ByAccount) For(account string) Backend {
	if b, ok := r.Accounts[account]; ok {
		return b
	}
	return r.Default
}

// Name implements Backend.
func (r *ByAccount) Name() string {
	names := r.Default.Name()
	seen := map[string]bool{names: true}
	for _, b := range r.Accounts {
		if !seen[b.Name()] {
			seen[b.Name()] = true
			names += "+" + b.Name()
		}
	}
	return names
}

// Create implements Backend.
func (r *ByAccount) Create(ctx context.Context, spec Spec) (Sandbox, error) {
	return r.For(spec.Account).Create(ctx, spec)
}

// Close implements Backend: every distinct backend closes once.
func (r *ByAccount) Close() error {
	done := map[Backend]bool{}
	var first error
	for _, b := range append([]Backend{r.Default}, mapValues(r.Accounts)...) {
		if done[b] {
			continue
		}
		done[b] = true
		if err := b.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func mapValues(m map[string]Backend) []Backend {
	out := make([]Backend, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	return out
}
