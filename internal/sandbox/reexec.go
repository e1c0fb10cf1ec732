package sandbox

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nubo-dev/nubo/internal/agent"
)

// AgentEnv marks a re-executed nubo (or test, or agent) binary as an
// environment's agent; the host end of its connection is file descriptor
// 3. Set to AgentInInit, the agent starts from this package's initialiser
// (any binary that links it); set to AgentInMain, from the program's main
// through AgentMain (the agent executable, cmd/nubo-agent). AgentDebugEnv
// set to anything gives the agent a debug log on its stderr. Backends that
// start agents (process.go, package nsbox) set them.
const (
	AgentEnv      = "NUBO_AGENT"
	AgentDebugEnv = agent.DebugEnv

	AgentInInit = "1"
	AgentInMain = "main"

	// AgentRoleEnv set to AgentKeeper makes the agent a keeper only
	// (agent.Keep): nubo serve supervises it and serves the Runtime API
	// itself (package nsbox does this). AgentKeeperNow is a keeper an
	// invocation waits for, which skips the warm-up.
	AgentRoleEnv   = "NUBO_AGENT_ROLE"
	AgentKeeper    = "keeper"
	AgentKeeperNow = "keeper-now"
)

// init turns this process into an agent when it was started as one. Any
// binary that links this package (nubo itself, and tests of packages that
// start sandboxes) can therefore be re-executed as the agent, the way runc
// re-executes itself as the container's init.
func init() {
	if os.Getenv(AgentEnv) != AgentInInit {
		return
	}
	// Not on this goroutine: package initialisation, where this runs,
	// keeps it locked to the main thread, so every hand-off between it and
	// the agent's other goroutines would be a switch of threads. It parks
	// here for good, its thread asleep.
	go runAgent()
	select {}
}

// AgentMain runs the agent and does not return when the process was
// started as one from its main (AgentInMain); otherwise it returns at
// once. Started from main, the agent runs on the main goroutine, which
// nothing locks to a thread: the process does without init's parked main
// thread and the template thread that creates threads on behalf of a
// locked one (an idle agent keeps 5 or 6 threads, not 6 or 7).
func AgentMain() {
	if os.Getenv(AgentEnv) == AgentInMain {
		runAgent()
	}
}

// runAgent serves the host on descriptor 3 and exits.
func runAgent() {
	os.Unsetenv(AgentEnv)
	// Executed from a descriptor (the namespace sandboxes' agent), the
	// process would be called by that descriptor's number in ps and top.
	if name, err := unix.BytePtrFromString("nubo-agent"); err == nil {
		_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0)
	}
	var log *slog.Logger
	if os.Getenv(AgentDebugEnv) != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if role := os.Getenv(AgentRoleEnv); role == AgentKeeper || role == AgentKeeperNow {
		os.Unsetenv(AgentRoleEnv)
		if err := agent.Keep(3, role == AgentKeeper, log); err != nil {
			fmt.Fprintln(os.Stderr, "nubo keeper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := agent.Run(agent.HostConn(3, log), log); err != nil {
		fmt.Fprintln(os.Stderr, "nubo agent:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
