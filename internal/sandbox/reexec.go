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

// AgentEnv set to 1 marks a re-executed nubo (or test, or agent) binary as
// an environment's agent; the host end of its connection is file
// descriptor 3. AgentDebugEnv set to anything gives the agent a debug log
// on its stderr. Backends that start agents (process.go, package nsbox)
// set them.
const (
	AgentEnv      = "NUBO_AGENT"
	AgentDebugEnv = "NUBO_AGENT_DEBUG"
)

// init turns this process into an agent when it was started as one. Any
// binary that links this package (nubo itself, and tests of packages that
// start sandboxes) can therefore be re-executed as the agent, the way runc
// re-executes itself as the container's init.
func init() {
	if os.Getenv(AgentEnv) != "1" {
		return
	}
	os.Unsetenv(AgentEnv)
	// Executed from a descriptor (the namespace sandboxes' agent), the
	// process would be called by that descriptor's number in ps and top.
	if name, err := unix.BytePtrFromString("nubo-agent"); err == nil {
		_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0)
	}
	conn := os.NewFile(3, "agent-conn")
	var log *slog.Logger
	if os.Getenv(AgentDebugEnv) != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// Not on this goroutine: package initialisation, where this runs,
	// keeps it locked to the main thread, so every hand-off between it and
	// the agent's other goroutines would be a switch of threads. It parks
	// here for good, its thread asleep.
	go func() {
		if err := agent.Run(conn, log); err != nil {
			fmt.Fprintln(os.Stderr, "nubo agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}()
	select {}
}
