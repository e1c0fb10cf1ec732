package cgroup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// v2Required are the controllers an environment needs; io is used where
// the host offers it.
var (
	v2Required = []string{"memory", "cpu", "pids"}
	v2Optional = []string{"io"}
)

type v2Manager struct {
	opts Options
	sys  *sysfs
	log  *slog.Logger

	self     string // the daemon's starting cgroup dir
	isRoot   bool   // self is the hierarchy's true root (exempt from no-internal-processes)
	rootName string
	root     string
	leaf     string   // the daemon leaf, "" when the daemon did not move
	added    []string // controllers this manager enabled in self's subtree_control
	enabled  []string // controllers enabled for environments

	mu     sync.Mutex
	envs   map[string]*v2Cgroup
	closed bool
}

// NewV2 returns a cgroup v2 Manager. fsRoot is the unified hierarchy's mount
// point; "" finds it in /proc/self/mountinfo.
func NewV2(fsRoot string, opts Options) (Manager, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	mnt := mountEntry{root: "/", point: fsRoot}
	if fsRoot == "" {
		all, err := readMountinfo()
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range all {
			// Prefer the canonical mount point when several exist.
			if e.fstype == "cgroup2" && (!found || e.point == "/sys/fs/cgroup") {
				mnt, found = e, true
			}
		}
		if !found {
			return nil, fmt.Errorf("cgroup v2: no cgroup2 mount: %w", ErrNotDelegated)
		}
	}
	selfPath := opts.Self
	if selfPath == "" {
		pc, err := readProcCgroup()
		if err != nil {
			return nil, err
		}
		if !pc.hasV2 {
			return nil, fmt.Errorf("cgroup v2: /proc/self/cgroup has no 0:: line: %w", ErrNotDelegated)
		}
		selfPath = pc.unified
	}
	m := &v2Manager{
		opts: opts, sys: opts.sys, log: opts.Logger,
		self: filepath.Join(mnt.point, relToMount(selfPath, mnt.root)),
		envs: map[string]*v2Cgroup{},
	}
	avail, err := readString(filepath.Join(m.self, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup v2: own cgroup %s: %w", m.self, err)
	}
	required, optional := v2Required, v2Optional
	if opts.controllers != nil {
		required, optional = opts.controllers, nil
	}
	have := strings.Fields(avail)
	var missing []string
	for _, c := range required {
		if slices.Contains(have, c) {
			m.enabled = append(m.enabled, c)
		} else {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cgroup v2: controllers %s are not delegated to %s (it offers %q); "+
			"run nubo where they are, e.g. a systemd unit with Delegate=yes: %w",
			strings.Join(missing, ","), m.self, avail, ErrNotDelegated)
	}
	for _, c := range optional {
		if slices.Contains(have, c) {
			m.enabled = append(m.enabled, c)
		}
	}
	// Only non-root cgroups have cgroup.type.
	m.isRoot = !exists(filepath.Join(m.self, "cgroup.type"))

	pid, start, err := selfIdentity()
	if err != nil {
		return nil, err
	}
	m.rootName = fmt.Sprintf("%s-%d-%d", opts.Prefix, pid, start)
	m.root = filepath.Join(m.self, m.rootName)
	if err := m.sys.mkdir(m.root); err != nil {
		return nil, fmt.Errorf("cgroup v2: create root: %w", err)
	}
	if err := m.delegate(pid); err != nil {
		if uerr := m.undelegate(); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return nil, err
	}
	return m, nil
}

// delegate enables the controllers for environments: in self (after moving
// the daemon out of it, unless self is the true root) and in the root.
func (m *v2Manager) delegate(pid int) error {
	cur := strings.Fields(mustRead(filepath.Join(m.self, "cgroup.subtree_control")))
	var need []string
	for _, c := range m.enabled {
		if !slices.Contains(cur, c) {
			need = append(need, c)
		}
	}
	if !m.isRoot && len(need) > 0 {
		// No internal processes: a non-root cgroup with controllers enabled
		// for its children may hold no process itself, and the daemon is
		// in self. It moves into a leaf of its own tree first.
		leaf := filepath.Join(m.root, daemonLeaf)
		if err := m.sys.mkdir(leaf); err != nil {
			return fmt.Errorf("cgroup v2: create daemon leaf: %w", err)
		}
		m.leaf = leaf
		if err := m.sys.write(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup v2: move daemon into %s: %w", leaf, err)
		}
	}
	for _, c := range need {
		err := m.sys.write(filepath.Join(m.self, "cgroup.subtree_control"), "+"+c)
		if errors.Is(err, syscall.EBUSY) && m.opts.MoveSiblings {
			if err = m.moveAll(m.self, m.leaf); err == nil {
				err = m.sys.write(filepath.Join(m.self, "cgroup.subtree_control"), "+"+c)
			}
		}
		if errors.Is(err, syscall.EBUSY) {
			others, _ := readProcs(m.self)
			return fmt.Errorf("cgroup v2: cannot enable %s in %s: it holds processes %v besides nubo "+
				"(no-internal-processes rule); start nubo in a cgroup of its own "+
				"(systemd: Delegate=yes) or set MoveSiblings: %w", c, m.self, others, ErrNotDelegated)
		}
		if err != nil {
			return fmt.Errorf("cgroup v2: enable %s in %s: %w", c, m.self, err)
		}
		m.added = append(m.added, c)
	}
	for _, c := range m.enabled {
		if err := m.sys.write(filepath.Join(m.root, "cgroup.subtree_control"), "+"+c); err != nil {
			return fmt.Errorf("cgroup v2: enable %s in %s: %w", c, m.root, err)
		}
	}
	return nil
}

func mustRead(path string) string {
	s, _ := readString(path)
	return s
}

// moveAll moves every process of from into to. A process that exits
// meanwhile (ESRCH) is no longer anyone's concern.
func (m *v2Manager) moveAll(from, to string) error {
	pids, err := readProcs(from)
	if err != nil {
		return err
	}
	for _, p := range pids {
		err := m.sys.write(filepath.Join(to, "cgroup.procs"), strconv.Itoa(p))
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("cgroup v2: move %d to %s: %w", p, to, err)
		}
	}
	return nil
}

