// Command nubo-agent is the spawner and agent of nubo's namespace
// sandboxes, alone: nubo embeds it (see cmd/nubo/agent), starts its spawner
// from it and every sandbox's agent. It is not meant to be run by hand;
// everything it does happens in package initialisers (nsbox's, sandbox's)
// when nubo starts it.
package main

import (
	"fmt"
	"os"

	"github.com/nubo-dev/nubo/internal/nsbox" // the spawner and agent, in initialisers
)

func main() {
	// Naming the stamp also keeps it in the executable, where nubo looks
	// for it (see cmd/nubo/agent.go).
	fmt.Fprintf(os.Stderr, "nubo-agent (%s): started by nubo only, as a sandbox's init\n", nsbox.BuildStamp)
	os.Exit(2)
}
