// Command nubo-agent is the spawner and agent of nubo's namespace
// sandboxes, alone: nubo embeds it (see cmd/nubo/agent), starts its spawner
// from it and every sandbox's agent. It is not meant to be run by hand;
// the spawner starts from nsbox's package initialiser, the agent from main.
package main

import (
	"fmt"
	"os"

	"github.com/nubo-dev/nubo/internal/nsbox" // the spawner, in its initialiser
	"github.com/nubo-dev/nubo/internal/sandbox"
)

func main() {
	sandbox.AgentMain() // returns only if not started as an agent
	// Naming the stamp also keeps it in the executable, where nubo looks
	// for it (see cmd/nubo/agent.go).
	fmt.Fprintf(os.Stderr, "nubo-agent (%s): started by nubo only, as a sandbox's init\n", nsbox.BuildStamp)
	os.Exit(2)
}
