package netenv

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// /proc/sys/net is resolved against the network namespace of the thread
// that opens the file, not the process's: the helpers below act on
// whichever namespace their caller's thread is in (see inNetns).

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(path, value string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
}

// disableIPv6 turns IPv6 off on ifname before it comes up, so it never
// gets a link-local address, a route, or sends DAD and router
// solicitations. Environments are IPv4 only; an IPv6 link-local path to the
// bridge would reach host services around the IPv4 rules of the iptables
// backend. A kernel without IPv6 (ipv6.disable=1) has nothing to disable.
func disableIPv6(ifname string) error {
	err := writeSysctl("net/ipv6/conf/"+ifname+"/disable_ipv6", "1")
	if errors.Is(err, fs.ErrNotExist) && !ipv6Present() {
		return nil
	}
	return err
}

// disableHostIPv6 is disableIPv6 for a device of the host's namespace,
// whichever thread calls it: the file is opened relative to the conf
// directory New kept, whose namespace was fixed when it was opened. A path from /proc/sys is
// looked up among every network namespace's entries of the same name, so
// its cost grows with the environments that exist: 146–168 µs an open with
// 530 of them, 5 µs relative to the directory (and 5 µs from /proc/sys
// once they are gone).
//
// A device whose MTU is below IPv6's minimum (1280) has no IPv6 at all, and
// no conf directory: nothing to disable (all nubo's devices have the
// bridge's MTU, from the host's default route, which can be that small).
func (m *Manager) disableHostIPv6(ifname string) error {
	if m.mtu < ipv6MinMTU && m.mtu > 0 {
		return nil
	}
	if m.hostConf == nil {
		return disableIPv6(ifname)
	}
	fd, err := unix.Openat(int(m.hostConf.Fd()), ifname+"/disable_ipv6", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6", Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("1")); err != nil {
		return &os.PathError{Op: "write", Path: "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6", Err: err}
	}
	return nil
}

// ipv6MinMTU is IPv6's minimum link MTU (RFC 8200): the kernel keeps no
// IPv6 state for a device below it.
const ipv6MinMTU = 1280

// ipv6Present reports whether the kernel has IPv6 (not ipv6.disable=1).
func ipv6Present() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return !errors.Is(err, fs.ErrNotExist)
}

// loadIPv6 makes the kernel load IPv6 if it is a module not loaded yet:
// otherwise nubo would find nothing to disable, and a function's first
// IPv6 socket would load it later, with IPv6 on everywhere. Opening a
// socket of the family is what loads it; a kernel booted with
// ipv6.disable=1 refuses, and then has no IPv6 to fear.
func loadIPv6() {
	if ipv6Present() {
		return
	}
	if fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
}

// enableForwarding sets net.ipv4.ip_forward=1, without which nothing is
// routed from the bridge to the outside. It is host-wide and stays on after
// nubo stops (as with every container runtime): turning it off again could
// break whatever else on the host routes. Note that the kernel also turns
// off net.ipv4.conf.all.accept_redirects when forwarding goes on.
func enableForwarding(log *slog.Logger) error {
	v, err := readSysctl("net/ipv4/ip_forward")
	if err != nil {
		return err
	}
	if v == "1" {
		return nil
	}
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("netenv: enable IPv4 forwarding: %w", err)
	}
	log.Info("netenv: enabled IPv4 forwarding (net.ipv4.ip_forward=1); it stays enabled after nubo stops")
	return nil
}

// inNetns runs fn on a thread that has joined the network namespace nsFD
// refers to. Sockets fn creates (netlink included) belong to that
// namespace, as do the /proc/sys/net files it opens.
//
// The thread goes back to its own namespace afterwards and is released.
// Only if that fails does it stay locked, so that Go terminates it when the
// goroutine ends rather than let other goroutines run in the environment's
// namespace. Terminating threads is avoided otherwise because a child
// started with Pdeathsig is signalled when the thread that forked it exits,
// and the sandbox starts its processes from threads of this same process.
func inNetns(nsFD int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("own network namespace: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		err = fn()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// nsID identifies a namespace file by device and inode.
type nsID struct{ dev, ino uint64 }

func nsIDOf(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

func nsIDOfPath(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}
