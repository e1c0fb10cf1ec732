package cgroup

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// MaxPids caps pids.max for every environment (Lambda's own limit).
	MaxPids = 1024
	// MBPerVCPU is the memory size that buys one full vCPU, as on Lambda.
	MBPerVCPU = 1769
	// CPUPeriod is the CFS bandwidth period used for every quota.
	CPUPeriod = 100 * time.Millisecond

	envPrefix  = "env-"
	daemonLeaf = "daemon"

	defaultPrefix        = "nubo"
	defaultFreezeTimeout = 5 * time.Second
	defaultKillTimeout   = 5 * time.Second
	rmdirTimeout         = 2 * time.Second
)

// ErrNotDelegated reports that the cgroup nubo was started in does not give
// it the controllers it needs (not mounted, not delegated, or blocked by
// other processes under cgroup v2's no-internal-processes rule).
var ErrNotDelegated = errors.New("cgroup controllers not available to nubo")

// Mode is the cgroup layout of the host.
type Mode int

// The layouts Detect can report. Hybrid (v1 controllers plus an empty
// unified hierarchy) is driven exactly like V1.
const (
	ModeNone Mode = iota
	ModeV1
	ModeHybrid
	ModeV2
)

func (m Mode) String() string {
	switch m {
	case ModeV1:
		return "v1"
	case ModeHybrid:
		return "hybrid"
	case ModeV2:
		return "v2"
	}
	return "none"
}

// Resources are the limits of one environment. Zero values mean: no memory
// limit, no CPU quota, MaxPids, io weight left alone.
type Resources struct {
	// MemoryBytes is the memory limit; swap is always disabled.
	MemoryBytes int64
	// CPUMilli is the CPU quota in thousandths of a vCPU (1000 = one vCPU);
	// 0 is unlimited, which is how init runs. See CPUMilliForMemory.
	CPUMilli int
	// PidsMax limits tasks (threads included); 0 or anything above MaxPids
	// means MaxPids.
	PidsMax int
	// IOWeight is a proportional io weight in cgroup v2's scale, 1-10000
	// (default 100); 0 leaves it alone. It is mapped onto v1's and BFQ's
	// narrower ranges and silently skipped where no weight file exists.
	IOWeight int
	// CPUWeight is a proportional CPU weight in cgroup v2's scale, 1-10000
	// (the kernel's default 100): cpu.weight on v2, cpu.shares on v1
	// (weight × 1024 / 100, at least 2). 0 leaves it alone. It orders
	// environments only when the CPUs are contended; unlike a quota it
	// never idles a CPU.
	CPUWeight int
}

func (r Resources) validate() error {
	switch {
	case r.MemoryBytes < 0:
		return fmt.Errorf("cgroup: negative memory limit %d", r.MemoryBytes)
	case r.CPUMilli < 0:
		return fmt.Errorf("cgroup: negative CPU quota %d", r.CPUMilli)
	case r.PidsMax < 0:
		return fmt.Errorf("cgroup: negative pids limit %d", r.PidsMax)
	case r.IOWeight < 0 || r.IOWeight > 10000:
		return fmt.Errorf("cgroup: io weight %d outside 1-10000", r.IOWeight)
	case r.CPUWeight < 0 || r.CPUWeight > 10000:
		return fmt.Errorf("cgroup: cpu weight %d outside 1-10000", r.CPUWeight)
	}
	return nil
}

// delta says which of a Set's settings to write.
type delta struct{ memory, quota, weight, pids, io bool }

// changes says which settings of r differ from prev, what the cgroup
// holds after the last Set (everything r sets when prev is nil: unknown).
// Skipping the rest matters on the cold path: a pooled sandbox gets its
// function's limits with one Set, where only the memory limit and the CPU
// weight change, and every cgroup file written costs tens of µs.
func (r Resources) changes(prev *Resources) delta {
	if prev == nil {
		return delta{memory: true, quota: true, weight: r.CPUWeight > 0, pids: true, io: r.IOWeight > 0}
	}
	return delta{
		memory: r.MemoryBytes != prev.MemoryBytes,
		quota:  r.CPUMilli != prev.CPUMilli,
		weight: r.CPUWeight > 0 && r.CPUWeight != prev.CPUWeight,
		pids:   r.pidsMax() != prev.pidsMax(),
		io:     r.IOWeight > 0 && r.IOWeight != prev.IOWeight,
	}
}

