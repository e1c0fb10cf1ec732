package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
)

// logsCmd prints a function's log events: `nubo logs FUNCTION [--follow] [--since 10m]`.
func logsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: nubo logs FUNCTION [--follow] [--since 10m|RFC3339] [--endpoint URL]")
		fs.PrintDefaults()
	}
	var c clientFlags
	c.register(fs)
	follow := fs.Bool("follow", false, "keep printing new events")
	since := fs.String("since", "", "only events newer than this: a duration (10m) or an RFC 3339 time")
	group := fs.String("log-group", "", "log group (default /aws/lambda/FUNCTION)")
	fn, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		fn, rest = args[0], args[1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fn == "" && fs.NArg() > 0 {
		fn = fs.Arg(0)
	}
	if fn == "" {
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	q := url.Values{"function": {fn}}
	if *since != "" {
		q.Set("since", *since)
	}
	if *follow {
		q.Set("follow", "true")
	}
	if *group != "" {
		q.Set("group", *group)
	}
	resp, err := c.get(ctx, "/nubo/v1/logs", q)
	if err != nil {
		fmt.Fprintf(stderr, "nubo logs: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "nubo logs: %v\n", err)
		return 1
	}
	return 0
}
