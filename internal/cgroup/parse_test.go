package cgroup

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const hybridMountinfo = `23 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// A container's view: co-mounted cpu,cpuacct, subtrees mounted as roots,
// an optional field before the separator, an escaped space.
const containerMountinfo = `600 500 0:50 / / rw - overlay overlay rw
610 600 0:60 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid shared:7 - cgroup cgroup rw,cpu,cpuacct
611 600 0:61 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
612 600 0:62 / /mnt/my\040cgroups rw - cgroup cgroup rw,pids
`

const v2Mountinfo = `25 1 8:1 / / rw - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

func TestDetectMode(t *testing.T) {
	for _, c := range []struct {
		name, info string
		want       Mode
	}{
		{"hybrid", hybridMountinfo, ModeHybrid},
		{"v1", containerMountinfo, ModeV1},
		{"v2", v2Mountinfo, ModeV2},
		{"none", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n", ModeNone},
		// name=systemd alone is no v1 controller.
		{"v2 with named v1", v2Mountinfo + "40 31 0:37 / /x rw - cgroup cgroup rw,name=systemd\n", ModeV2},
	} {
		ms, err := parseMountinfo(strings.NewReader(c.info))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := detectMode(ms); got != c.want {
			t.Errorf("%s: detectMode = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestV1MountsAndPaths(t *testing.T) {
	ms, err := parseMountinfo(strings.NewReader(containerMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	mm := v1Mounts(ms)
	if mm["cpu"].point != "/sys/fs/cgroup/cpu,cpuacct" || mm["cpuacct"].point != mm["cpu"].point {
		t.Errorf("co-mounted cpu,cpuacct: %+v / %+v", mm["cpu"], mm["cpuacct"])
	}
	if mm["pids"].point != "/mnt/my cgroups" {
		t.Errorf("escaped mount point = %q", mm["pids"].point)
	}
	if _, ok := mm["freezer"]; ok {
		t.Error("freezer found although not mounted")
	}
	for _, c := range []struct{ cg, root, want string }{
		{"/docker/abc", "/docker/abc", "/"},
		{"/docker/abc/sub", "/docker/abc", "/sub"},
		{"/process_api/f0da", "/", "/process_api/f0da"},
		{"/elsewhere", "/docker/abc", "/elsewhere"},
		{"/docker/abcdef", "/docker/abc", "/docker/abcdef"},
	} {
		if got := relToMount(c.cg, c.root); got != c.want {
			t.Errorf("relToMount(%q, %q) = %q, want %q", c.cg, c.root, got, c.want)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	pc, err := parseProcCgroup([]byte("9:name=systemd:/\n4:memory:/process_api/f0da\n2:cpu,cpuacct:/a:b\n0::/user.slice/x.scope\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"name=systemd": "/", "memory": "/process_api/f0da", "cpu": "/a:b", "cpuacct": "/a:b"}
	for k, v := range want {
		if pc.v1[k] != v {
			t.Errorf("v1[%s] = %q, want %q", k, pc.v1[k], v)
		}
	}
	if !pc.hasV2 || pc.unified != "/user.slice/x.scope" {
		t.Errorf("unified = %q (%v)", pc.unified, pc.hasV2)
	}
	if _, err := parseProcCgroup([]byte("garbage\n")); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestOwnerIdentity(t *testing.T) {
	pid, start, err := selfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if !ownerAlive(pid, start) {
		t.Error("this process not alive by its own identity")
	}
	if ownerAlive(pid, start+1) {
		t.Error("a reused pid (other start time) counted as the owner")
	}
	if ownerAlive(1<<30, start) {
		t.Error("a nonexistent pid counted as alive")
	}
	for name, ok := range map[string]bool{"nubo-12-34": true, "nubo-12": false, "nubox-12-34": false,
		"nubo-1-12-34": false, "nubo-12-34-daemon": false, "env-1-2": false, "nubo--34": false, "nubo-12-": false,
		"nubo-+1-2": false, "nubo-1-2 ": false, "xnubo-12-34": false} {
		if _, _, got := parseRootName("nubo", name); got != ok {
			t.Errorf("parseRootName(%q) = %v, want %v", name, got, ok)
		}
	}
	if pid, start, ok := parseRootName("nubo", "nubo-12-34"); pid != 12 || start != 34 || !ok {
		t.Errorf("parseRootName(nubo-12-34) = %d %d %v", pid, start, ok)
	}
}

func TestCPUMilliForMemory(t *testing.T) {
	for _, c := range []struct{ mb, cpus, want int }{
		{1769, 0, 1000},
		{128, 2, 72},
		{3538, 4, 2000},
		{10240, 2, 2000}, // capped at the host's cores
		{10240, 0, 5789},
		{1, 0, 10},
		{0, 2, 0},
	} {
		if got := CPUMilliForMemory(c.mb, c.cpus); got != c.want {
			t.Errorf("CPUMilliForMemory(%d, %d) = %d, want %d", c.mb, c.cpus, got, c.want)
		}
	}
	for milli, want := range map[int]int64{0: -1, 1000: 100000, 200: 20000, 72: 7200, 5: 1000} {
		if got := quotaMicros(milli); got != want {
			t.Errorf("quotaMicros(%d) = %d, want %d", milli, got, want)
		}
	}
}

func TestResources(t *testing.T) {
	for _, r := range []Resources{{MemoryBytes: -1}, {CPUMilli: -1}, {PidsMax: -1}, {IOWeight: 10001}, {IOWeight: -5}} {
		if r.validate() == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	for in, want := range map[int]int{0: MaxPids, 16: 16, MaxPids: MaxPids, 5000: MaxPids} {
		if got := (Resources{PidsMax: in}).pidsMax(); got != want {
			t.Errorf("pidsMax(%d) = %d, want %d", in, got, want)
		}
	}
	for _, c := range []struct{ w, lo, hi, want int }{
		{1, 10, 1000, 10}, {10000, 10, 1000, 1000}, {1, 1, 1000, 1}, {10000, 1, 1000, 1000}, {100, 1, 1000, 10},
	} {
		if got := scaleWeight(c.w, c.lo, c.hi); got != c.want {
			t.Errorf("scaleWeight(%d, %d, %d) = %d, want %d", c.w, c.lo, c.hi, got, c.want)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, p := range []string{"cg", "nubo/x", "../nubo"} {
		if _, err := (Options{Prefix: p}).withDefaults(); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
	o, err := Options{}.withDefaults()
	if err != nil || o.Prefix != "nubo" || o.FreezeTimeout <= 0 || o.Logger == nil {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for _, n := range []string{"", ".", "..", "a/b", "-x", "_x", "a b", "é", strings.Repeat("a", 129)} {
		if checkName(n) == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	for _, n := range []string{"a", "0", "nubo-0123abcd", "Z.y_x-w", strings.Repeat("a", 128)} {
		if err := checkName(n); err != nil {
			t.Errorf("name %q refused: %v", n, err)
		}
	}
	for _, p := range []string{"nubo", "nubo-test_1.2", "-nubo", ".nubo"} {
		if _, err := (Options{Prefix: p}).withDefaults(); err != nil {
			t.Errorf("prefix %q refused: %v", p, err)
		}
	}
}

func TestFakeManager(t *testing.T) {
	m := NewFake()
	cg, err := m.Create("e1", Resources{MemoryBytes: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("e1", Resources{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("duplicate Create: %v", err)
	}
	if _, err := m.Create("bad/name", Resources{}); err == nil {
		t.Error("bad name accepted")
	}
	g := m.Get("e1")
	_ = cg.AddProc(42)
	_ = cg.Set(Resources{MemoryBytes: 128 << 20, CPUMilli: 72})
	_ = cg.Freeze()
	if !g.Frozen() {
		t.Error("not frozen after Freeze")
	}
	_ = cg.Thaw()
	g.FailOn("Freeze", errors.New("boom"))
	if err := cg.Freeze(); err == nil || g.Frozen() {
		t.Error("injected Freeze failure ignored")
	}
	g.SetStats(Stats{MemoryCurrent: 10, MemoryPeak: 99})
	if st, _ := cg.Stats(); st.MemoryPeak != 99 || st.Pids != 1 {
		t.Errorf("Stats = %+v", st)
	}
	_ = cg.ResetPeak()
	if st, _ := cg.Stats(); st.MemoryPeak != 10 {
		t.Errorf("peak after ResetPeak = %d", st.MemoryPeak)
	}
	if err := cg.Delete(); err == nil {
		t.Error("Delete with a process succeeded")
	}
	if h := g.History(); len(h) != 2 || h[1].CPUMilli != 72 {
		t.Errorf("History = %+v", h)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !g.Killed() || !g.Deleted() || !m.Closed() {
		t.Error("Close did not kill and delete")
	}
	want := []string{"Create", "AddProc 42", "Set", "Freeze", "Thaw", "Freeze", "Stats", "ResetPeak", "Stats", "Delete", "Kill", "Delete"}
	calls := g.Calls()
	if len(calls) != len(want) {
		t.Fatalf("Calls = %q", calls)
	}
	for i, w := range want {
		if !strings.HasPrefix(calls[i], w) {
			t.Errorf("call %d = %q, want %s", i, calls[i], w)
		}
	}
}
