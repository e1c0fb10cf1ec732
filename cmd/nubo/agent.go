package main

import (
	"bytes"
	"embed"

	"github.com/nubo-dev/nubo/internal/nsbox"
)

// agentFS holds the sandbox agent executable that scripts/build.sh builds
// from cmd/nubo-agent before nubo, when it is there (see agent/README.md).
//
//go:embed agent
var agentFS embed.FS

// embeddedAgent returns that executable, or nil and why not: sandboxes are
// then started from nubo's own binary, which holds the same code.
//
// It is used only when it comes from the same build.sh run as nubo: both
// carry the run's random nsbox.BuildStamp. A nubo built otherwise (plain
// go build) would embed whatever agent an earlier run left in the source
// tree, perhaps one without a later fix.
func embeddedAgent() ([]byte, string) {
	b, err := agentFS.ReadFile("agent/nubo-agent")
	switch {
	case err != nil:
		return nil, "none embedded (built without scripts/build.sh)"
	case nsbox.BuildStamp == "":
		return nil, "nubo was not built by scripts/build.sh, so the embedded one may be stale"
	case !bytes.Contains(b, []byte(nsbox.BuildStamp)):
		return nil, "the embedded one is from another build"
	}
	return b, ""
}