// after is what the cgroup holds once r is set over prev: the weights r
// leaves alone (0) keep their earlier values.
func (r Resources) after(prev *Resources) *Resources {
	n := r
	if prev != nil {
		if n.CPUWeight == 0 {
			n.CPUWeight = prev.CPUWeight
		}
		if n.IOWeight == 0 {
			n.IOWeight = prev.IOWeight
		}
	}
	return &n
}

func (r Resources) pidsMax() int {
	if r.PidsMax <= 0 || r.PidsMax > MaxPids {
		return MaxPids
	}
	return r.PidsMax
}

// quotaMicros returns the CFS quota for CPUMilli against CPUPeriod, or -1 for
// unlimited. The kernel refuses quotas below 1 ms.
func quotaMicros(milli int) int64 {
	if milli <= 0 {
		return -1
	}
	q := int64(milli) * CPUPeriod.Microseconds() / 1000
	return max(q, 1000)
}

// CPUMilliForMemory is Lambda's CPU allocation for a function of memoryMB:
// proportional to memory, one vCPU at MBPerVCPU, capped at the host's CPUs
// (hostCPUs <= 0 means no cap). It returns 0 (unlimited) for memoryMB <= 0.
func CPUMilliForMemory(memoryMB, hostCPUs int) int {
	if memoryMB <= 0 {
		return 0
	}
	m := (memoryMB*1000 + MBPerVCPU/2) / MBPerVCPU
	m = max(m, 10)
	if hostCPUs > 0 && m > hostCPUs*1000 {
		m = hostCPUs * 1000
	}
	return m
}

// v1Shares maps a v2 cpu weight (default 100) onto v1's cpu.shares
// (default 1024, at least 2).
func v1Shares(w int) int {
	return max(w*1024/100, 2)
}

// scaleWeight maps a v2 io weight (1-10000) linearly onto [lo, hi].
func scaleWeight(w, lo, hi int) int {
	return lo + (w-1)*(hi-lo)/9999
}

// Stats are an environment's counters.
type Stats struct {
	// MemoryCurrent is the memory charged now, in bytes.
	MemoryCurrent uint64
	// MemoryPeak is the highest charge, in bytes, since creation or the last
	// successful ResetPeak.
	MemoryPeak uint64
	// OOMKills counts processes the OOM killer killed for this cgroup's limit.
	OOMKills uint64
	// CPUUsageNanos is the CPU time consumed by all tasks, ever.
	CPUUsageNanos uint64
	// Pids is the number of tasks (threads included) now.
	Pids uint64
}

// Manager creates environment cgroups under the daemon's own cgroup.
type Manager interface {
	// Version is 1 or 2.
	Version() int
	// Create makes the cgroup env-<name> with limits r. name is a short
	// identifier: letters, digits, '.', '_' and '-'.
	Create(name string, r Resources) (Cgroup, error)
	// CleanupStale removes every tree of this prefix left under the
	// daemon's cgroup by a daemon that is gone, killing its processes first.
	CleanupStale() error
	// Close kills whatever remains in the manager's cgroups and removes its
	// tree, undoing the v2 delegation dance.
	Close() error
}

// Cgroup is one environment's control group.
type Cgroup interface {
	Name() string
	// Paths maps each controller to its directory (v2: the key "").
	Paths() map[string]string
	// AddProc moves the process pid (all its threads) into the cgroup.
	AddProc(pid int) error
	// OpenDir opens the cgroup directory for clone3's CLONE_INTO_CGROUP
	// (syscall.SysProcAttr UseCgroupFD/CgroupFD) so a child starts inside
	// the cgroup with no window outside it. v2 only; on v1 it returns an
	// error wrapping errors.ErrUnsupported. The caller closes the file.
	OpenDir() (*os.File, error)
	// Set applies r; callable at any time, any number of times.
	Set(r Resources) error
	// Freeze stops every task and returns once the kernel reports the
	// cgroup frozen; on timeout it thaws again and fails.
	Freeze() error
	Thaw() error
	Stats() (Stats, error)
	// Memory reads only what an invocation's REPORT needs, on every
	// invocation: the memory peak and the OOM kill count (cheaper than Stats).
	Memory() (peak, oomKills uint64, err error)
	// MemoryPeak is Memory without the OOM kill count, which only a failed
	// invocation needs: one file read fewer.
	MemoryPeak() (uint64, error)
	// ResetPeak restarts MemoryPeak from the current usage. Where the kernel
	// cannot (v2 before Linux 6.12) it returns an error wrapping
	// errors.ErrUnsupported and MemoryPeak stays the lifetime peak, which
	// is also what Lambda's "Max Memory Used" shows for a warm environment.
	ResetPeak() error
	// Procs lists the processes in the cgroup and below.
	Procs() ([]int, error)
	// Kill SIGKILLs every process in the cgroup and below and waits until
	// none remains.
	Kill() error
	// Delete removes the cgroup; it must hold no process (Kill first).
	Delete() error
	// Confine moves pids (the runtime and what else runs the function's
	// code) under the CPU quota cpuMilli while the rest of the cgroup (the
	// agent) stays unthrottled, so the platform's own work is not charged
	// to the function. v1: a "runtime" child in the cpu hierarchy carries
	// the quota. v2 cannot have the agent in a cgroup whose children get
	// controllers, so there the quota covers the whole cgroup.
	Confine(pids []int, cpuMilli int) error
}

