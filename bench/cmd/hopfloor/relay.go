package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nubo-dev/nubo/internal/rawio"
	"github.com/nubo-dev/nubo/internal/sigv4"
)

// serveRelayed is the least server with one relay process per runtime
// between them, as nubo has an agent per environment: the server hands a
// request's body to an idle relay over a socketpair (a 4-byte length,
// then the bytes), and the relay serves its runtime's Runtime API with the
// least HTTP a runtime accepts. It is the floor under any server that
// keeps a process between itself and the function's runtime.
func serveRelayed(self, bootstrap string, n int, v *sigv4.Verifier) http.HandlerFunc {
	type relay struct {
		c  io.ReadWriter
		hd [4]byte
	}
	idle := make(chan *relay, n)
	for range n {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			panic(err)
		}
		theirs := os.NewFile(uintptr(fds[1]), "relay")
		cmd := exec.Command(self, "relay", bootstrap)
		cmd.ExtraFiles = []*os.File{theirs}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		theirs.Close()
		// Read and written as nubo serve's end of an agent's socketpair.
		c, err := rawio.NewQuiet(fds[0], "relay")
		if err != nil {
			panic(err)
		}
		idle <- &relay{c: c}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if v != nil {
			if _, err := v.Verify(r, b); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		rl := <-idle
		defer func() { idle <- rl }()
		out, err := exchange(rl.c, rl.hd[:], b)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

// exchange writes one frame to c and reads one back.
func exchange(c io.ReadWriter, hd, body []byte) ([]byte, error) {
	if err := writeFrame(c, body); err != nil {
		return nil, err
	}
	return readFrame(c, hd)
}

func writeFrame(c io.Writer, body []byte) error {
	f := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(f, uint32(len(body)))
	copy(f[4:], body)
	_, err := c.Write(f)
	return err
}

func readFrame(r io.Reader, hd []byte) ([]byte, error) {
	if _, err := io.ReadFull(r, hd[:4]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hd))
	_, err := io.ReadFull(r, b)
	return b, err
}

// relayMain is a relay process: the server's end of the socketpair is
// descriptor 3; it starts the runtime and serves its Runtime API.
func relayMain(bootstrap string) {
	// Read and written as the agent reads and writes its connection to
	// nubo.
	host, err := rawio.NewQuiet(3, "server")
	if err != nil {
		panic(err)
	}
	hostR := bufio.NewReader(host)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	startRuntime(bootstrap, l.Addr().String())
	var mu sync.Mutex // one request at a time, whichever connection
	var seq int
	var hd [4]byte
	for {
		c, err := l.Accept()
		if err != nil {
			panic(err)
		}
		go func() {
			defer c.Close()
			rc := rawio.Wrap(c)
			br := bufio.NewReader(rc)
			out := make([]byte, 0, 512)
			for {
				method, path, body, err := readLeast(br)
				if err != nil {
					return
				}
				mu.Lock()
				out = out[:0]
				switch {
				case method == "GET" && path == "/2018-06-01/runtime/invocation/next":
					ev, err := readFrame(hostR, hd[:])
					if err != nil {
						os.Exit(0) // the server is gone
					}
					seq++
					out = fmt.Appendf(out, "HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: %d\r\n"+
						"Lambda-Runtime-Deadline-Ms: %d\r\nLambda-Runtime-Invoked-Function-Arn: "+
						"arn:aws:lambda:us-east-1:000000000000:function:echo\r\n"+
						"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
						seq, time.Now().Add(time.Minute).UnixMilli(), len(ev))
					out = append(out, ev...)
				case method == "POST":
					if err := writeFrame(host, body); err != nil {
						os.Exit(0)
					}
					out = append(out, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"...)
				default:
					out = append(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"...)
				}
				mu.Unlock()
				if _, err := rc.Write(out); err != nil {
					return
				}
			}
		}()
	}
}

// readLeast reads one request: its method, path and body (by
// Content-Length or chunked), nothing more.
func readLeast(br *bufio.Reader) (method, path string, body []byte, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return "", "", nil, err
	}
	f := bytes.Fields(line)
	if len(f) < 2 {
		return "", "", nil, errors.New("bad request line")
	}
	method, path = string(f[0]), string(f[1])
	length, chunked := 0, false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return "", "", nil, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, val, _ := bytes.Cut(h, []byte(":"))
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(val))
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = true
		}
	}
	if !chunked {
		body = make([]byte, length)
		_, err = io.ReadFull(br, body)
		return method, path, body, err
	}
	for {
		sz, err := br.ReadSlice('\n')
		if err != nil {
			return "", "", nil, err
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
		if err != nil {
			return "", "", nil, err
		}
		if n == 0 {
			for { // trailers, then the blank line
				t, err := br.ReadSlice('\n')
				if err != nil {
					return "", "", nil, err
				}
				if len(bytes.TrimSpace(t)) == 0 {
					return method, path, body, nil
				}
			}
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return "", "", nil, err
		}
		body = append(body, chunk[:n]...)
	}
}