// undelegate reverses delegate and removes the root: controllers off in the
// root (a controller can be disabled only while no child has it enabled),
// then in self, then the daemon (and any sibling it brought) back into
// self, then the now-empty directories.
func (m *v2Manager) undelegate() error {
	var errs []error
	if m.leaf != "" {
		for _, c := range slices.Backward(m.enabled) {
			p := filepath.Join(m.root, "cgroup.subtree_control")
			if slices.Contains(strings.Fields(mustRead(p)), c) {
				errs = append(errs, m.sys.write(p, "-"+c))
			}
		}
		for _, c := range slices.Backward(m.added) {
			errs = append(errs, m.sys.write(filepath.Join(m.self, "cgroup.subtree_control"), "-"+c))
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("cgroup v2: cannot return the daemon to %s, leaving %s: %w", m.self, m.leaf, err)
		}
		m.added = nil
		if err := m.moveAll(m.leaf, m.self); err != nil {
			return err
		}
		if err := m.sys.removeDir(m.leaf); err != nil {
			return err
		}
		m.leaf = ""
	}
	return m.sys.removeDir(m.root)
}

func (m *v2Manager) Version() int { return 2 }

func (m *v2Manager) Create(name string, r Resources) (Cgroup, error) {
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
	cg := &v2Cgroup{m: m, name: name, dir: filepath.Join(m.root, envPrefix+name)}
	if err := m.sys.mkdir(cg.dir); err != nil {
		return nil, fmt.Errorf("cgroup v2: create %s: %w", name, err)
	}
	if err := cg.Set(r); err != nil {
		_ = m.sys.removeDir(cg.dir)
		return nil, err
	}
	m.envs[name] = cg
	return cg, nil
}

