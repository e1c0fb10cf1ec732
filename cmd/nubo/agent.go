package main

import "embed"

// agentFS holds the sandbox agent executable that scripts/build.sh builds
// from cmd/nubo-agent before nubo, when it is there (see agent/README.md).
//
//go:embed agent
var agentFS embed.FS

// embeddedAgent returns that executable, or nil: sandboxes are then started
// from nubo's own binary.
func embeddedAgent() []byte {
	b, err := agentFS.ReadFile("agent/nubo-agent")
	if err != nil {
		return nil
	}
	return b
}
