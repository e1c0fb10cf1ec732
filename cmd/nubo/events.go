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
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("events "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	// Flags may come before, between or after FUNCTION and the request
	// ids, as for `nubo logs`: parse past each positional argument.
	var pos []string
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) == 0 || (sub != "replay" && len(pos) > 1) {
		fmt.Fprint(stderr, eventsUsage)
		return 2
	}
	fn, pos := pos[0], pos[1:]
	q := url.Values{"function": {fn}}
	var path, method = "", "GET"
	switch sub {
	case "stats":
		path = "/nubo/v1/events/stats"
	case "failed":
		path = "/nubo/v1/events/failed"
	case "replay":
		path, method = "/nubo/v1/events/replay", "POST"
		if len(pos) > 0 {
			q.Set("requestIds", strings.Join(pos, ","))
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
