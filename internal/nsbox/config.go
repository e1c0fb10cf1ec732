package nsbox

// initConfig is the sandbox a spawn request asks for: what the child's init
// builds before it execs the agent (see buildInit).
type initConfig struct {
	// Root is where the spawner builds its template root (see
	// buildTemplate) before pivoting into it: any directory of the host,
	// covered only in the spawner's own mount namespace; "/tmp" by
	// default. Every request to one spawner must give the same Root and
	// Userland.
	Root string `json:"root"`
	// Userland lists the top-level entries of the root taken from the host:
	// a symlink (Link) or a directory bound read-only (Bind).
	Userland []userlandEntry `json:"userland"`
	// The host directories below arrive as detached mount trees the host
	// cloned and flagged (see detachedMount), attached with move_mount:
	// each field is the index of its tree among the request's files, 0
	// for none (files 0 and 1 are the agent's connection and the release).
	//
	// Etc is the generated /etc; Certs is bound on /etc/ssl/certs.
	Etc   int `json:"etc"`
	Certs int `json:"certs,omitempty"`
	// Runtime is bound read-only on /var/runtime. /var/task and /opt stay
	// empty: the function's code and layers are moved onto them by the host
	// when a function gets the sandbox (see box.assign).
	Runtime int `json:"runtime,omitempty"`
	// Tmp is the /tmp volume (a detached mount already, see tmpVolume).
	Tmp      int    `json:"tmp"`
	Hostname string `json:"hostname"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	// Seccomp is the compiled filter (see package seccomp); empty sets only
	// no_new_privs.
	Seccomp []byte `json:"seccomp,omitempty"`
	// CPUs, when not empty, are the CPUs the sandbox runs on (see placer).
	CPUs []int `json:"cpus,omitempty"`
	// TimerSlackNs is the sandbox's timer slack (see timerSlack); 0
	// leaves the one it inherits.
	TimerSlackNs int64 `json:"timerSlackNs,omitempty"`
	// NoIPv6 turns IPv6 off in the network namespace's defaults before the
	// host wires it (see earlyProc), so devices made there from then on
	// have none (lo, made with the namespace, keeps ::1): set when the host
	// has IPv6 and the sandbox a network.
	NoIPv6 bool `json:"noIPv6,omitempty"`
}

type userlandEntry struct {
	Name string `json:"name"`
	Link string `json:"link,omitempty"`
	Bind string `json:"bind,omitempty"`
}

// Identities inside every sandbox, as Lambda has them.
const (
	SandboxUID = 993
	SandboxGID = 990
	// idRange is how many ids each sandbox's user namespace maps.
	idRange = 1000
)
