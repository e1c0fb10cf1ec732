package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The v1 controllers nubo joins. cpuset and devices are left alone: an
// environment inherits the daemon's cpuset, and device access is closed by
// the sandbox's namespaces and seccomp, not by the devices controller.
var (
	v1Required = []string{"memory", "cpu", "pids", "freezer"}
	v1Optional = []string{"cpuacct", "blkio"}
)

type v1Manager struct {
	opts Options
	sys  *sysfs
	log  *slog.Logger

	self     map[string]string // controller -> the daemon's cgroup dir
	rootName string
	root     map[string]string // controller -> the manager's root dir
	// cpuCapMilli is the tightest CPU quota among the daemon's ancestors in
	// the cpu hierarchy (0: none). v1, unlike v2, rejects with EINVAL a
	// child quota above an ancestor's, so quotas are clamped to it.
	cpuCapMilli int

	mu     sync.Mutex
	envs   map[string]*v1Cgroup
	closed bool
}

// NewV1 returns a cgroup v1 Manager. fsRoot "" finds each controller's
// hierarchy in /proc/self/mountinfo; otherwise each controller is expected
// at fsRoot/<controller> (a fake cgroupfs, or /sys/fs/cgroup with its usual
// symlinks for co-mounted controllers).
func NewV1(fsRoot string, opts Options) (Manager, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	mounts := map[string]mountEntry{}
	if fsRoot == "" {
		all, err := readMountinfo()
		if err != nil {
			return nil, err
		}
		mounts = v1Mounts(all)
	} else {
		for _, c := range append(slices.Clone(v1Required), v1Optional...) {
			if d := filepath.Join(fsRoot, c); exists(d) {
				mounts[c] = mountEntry{root: "/", point: d, fstype: "cgroup"}
			}
		}
	}
	var pc procCgroup
	if opts.Self == "" {
		if pc, err = readProcCgroup(); err != nil {
			return nil, err
		}
	}
	m := &v1Manager{
		opts: opts, sys: opts.sys, log: opts.Logger,
		self: map[string]string{}, root: map[string]string{},
		envs: map[string]*v1Cgroup{},
	}
	for _, c := range append(slices.Clone(v1Required), v1Optional...) {
		mnt, ok := mounts[c]
		if !ok {
			if slices.Contains(v1Required, c) {
				return nil, fmt.Errorf("cgroup v1: %s controller is not mounted: %w", c, ErrNotDelegated)
			}
			continue
		}
		selfPath := opts.Self
		if selfPath == "" {
			if selfPath, ok = pc.v1[c]; !ok {
				return nil, fmt.Errorf("cgroup v1: /proc/self/cgroup has no %s line: %w", c, ErrNotDelegated)
			}
		}
		dir := filepath.Join(mnt.point, relToMount(selfPath, mnt.root))
		if !exists(dir) {
			return nil, fmt.Errorf("cgroup v1: own %s cgroup %s is not visible: %w", c, dir, ErrNotDelegated)
		}
		m.self[c] = dir
	}
	pid, start, err := selfIdentity()
	if err != nil {
		return nil, err
	}
	m.rootName = fmt.Sprintf("%s-%d-%d", opts.Prefix, pid, start)
	for c, d := range m.self {
		m.root[c] = filepath.Join(d, m.rootName)
	}
	var made []string
	for _, d := range uniqueDirs(m.root) {
		if err := m.sys.mkdir(d); err != nil {
			for _, r := range made {
				_ = m.sys.removeDir(r)
			}
			return nil, fmt.Errorf("cgroup v1: create root: %w", err)
		}
		made = append(made, d)
	}
	m.cpuCapMilli = v1AncestorCPUCap(m.self["cpu"], mounts["cpu"].point)
	return m, nil
}