// killTree kills everything under dir: cgroup.kill (Linux 5.14+) does it in
// one write for the whole subtree; older kernels get the freeze-kill-thaw
// loop.
func (m *v2Manager) killTree(dir string) error {
	if exists(filepath.Join(dir, "cgroup.kill")) {
		if err := m.sys.write(filepath.Join(dir, "cgroup.kill"), "1"); err != nil {
			return err
		}
		err := poll(m.opts.KillTimeout, func() (bool, error) {
			v, _, err := readKeyed(filepath.Join(dir, "cgroup.events"), "populated")
			return v == 0, err
		})
		if err != nil {
			pids, _ := treeProcs(dir)
			return fmt.Errorf("cgroup v2: kill %s: processes %v remain: %w", dir, pids, err)
		}
		return nil
	}
	return killAll(m.opts.KillTimeout,
		func() ([]int, error) { return treeProcs(dir) },
		func() error { return v2Freeze(m.sys, dir, min(m.opts.FreezeTimeout, defaultFreezeTimeout/5)) },
		func() error { return v2Thaw(m.sys, dir) })
}

func (m *v2Manager) CleanupStale() error {
	ents, err := os.ReadDir(m.self)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || e.Name() == m.rootName {
			continue
		}
		owner, start, ok := parseRootName(m.opts.Prefix, e.Name())
		if !ok || ownerAlive(owner, start) {
			continue
		}
		dir := filepath.Join(m.self, e.Name())
		m.log.Debug("cgroup: removing stale tree", "dir", dir)
		if err := m.killTree(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, m.sys.removeTree(dir))
	}
	return errors.Join(errs...)
}