// Options configure a Manager.
type Options struct {
	// Prefix names the manager's root (<prefix>-<pid>-<start>) and is what
	// CleanupStale looks for; it must contain "nubo". Default "nubo".
	Prefix string
	// Self overrides the daemon's cgroup path (relative to each hierarchy's
	// root), normally read from /proc/self/cgroup. For fake cgroupfs tests.
	Self string
	// MoveSiblings, on cgroup v2, moves the other processes that share the
	// daemon's starting cgroup (a container's init, a shell) into the daemon
	// leaf together with the daemon, instead of failing; Close moves them
	// back.
	MoveSiblings bool
	// FreezeTimeout bounds Freeze; default 5 s.
	FreezeTimeout time.Duration
	// KillTimeout bounds Kill; default 5 s.
	KillTimeout time.Duration
	// Logger receives diagnostics; default discards.
	Logger *slog.Logger

	// sys replaces the kernel-facing writes, for fake cgroupfs tests.
	sys *sysfs
	// controllers, when non-nil, replaces the v2 controllers nubo requires,
	// so tests can drive v2's core files on a hybrid host.
	controllers []string
}

func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if !nameChars(o.Prefix, false) || !strings.Contains(o.Prefix, "nubo") {
		return o, fmt.Errorf("cgroup: prefix %q must contain \"nubo\" and only letters, digits, '.', '_', '-'", o.Prefix)
	}
	if o.FreezeTimeout <= 0 {
		o.FreezeTimeout = defaultFreezeTimeout
	}
	if o.KillTimeout <= 0 {
		o.KillTimeout = defaultKillTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.sys == nil {
		o.sys = realSys
	}
	return o, nil
}

// checkName accepts 1–128 letters, digits, '.', '_', '-', the first a
// letter or digit.
func checkName(name string) error {
	if len(name) > 128 || !nameChars(name, true) {
		return fmt.Errorf("cgroup: invalid environment name %q", name)
	}
	return nil
}

// nameChars reports whether s is non-empty and only letters, digits, '.',
// '_' and '-' (with alnumFirst, starting with a letter or digit). Checked
// by hand, not by regexp: every process of this binary compiles its
// package-level regexps at start, sandbox agents included.
func nameChars(s string, alnumFirst bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 && alnumFirst || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// Detect reports the host's cgroup layout from /proc/self/mountinfo.
func Detect() (Mode, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return ModeNone, err
	}
	m := detectMode(mounts)
	if m == ModeNone {
		return m, fmt.Errorf("cgroup: no cgroup filesystem mounted: %w", ErrNotDelegated)
	}
	return m, nil
}

// New returns the Manager for the host's layout: v1 for V1 and Hybrid, v2
// for V2.
func New(opts Options) (Manager, error) {
	mode, err := Detect()
	if err != nil {
		return nil, err
	}
	if mode == ModeV2 {
		return NewV2("", opts)
	}
	return NewV1("", opts)
}

// parseRootName reads a root of prefix's kind, "PREFIX-PID-START", into
// its owner's pid and start time (strconv's unsigned parsers take digits
// only: no sign, no underscores in base 10).
func parseRootName(prefix, name string) (int, uint64, bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return 0, 0, false
	}
	p, s, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	pid, err1 := strconv.ParseUint(p, 10, 31)
	start, err2 := strconv.ParseUint(s, 10, 64)
	return int(pid), start, err1 == nil && err2 == nil
}
