package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
)

const eventsUsage = `usage: nubo events <command> FUNCTION [flags]

commands:
  stats   FUNCTION                 queue depth, oldest event age, retries, dead letters
  failed  FUNCTION                 list events that failed with nowhere to go
  replay  FUNCTION [REQUEST_ID...] queue dead-lettered events again (all when no id is given)
`

// eventsCmd is the operator surface of the async queue.
func eventsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, eventsUsage)
		return 2
	}
	sub, fn := args[0], args[1]
	fs := flag.NewFlagSet("events "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	if err := fs.Parse(args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	q := url.Values{"function": {fn}}
	var path, method = "", "GET"
	switch sub {
	case "stats":
		path = "/nubo/v1/events/stats"
	case "failed":
		path = "/nubo/v1/events/failed"
	case "replay":
		path, method = "/nubo/v1/events/replay", "POST"
		if fs.NArg() > 0 {
			q.Set("requestIds", strings.Join(fs.Args(), ","))
		}
	default:
		fmt.Fprintf(stderr, "nubo events: unknown command %q\n%s", sub, eventsUsage)
		return 2
	}
	resp, err := c.do(context.Background(), method, path, q)
	if err != nil {
		fmt.Fprintf(stderr, "nubo events %s: %v\n", sub, err)
		return 1
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		fmt.Fprintf(stderr, "nubo events %s: %v\n", sub, err)
		return 1
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(stdout, string(out))
	return 0
}
