// Command nubo-agent is the init stage and agent of nubo's namespace
// sandboxes, alone: nubo embeds it (see cmd/nubo/agent) and starts every
// sandbox from it. It is not meant to be run by hand; everything it does
// happens in package nsbox's initialiser when nubo starts it.
package main

import (
	"fmt"
	"os"

	_ "github.com/nubo-dev/nubo/internal/nsbox" // the init stage
)

func main() {
	fmt.Fprintln(os.Stderr, "nubo-agent: started by nubo only, as a sandbox's init")
	os.Exit(2)
}
