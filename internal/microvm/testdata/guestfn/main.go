// Command guestfn is the microVM tests' function: it reports where it runs
// (the guest's boot id, its cgroup, its uid, the kernel) and can try what a
// hostile function would.
package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	Addr string `json:"addr"`
}

func read(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func handle(ctx context.Context, ev event) (map[string]any, error) {
	switch ev.Op {
	case "read":
		return map[string]any{"body": read(ev.Path)}, nil
	case "kill1":
		return map[string]any{"err": errString(syscall.Kill(1, syscall.SIGKILL))}, nil
	case "connect":
		c, err := net.DialTimeout("tcp", ev.Addr, 5*time.Second)
		if err != nil {
			return map[string]any{"err": err.Error()}, nil
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return map[string]any{"line": strings.TrimSpace(line), "err": errString(err)}, nil
	case "mount":
		return map[string]any{"err": errString(syscall.Mount("none", "/tmp", "tmpfs", 0, ""))}, nil
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	rel := make([]byte, 0, 65)
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return map[string]any{
		"bootId": read("/proc/sys/kernel/random/boot_id"),
		"cgroup": read("/proc/self/cgroup"),
		"uid":    os.Getuid(),
		"kernel": string(rel),
		"env":    os.Getenv("AWS_LAMBDA_FUNCTION_NAME"),
	}, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func main() {
	lambda.Start(handle)
}
