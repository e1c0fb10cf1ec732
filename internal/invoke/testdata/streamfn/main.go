// Command streamfn is a custom runtime that streams its responses, as a
// runtime does for Lambda's response streaming: POST /response with
// Lambda-Runtime-Function-Response-Mode: streaming and a chunked body,
// written part by part. The event says how:
//
//	{"parts": N, "bytes": B, "ms": D, "fail": true}
//
// N parts of B bytes each ("part-i" then padding and a newline), D ms
// apart; with fail, the error trailers end the stream after the parts.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

type event struct {
	Parts int  `json:"parts"`
	Bytes int  `json:"bytes"`
	Ms    int  `json:"ms"`
	Fail  bool `json:"fail"`
}

func main() {
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
	for {
		resp, err := http.Get(api + "next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next:", err)
			os.Exit(1)
		}
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		var ev event
		_ = json.NewDecoder(resp.Body).Decode(&ev)
		resp.Body.Close()
		respond(api+id+"/response", ev)
	}
}

func respond(url string, ev event) {
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	req.Header.Set("Lambda-Runtime-Function-Response-Mode", "streaming")
	req.Header.Set("Content-Type", "text/plain")
	req.Trailer = http.Header{"Lambda-Runtime-Function-Error-Type": nil, "Lambda-Runtime-Function-Error-Body": nil}
	go func() {
		for i := 0; i < ev.Parts; i++ {
			if i > 0 {
				time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
			}
			part := []byte("part-" + strconv.Itoa(i))
			if pad := ev.Bytes - len(part) - 1; pad > 0 {
				part = append(part, bytes.Repeat([]byte("."), pad)...)
			}
			part = append(part, '\n')
			if _, err := pw.Write(part); err != nil {
				return
			}
			fmt.Println("wrote part", i)
		}
		if ev.Fail {
			req.Trailer.Set("Lambda-Runtime-Function-Error-Type", "StreamBroke")
			req.Trailer.Set("Lambda-Runtime-Function-Error-Body",
				base64.StdEncoding.EncodeToString([]byte(`{"errorMessage":"broke mid-stream","errorType":"StreamBroke"}`)))
		}
		pw.Close()
	}()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "response:", err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
