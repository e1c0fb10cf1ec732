// Command ext is an external Lambda extension for the invoke end-to-end
// tests, written against the raw Extensions API (no aws-lambda-go) the way
// third-party extensions are. It records every event it receives on stdout
// (the function's log), in $TMPDIR/ext-events (the function reads it back)
// and, on SHUTDOWN, in
// $EXT_SHUTDOWN_DIR/<environment id> when that variable is set (a host
// directory the test can read once the environment is gone).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

const api = "/2020-01-01/extension"

func main() {
	base := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + api
	name := filepath.Base(os.Args[0])
	req, _ := http.NewRequest("POST", base+"/register", bytes.NewReader([]byte(`{"events":["INVOKE","SHUTDOWN"]}`)))
	req.Header.Set("Lambda-Extension-Name", name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fail("register: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fail("register: status %d", resp.StatusCode)
	}
	id := resp.Header.Get("Lambda-Extension-Identifier")
	fmt.Printf("ext %s registered\n", name)
	for {
		req, _ := http.NewRequest("GET", base+"/event/next", nil)
		req.Header.Set("Lambda-Extension-Identifier", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fail("next: %v", err)
		}
		var ev struct {
			EventType      string `json:"eventType"`
			RequestID      string `json:"requestId"`
			ShutdownReason string `json:"shutdownReason"`
		}
		err = json.NewDecoder(resp.Body).Decode(&ev)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			fail("next: status %d: %v", resp.StatusCode, err)
		}
		line := ev.EventType + " " + ev.RequestID + ev.ShutdownReason
		fmt.Println("ext event " + line)
		appendLine(filepath.Join(os.TempDir(), "ext-events"), line)
		if ev.EventType == "SHUTDOWN" {
			if dir := os.Getenv("EXT_SHUTDOWN_DIR"); dir != "" {
				stream := os.Getenv("AWS_LAMBDA_LOG_STREAM_NAME")
				envID := stream[strings.LastIndex(stream, "]")+1:]
				appendLine(filepath.Join(dir, envID), line)
			}
			os.Exit(0)
		}
	}
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fail("%v", err)
	}
	fmt.Fprintln(f, line)
	f.Close()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ext: "+format+"\n", args...)
	os.Exit(1)
}
