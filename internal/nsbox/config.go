package nsbox

// initConfig is what the host tells the init stage, as JSON on fd 4.
type initConfig struct {
	// Root is where the init stage mounts the sandbox's root tmpfs before
	// pivoting into it: any directory its user can reach in its (private)
	// mount namespace; "/tmp" by default.
	Root string `json:"root"`
	// Userland lists the top-level entries of the root taken from the host:
	// a symlink (Link) or a directory bound read-only (Bind).
	Userland []userlandEntry `json:"userland"`
	// The host directories below arrive as /proc/self/fd/N: detached mount
	// trees the host cloned and flagged (see detachedMount), attached with
	// move_mount.
	//
	// Etc is the generated /etc; Certs is bound on /etc/ssl/certs.
	Etc   string `json:"etc"`
	Certs string `json:"certs,omitempty"`
	// Runtime is bound read-only on /var/runtime. /var/task and /opt stay
	// empty: the function's code and layers are moved onto them by the host
	// when a function gets the sandbox (see box.assign).
	Runtime string `json:"runtime,omitempty"`
	// Tmp is the /tmp volume (a detached mount, as /proc/self/fd/N).
	Tmp      string `json:"tmp"`
	Hostname string `json:"hostname"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	// Seccomp is the compiled filter (see package seccomp); empty sets only
	// no_new_privs.
	Seccomp []byte `json:"seccomp,omitempty"`
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
