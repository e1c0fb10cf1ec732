// Command nubo-agent is the init stage and agent of nubo's namespace
// sandboxes, alone: nubo embeds it (see cmd/nubo/agent) and starts every
// sandbox from it. It is not meant to be run by hand; everything it does
// happens in package nsbox's initialiser when nubo starts it.
package main

import (
	"fmt"
	"os"

	"github.com/nubo-dev/nubo/internal/nsbox" // the init stage, in its initialiser
)

func main() {
	// Naming the stamp also keeps it in the executable, where nubo looks
	// for it (see cmd/nubo/agent.go).
	fmt.Fprintf(os.Stderr, "nubo-agent (%s): started by nubo only, as a sandbox's init\n", nsbox.BuildStamp)
	os.Exit(2)
}