func (m *v2Manager) Close() error {
	m.mu.Lock()
	envs := m.envs
	m.closed = true
	m.envs = map[string]*v2Cgroup{}
	m.mu.Unlock()
	for _, cg := range envs {
		cg.closePeak()
	}
	subs, err := subdirs(m.root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var errs []error
	for _, s := range subs {
		if s == m.leaf {
			continue
		}
		if err := m.killTree(s); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, m.sys.removeTree(s))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return m.undelegate()
}

type v2Cgroup struct {
	m    *v2Manager
	name string
	dir  string
	// The files Memory reads on every invocation, kept open (under mu).
	curF, eventsF keptFile

	mu sync.Mutex
	// applied is what the last Set wrote, all of it (nil: unknown); a
	// Set writes only what differs (see Resources.changes).
	applied *Resources
	// peakFD is memory.peak opened for the per-descriptor watermark reset
	// of Linux 6.12+: a write through a descriptor resets the peak seen by
	// reads through that same descriptor only, so it is kept open.
	peakFD *os.File
	// tracked is the fallback peak (kernels without memory.peak): the
	// highest memory.current seen by Stats since the last ResetPeak.
	tracked uint64
}

func (c *v2Cgroup) Name() string { return c.name }

func (c *v2Cgroup) Paths() map[string]string { return map[string]string{"": c.dir} }

func (c *v2Cgroup) has(ctrl string) bool { return slices.Contains(c.m.enabled, ctrl) }

func (c *v2Cgroup) file(name string) string { return filepath.Join(c.dir, name) }

func (c *v2Cgroup) AddProc(pid int) error {
	if err := c.m.sys.write(c.file("cgroup.procs"), strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("cgroup v2: add %d to %s: %w", pid, c.name, err)
	}
	return nil
}

func (c *v2Cgroup) OpenDir() (*os.File, error) {
	return os.OpenFile(c.dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// Confine sets the CPU quota of the whole cgroup: the agent lives in it,
// and a v2 cgroup with processes cannot hand controllers to children (the
// no-internal-process rule), so the runtime cannot get a child of its own
// without moving the agent to a leaf too. The pids are already inside.
func (c *v2Cgroup) Confine(pids []int, cpuMilli int) error {
	if !c.has("cpu") {
		return nil
	}
	// cpu.max changes behind Set's back: the next Set writes it again.
	c.mu.Lock()
	if c.applied != nil {
		c.applied.CPUMilli = -1
	}
	c.mu.Unlock()
	q := "max"
	if us := quotaMicros(cpuMilli); us > 0 {
		q = strconv.FormatInt(us, 10)
	}
	return c.m.sys.write(c.file("cpu.max"), q+" "+strconv.FormatInt(CPUPeriod.Microseconds(), 10))
}

func (c *v2Cgroup) Set(r Resources) error {
	if err := r.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.applied
	ch := r.changes(prev)
	c.applied = nil
	w := c.m.sys.write
	if c.has("memory") && ch.memory {
		limit := "max"
		if r.MemoryBytes > 0 {
			limit = strconv.FormatInt(r.MemoryBytes, 10)
		}
		if err := w(c.file("memory.max"), limit); err != nil {
			return err
		}
		// memory.swap.max exists only with swap accounting; without it
		// nothing can be swapped on the cgroup's behalf anyway.
		if p := c.file("memory.swap.max"); exists(p) {
			if err := w(p, "0"); err != nil {
				return err
			}
		}
		// memory.oom.group stays 0: the OOM killer should take the runtime,
		// not the agent beside it that reports the failure.
	}
	if c.has("cpu") {
		q := "max"
		if us := quotaMicros(r.CPUMilli); us > 0 {
			q = strconv.FormatInt(us, 10)
		}
		if ch.quota {
			if err := w(c.file("cpu.max"), q+" "+strconv.FormatInt(CPUPeriod.Microseconds(), 10)); err != nil {
				return err
			}
		}
		if ch.weight {
			if err := w(c.file("cpu.weight"), strconv.Itoa(r.CPUWeight)); err != nil {
				return err
			}
		}
	}
	if c.has("pids") && ch.pids {
		if err := w(c.file("pids.max"), strconv.Itoa(r.pidsMax())); err != nil {
			return err
		}
	}
	if c.has("io") && ch.io {
		// io.weight drives the iocost controller (1-10000), io.bfq.weight
		// the BFQ scheduler (1-1000); which one matters depends on each
		// disk's scheduler, so both are set where they exist.
		if p := c.file("io.weight"); exists(p) {
			if err := w(p, "default "+strconv.Itoa(r.IOWeight)); err != nil {
				return err
			}
		}
		if p := c.file("io.bfq.weight"); exists(p) {
			if err := w(p, strconv.Itoa(scaleWeight(r.IOWeight, 1, 1000))); err != nil {
				return err
			}
		}
	}
	c.applied = r.after(prev)
	return nil
}

func (c *v2Cgroup) Freeze() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !exists(c.file("cgroup.freeze")) {
		return fmt.Errorf("cgroup v2: no cgroup.freeze (Linux < 5.2): %w", errors.ErrUnsupported)
	}
	return v2Freeze(c.m.sys, c.dir, c.m.opts.FreezeTimeout)
}

func (c *v2Cgroup) Thaw() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return v2Thaw(c.m.sys, c.dir)
}

// v2Freeze writes cgroup.freeze and waits for "frozen 1" in cgroup.events:
// the write only requests the freeze, and tasks stop as they next reach
// the kernel's exit-to-user path.
func v2Freeze(sys *sysfs, dir string, timeout time.Duration) error {
	if err := sys.write(filepath.Join(dir, "cgroup.freeze"), "1"); err != nil {
		return err
	}
	if err := waitFrozen(dir, 1, timeout); err != nil {
		_ = sys.write(filepath.Join(dir, "cgroup.freeze"), "0")
		return fmt.Errorf("cgroup v2: freeze %s: %w", dir, err)
	}
	return nil
}

func v2Thaw(sys *sysfs, dir string) error {
	if err := sys.write(filepath.Join(dir, "cgroup.freeze"), "0"); err != nil {
		return err
	}
	if err := waitFrozen(dir, 0, defaultFreezeTimeout); err != nil {
		return fmt.Errorf("cgroup v2: thaw %s: %w", dir, err)
	}
	return nil
}

func waitFrozen(dir string, want uint64, timeout time.Duration) error {
	return poll(timeout, func() (bool, error) {
		v, _, err := readKeyed(filepath.Join(dir, "cgroup.events"), "frozen")
		return v == want, err
	})
}

func (c *v2Cgroup) Memory() (peak, oomKills uint64, err error) {
	return c.memory(true)
}

func (c *v2Cgroup) MemoryPeak() (uint64, error) {
	peak, _, err := c.memory(false)
	return peak, err
}

// memory reads the peak and, with oom, the OOM kill count.
func (c *v2Cgroup) memory(oom bool) (peak, oomKills uint64, err error) {
	if !c.has("memory") {
		return 0, 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.curF.path == "" {
		c.curF.path, c.eventsF.path = c.file("memory.current"), c.file("memory.events")
	}
	var cur uint64
	if c.peakFD == nil { // the peak may have to be tracked from it (see peak)
		if cur, err = c.curF.uint(); err != nil {
			return 0, 0, err
		}
	}
	if peak, err = c.peak(cur); err != nil {
		return 0, 0, err
	}
	if !oom {
		return peak, 0, nil
	}
	oomKills, err = c.eventsF.keyed("oom_kill")
	return peak, oomKills, err
}

func (c *v2Cgroup) Stats() (Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s Stats
	var err error
	if c.has("memory") {
		if s.MemoryCurrent, err = readUint(c.file("memory.current")); err != nil {
			return s, err
		}
		if s.MemoryPeak, err = c.peak(s.MemoryCurrent); err != nil {
			return s, err
		}
		// memory.events counts this cgroup and its descendants.
		if s.OOMKills, _, err = readKeyed(c.file("memory.events"), "oom_kill"); err != nil {
			return s, err
		}
	}
	// cpu.stat's usage_usec is kept by the cgroup core, with or without
	// the cpu controller.
	if p := c.file("cpu.stat"); exists(p) {
		us, _, err := readKeyed(p, "usage_usec")
		if err != nil {
			return s, err
		}
		s.CPUUsageNanos = us * 1000
	}
	if c.has("pids") {
		if s.Pids, err = readUint(c.file("pids.current")); err != nil {
			return s, err
		}
	}
	return s, nil
}

// peak returns the watermark: through the reset descriptor when there is
// one, from memory.peak (Linux 5.19+) otherwise, or tracked from samples of
// memory.current, which misses spikes between samples, on older kernels.
func (c *v2Cgroup) peak(current uint64) (uint64, error) {
	if c.peakFD != nil {
		buf := make([]byte, 32)
		n, err := c.peakFD.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	}
	p := c.file("memory.peak")
	if exists(p) {
		return readUint(p)
	}
	c.tracked = max(c.tracked, current)
	return c.tracked, nil
}

func (c *v2Cgroup) ResetPeak() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.has("memory") {
		return fmt.Errorf("cgroup v2: memory controller not enabled: %w", errors.ErrUnsupported)
	}
	if c.peakFD != nil {
		_, err := c.peakFD.WriteAt([]byte("reset\n"), 0)
		return err
	}
	p := c.file("memory.peak")
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		cur, err := readUint(c.file("memory.current"))
		c.tracked = cur
		return err
	}
	if err != nil {
		return err
	}
	// Before 6.12 memory.peak has no write handler and the kernel shows it
	// 0444. Root could still open it for writing, so the mode, not the
	// open, tells the two apart.
	if fi.Mode().Perm()&0o200 == 0 {
		return fmt.Errorf("cgroup v2: memory.peak cannot be reset before Linux 6.12: %w", errors.ErrUnsupported)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte("reset\n"), 0); err != nil {
		f.Close()
		return fmt.Errorf("cgroup v2: reset memory.peak: %w", err)
	}
	c.peakFD = f
	return nil
}

func (c *v2Cgroup) closePeak() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peakFD != nil {
		c.peakFD.Close()
		c.peakFD = nil
	}
}

func (c *v2Cgroup) Procs() ([]int, error) { return treeProcs(c.dir) }

func (c *v2Cgroup) Kill() error { return c.m.killTree(c.dir) }

func (c *v2Cgroup) Delete() error {
	c.m.mu.Lock()
	if c.m.envs[c.name] == c {
		delete(c.m.envs, c.name)
	}
	c.m.mu.Unlock()
	c.closePeak()
	c.curF.close()
	c.eventsF.close()
	if err := c.m.sys.removeTree(c.dir); err != nil {
		return fmt.Errorf("cgroup v2: delete %s: %w", c.name, err)
	}
	return nil
}