// v1AncestorCPUCap walks from dir up to the hierarchy's mount point and
// returns the smallest quota found, in milli-vCPUs (0: none).
func v1AncestorCPUCap(dir, top string) int {
	capMilli := 0
	for d := dir; ; d = filepath.Dir(d) {
		q, err1 := readInt(filepath.Join(d, "cpu.cfs_quota_us"))
		p, err2 := readInt(filepath.Join(d, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil && q > 0 && p > 0 {
			if c := int(q * 1000 / p); capMilli == 0 || c < capMilli {
				capMilli = c
			}
		}
		if d == top || len(d) <= len(top) || d == filepath.Dir(d) {
			return capMilli
		}
	}
}

// uniqueDirs returns the distinct directories of a controller map: co-mounted
// controllers (cpu,cpuacct) share one.
func uniqueDirs(m map[string]string) []string {
	var out []string
	for _, d := range m {
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (m *v1Manager) Version() int { return 1 }

func (m *v1Manager) Create(name string, r Resources) (Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("cgroup: manager closed")
	}
	if _, dup := m.envs[name]; dup {
		return nil, fmt.Errorf("cgroup: environment %q: %w", name, fs.ErrExist)
	}
	cg := &v1Cgroup{m: m, name: name, dirs: map[string]string{}}
	for c, d := range m.root {
		cg.dirs[c] = filepath.Join(d, envPrefix+name)
	}
	for _, d := range uniqueDirs(cg.dirs) {
		if err := m.sys.mkdir(d); err != nil {
			_ = cg.remove()
			return nil, fmt.Errorf("cgroup v1: create %s: %w", name, err)
		}
	}
	if err := cg.Set(r); err != nil {
		_ = cg.remove()
		return nil, err
	}
	m.envs[name] = cg
	return cg, nil
}

// killDirs kills everything under the given per-controller dirs, using the
// freezer dir among them to hold the set still.
func (m *v1Manager) killDirs(dirs map[string]string) error {
	fz := dirs["freezer"]
	return killAll(m.opts.KillTimeout,
		func() ([]int, error) { return treeProcs(uniqueDirs(dirs)...) },
		func() error {
			if fz == "" || !exists(fz) {
				return errors.New("no freezer")
			}
			return v1Freeze(m.sys, fz, min(time.Second, m.opts.FreezeTimeout))
		},
		func() error { return v1ThawTree(m.sys, fz) })
}

// v1ThawTree thaws dir and every cgroup below it. Thawing a v1 parent does
// not thaw a child frozen on its own (freezer.self_freezing), and a task
// frozen there would hold its SIGKILL forever; idle environments are
// exactly such children when the whole tree is killed.
func v1ThawTree(sys *sysfs, dir string) error {
	var errs []error
	var walk func(string)
	walk = func(d string) {
		if err := v1Thaw(sys, d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		subs, _ := subdirs(d)
		for _, s := range subs {
			walk(s)
		}
	}
	walk(dir)
	return errors.Join(errs...)
}

func (m *v1Manager) CleanupStale() error {
	stale := map[string]bool{}
	for _, self := range uniqueDirs(m.self) {
		ents, err := os.ReadDir(self)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !e.IsDir() || e.Name() == m.rootName {
				continue
			}
			if owner, start, ok := parseRootName(m.opts.Prefix, e.Name()); ok && !ownerAlive(owner, start) {
				stale[e.Name()] = true
			}
		}
	}
	var errs []error
	for name := range stale {
		dirs := map[string]string{}
		for c, self := range m.self {
			dirs[c] = filepath.Join(self, name)
		}
		m.log.Debug("cgroup: removing stale tree", "name", name)
		if err := m.killDirs(dirs); err != nil {
			errs = append(errs, fmt.Errorf("cgroup v1: stale %s: %w", name, err))
			continue
		}
		for _, d := range uniqueDirs(dirs) {
			errs = append(errs, m.sys.removeTree(d))
		}
	}
	return errors.Join(errs...)
}

func (m *v1Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.envs = map[string]*v1Cgroup{}
	m.mu.Unlock()
	if err := m.killDirs(m.root); err != nil {
		return err
	}
	var errs []error
	for _, d := range uniqueDirs(m.root) {
		errs = append(errs, m.sys.removeTree(d))
	}
	return errors.Join(errs...)
}

type v1Cgroup struct {
	m    *v1Manager
	name string
	dirs map[string]string
	mu   sync.Mutex // serialises Set, freezer transitions
	// applied is what the last Set wrote, all of it (nil: unknown); a
	// Set writes only what differs (see Resources.changes).
	applied *Resources

	// The files Memory reads on every invocation, kept open.
	memOnce     sync.Once
	peakF, oomF keptFile
}

func (c *v1Cgroup) Name() string { return c.name }

func (c *v1Cgroup) Paths() map[string]string {
	out := make(map[string]string, len(c.dirs))
	for k, v := range c.dirs {
		out[k] = v
	}
	return out
}

func (c *v1Cgroup) AddProc(pid int) error {
	// Every hierarchy must get the process: each controller only sees
	// tasks attached in its own hierarchy.
	for _, d := range uniqueDirs(c.dirs) {
		if err := c.m.sys.write(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup v1: add %d to %s: %w", pid, c.name, err)
		}
	}
	return nil
}

func (c *v1Cgroup) OpenDir() (*os.File, error) {
	return nil, fmt.Errorf("cgroup v1: CLONE_INTO_CGROUP needs cgroup v2: %w", errors.ErrUnsupported)
}

func (c *v1Cgroup) Set(r Resources) error {
	if err := r.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.applied
	ch := r.changes(prev)
	c.applied = nil
	w := c.m.sys.write
	if ch.memory {
		if err := c.setMemory(r.MemoryBytes); err != nil {
			return err
		}
	}

	cpu := c.dirs["cpu"]
	milli := r.CPUMilli
	if capm := c.m.cpuCapMilli; capm > 0 && milli > capm {
		milli = capm
	}
	if ch.quota {
		period := strconv.FormatInt(CPUPeriod.Microseconds(), 10)
		if cur, err := readString(filepath.Join(cpu, "cpu.cfs_period_us")); err != nil || cur != period {
			if err := w(filepath.Join(cpu, "cpu.cfs_period_us"), period); err != nil {
				return err
			}
		}
		if err := w(filepath.Join(cpu, "cpu.cfs_quota_us"), strconv.FormatInt(quotaMicros(milli), 10)); err != nil {
			return err
		}
	}
	if ch.weight {
		if err := w(filepath.Join(cpu, "cpu.shares"), strconv.Itoa(v1Shares(r.CPUWeight))); err != nil {
			return err
		}
	}

	if ch.pids {
		if err := w(filepath.Join(c.dirs["pids"], "pids.max"), strconv.Itoa(r.pidsMax())); err != nil {
			return err
		}
	}

	if blk, ok := c.dirs["blkio"]; ok && ch.io {
		// blkio.weight (CFQ, gone since 5.0) takes 10-1000; BFQ's own file
		// takes 1-1000. Either or neither may exist.
		for _, f := range []struct {
			name   string
			lo, hi int
		}{{"blkio.weight", 10, 1000}, {"blkio.bfq.weight", 1, 1000}} {
			p := filepath.Join(blk, f.name)
			if !exists(p) {
				continue
			}
			if err := w(p, strconv.Itoa(scaleWeight(r.IOWeight, f.lo, f.hi))); err != nil {
				return err
			}
		}
	}
	c.applied = r.after(prev)
	return nil
}

// setMemory sets the memory limit and, where swap accounting exists, the
// memory+swap limit to the same value so nothing is ever swapped. The kernel
// insists memsw >= limit at every moment, so memsw goes first when the limit
// grows and last when it shrinks.
func (c *v1Cgroup) setMemory(bytes int64) error {
	mem := c.dirs["memory"]
	limit := "-1"
	if bytes > 0 {
		limit = strconv.FormatInt(bytes, 10)
	}
	w := c.m.sys.write
	limitPath := filepath.Join(mem, "memory.limit_in_bytes")
	memsw := filepath.Join(mem, "memory.memsw.limit_in_bytes")
	setLimit := func() error {
		err := w(limitPath, limit)
		if errors.Is(err, syscall.EBUSY) {
			// The kernel could not reclaim down to the new limit.
			usage, _ := readUint(filepath.Join(mem, "memory.usage_in_bytes"))
			return fmt.Errorf("cgroup v1: memory limit %s below current usage %d: %w", limit, usage, err)
		}
		return err
	}
	if !exists(memsw) {
		if err := setLimit(); err != nil {
			return err
		}
		// Without swap accounting the only per-cgroup brake on swapping
		// is swappiness 0 (and a host without swap).
		if err := w(filepath.Join(mem, "memory.swappiness"), "0"); err != nil {
			c.m.log.Debug("cgroup: memory.swappiness", "err", err)
		}
		return nil
	}
	cur, err := readInt(limitPath)
	if err != nil {
		return err
	}
	if bytes == 0 || bytes > cur {
		if err := w(memsw, limit); err != nil {
			return err
		}
		return setLimit()
	}
	if err := setLimit(); err != nil {
		return err
	}
	return w(memsw, limit)
}

func (c *v1Cgroup) Freeze() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return v1Freeze(c.m.sys, c.dirs["freezer"], c.m.opts.FreezeTimeout)
}

func (c *v1Cgroup) Thaw() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return v1Thaw(c.m.sys, c.dirs["freezer"])
}

// v1Freeze asks for FROZEN and waits until freezer.state reads FROZEN.
//
// The v1 freezer reports FREEZING until every task has reached the
// refrigerator, and the state is only re-evaluated when read. Tasks created
// while FREEZING (fork, or a write to cgroup.procs) can be missed, which is
// why FROZEN is asked for again every few polls. On timeout the cgroup is
// thawed: a cgroup left FREEZING would hold its tasks half-stopped.
func v1Freeze(sys *sysfs, dir string, timeout time.Duration) error {
	statePath := filepath.Join(dir, "freezer.state")
	if err := sys.write(statePath, "FROZEN"); err != nil {
		return err
	}
	polls := 0
	var state string
	err := poll(timeout, func() (bool, error) {
		polls++
		if polls%10 == 0 {
			if err := sys.write(statePath, "FROZEN"); err != nil {
				return false, err
			}
		}
		var err error
		state, err = readString(statePath)
		return state == "FROZEN", err
	})
	if err != nil {
		_ = sys.write(statePath, "THAWED")
		return fmt.Errorf("cgroup v1: freeze %s (state %s): %w", dir, state, err)
	}
	return nil
}

func v1Thaw(sys *sysfs, dir string) error {
	return sys.write(filepath.Join(dir, "freezer.state"), "THAWED")
}

func (c *v1Cgroup) Memory() (peak, oomKills uint64, err error) {
	if peak, err = c.MemoryPeak(); err != nil {
		return 0, 0, err
	}
	oomKills, err = c.oomF.keyed("oom_kill")
	return peak, oomKills, err
}

func (c *v1Cgroup) MemoryPeak() (uint64, error) {
	c.memOnce.Do(func() {
		mem := c.dirs["memory"]
		c.peakF.path = filepath.Join(mem, "memory.max_usage_in_bytes")
		c.oomF.path = filepath.Join(mem, "memory.oom_control")
	})
	return c.peakF.uint()
}

func (c *v1Cgroup) Stats() (Stats, error) {
	var s Stats
	var err error
	mem := c.dirs["memory"]
	if s.MemoryCurrent, err = readUint(filepath.Join(mem, "memory.usage_in_bytes")); err != nil {
		return s, err
	}
	if s.MemoryPeak, err = readUint(filepath.Join(mem, "memory.max_usage_in_bytes")); err != nil {
		return s, err
	}
	// "oom_kill" appeared in memory.oom_control in Linux 4.13; older
	// kernels report no count, and OOMKills stays 0.
	if s.OOMKills, _, err = readKeyed(filepath.Join(mem, "memory.oom_control"), "oom_kill"); err != nil {
		return s, err
	}
	if acct, ok := c.dirs["cpuacct"]; ok {
		if s.CPUUsageNanos, err = readUint(filepath.Join(acct, "cpuacct.usage")); err != nil {
			return s, err
		}
	}
	if s.Pids, err = readUint(filepath.Join(c.dirs["pids"], "pids.current")); err != nil {
		return s, err
	}
	return s, nil
}

// ResetPeak writes to memory.max_usage_in_bytes, which v1 takes (whatever
// the value) as "restart the watermark from the current usage".
func (c *v1Cgroup) ResetPeak() error {
	return c.m.sys.write(filepath.Join(c.dirs["memory"], "memory.max_usage_in_bytes"), "0")
}

// runtimeChild names the cpu-hierarchy child of an environment that alone
// carries its CPU quota (see Confine).
const runtimeChild = "runtime"

func (c *v1Cgroup) Confine(pids []int, cpuMilli int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cpu := c.dirs["cpu"]
	dir := filepath.Join(cpu, runtimeChild)
	if !exists(dir) {
		if err := c.m.sys.mkdir(dir); err != nil {
			return fmt.Errorf("cgroup v1: %s runtime child: %w", c.name, err)
		}
	}
	milli := cpuMilli
	if capm := c.m.cpuCapMilli; capm > 0 && milli > capm {
		milli = capm
	}
	w := c.m.sys.write
	period := strconv.FormatInt(CPUPeriod.Microseconds(), 10)
	if cur, err := readString(filepath.Join(dir, "cpu.cfs_period_us")); err != nil || cur != period {
		if err := w(filepath.Join(dir, "cpu.cfs_period_us"), period); err != nil {
			return err
		}
	}
	if err := w(filepath.Join(dir, "cpu.cfs_quota_us"), strconv.FormatInt(quotaMicros(milli), 10)); err != nil {
		return err
	}
	for _, pid := range pids {
		// A process that exited meanwhile (ESRCH) has nothing to confine.
		if err := w(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("cgroup v1: confine %d in %s: %w", pid, c.name, err)
		}
	}
	return nil
}

func (c *v1Cgroup) Procs() ([]int, error) { return treeProcs(uniqueDirs(c.dirs)...) }

func (c *v1Cgroup) Kill() error { return c.m.killDirs(c.dirs) }

func (c *v1Cgroup) Delete() error {
	c.peakF.close()
	c.oomF.close()
	c.m.mu.Lock()
	if c.m.envs[c.name] == c {
		delete(c.m.envs, c.name)
	}
	c.m.mu.Unlock()
	return c.remove()
}

func (c *v1Cgroup) remove() error {
	var errs []error
	for _, d := range uniqueDirs(c.dirs) {
		errs = append(errs, c.m.sys.removeTree(d))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cgroup v1: delete %s: %w", c.name, err)
	}
	return nil
}
