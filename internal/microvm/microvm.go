// Package microvm is the groundwork of nubo's second isolation tier (issue
// #7, DESIGN.md §5): microVMs dedicated to one account, run by QEMU's
// `microvm` machine with a Debian cloud kernel and an initramfs nubo builds
// itself. This first step owns booting: finding the guest kernel, writing
// the initramfs (cpio "newc", gzip), choosing the accelerator — KVM only
// where a probe boot reaches the guest's init, QEMU's TCG emulation
// otherwise, with the reason — and running a VM whose serial console the
// host reads. The VMM runs with QEMU's own seccomp sandbox (-sandbox on).
//
// Facts measured on the development machine (QEMU 7.2, kernel 6.1 cloud):
// `-M microvm` boots the bzImage directly (its option ROM loads it) and
// reaches /init in about 4 s under TCG; under this host's KVM QEMU aborts
// at once ("failed to set MSR 0x10a"), so the probe falls back to TCG.
package microvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// QEMU is the emulator binary.
const QEMU = "qemu-system-x86_64"

// FindKernel returns the newest Debian cloud kernel under /boot.
func FindKernel() (string, error) {
	matches, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(matches) == 0 {
		return "", errors.New("microvm: no guest kernel in /boot (install linux-image-cloud-amd64)")
	}
	sort.Strings(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		if strings.Contains(matches[i], "cloud") {
			return matches[i], nil
		}
	}
	return matches[len(matches)-1], nil
}

// Accel is the accelerator a VM runs on, with why it was chosen.
type Accel struct {
	Name   string // "kvm" or "tcg"
	Reason string
}

// Config describes one VM.
type Config struct {
	Kernel   string
	Initrd   string
	MemoryMB int
	CPUs     int
	Accel    string // "kvm" or "tcg"
	// Cmdline is appended to the kernel's; the console is always ttyS0.
	Cmdline string
	// Console receives the serial console (the guest's kernel log and init
	// output); nil discards it.
	Console io.Writer
}

// VM is a running QEMU.
type VM struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (c *Config) args() []string {
	mem := c.MemoryMB
	if mem == 0 {
		mem = 256
	}
	return []string{
		// No guest RAM in host core dumps; no page merging across tenants.
		"-M", "microvm,rtc=off,dump-guest-core=off,mem-merge=off", "-accel", c.Accel, "-cpu", cpuModel(c.Accel),
		"-m", fmt.Sprint(mem), "-smp", fmt.Sprint(max(c.CPUs, 1)),
		"-nodefaults", "-no-reboot", "-nographic", "-serial", "stdio", "-no-user-config",
		// QEMU's own seccomp filter confines the VMM process.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-kernel", c.Kernel, "-initrd", c.Initrd,
		"-append", kernelCmdline(c.Accel, c.Cmdline),
	}
}

// cpuModel is the guest CPU: -cpu host trips over MSRs some nested hosts
// refuse (the probe boot decides whether KVM is usable at all).
func cpuModel(accel string) string {
	if accel == "kvm" {
		return "host,-arch-capabilities"
	}
	return "max"
}

// kernelCmdline is the guest kernel's command line. Under TCG the guest
// calibrates its TSC against the emulated PIT, which fails on a loaded
// host ("tsc: Unable to calibrate against PIT") and then stalls in early
// boot waiting for timer ticks; tsc_early_khz skips that calibration. Under
// TCG the guest's TSC is the host's, so the host's frequency is right.
func kernelCmdline(accel, extra string) string {
	cmd := "console=ttyS0 panic=-1 quiet no_timer_check"
	if accel != "kvm" {
		if khz := hostCPUKHz(); khz > 0 {
			cmd += fmt.Sprintf(" tsc_early_khz=%d", khz)
		}
	}
	return strings.TrimSpace(cmd + " " + extra)
}

// hostCPUKHz reads the host CPU's clock from /proc/cpuinfo (0 if unknown).
func hostCPUKHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			var mhz float64
			if _, err := fmt.Sscan(strings.TrimSpace(v), &mhz); err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// Boot starts a VM. It stops when ctx ends, when the guest powers off, or
// with Kill.
func Boot(ctx context.Context, c Config) (*VM, error) {
	if c.Accel == "" {
		c.Accel = "tcg"
	}
	cmd := exec.CommandContext(ctx, QEMU, c.args()...)
	cmd.Stdin = nil
	out := c.Console
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout = out
	cmd.Stderr = out
	// The VMM must not outlive nubo.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("microvm: start %s: %w", QEMU, err)
	}
	vm := &VM{cmd: cmd, done: make(chan struct{})}
	go func() {
		vm.err = cmd.Wait()
		close(vm.done)
	}()
	return vm, nil
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Err is QEMU's exit error, valid after Done.
func (vm *VM) Err() error { return vm.err }

// Kill stops the VM and waits for QEMU to exit.
func (vm *VM) Kill() {
	vm.cmd.Process.Kill()
	<-vm.done
}

// lineWatcher is a console writer that signals when a line holds a marker.
type lineWatcher struct {
	mu     sync.Mutex
	marker string
	buf    strings.Builder
	found  chan string
	last   string
}

func newLineWatcher(marker string) *lineWatcher {
	return &lineWatcher{marker: marker, found: make(chan string, 1)}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	data := w.buf.String()
	// Only complete lines: a marker line may arrive in pieces.
	for {
		nl := strings.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		line := strings.TrimRight(data[:nl], "\r")
		data = data[nl+1:]
		if line != "" {
			w.last = line
		}
		if strings.Contains(line, w.marker) {
			select {
			case w.found <- line:
			default:
			}
		}
	}
	w.buf.Reset()
	w.buf.WriteString(data)
	return len(p), nil
}

// BootUntil boots c and waits for a console line containing marker; it
// returns that line and leaves the VM running (the caller kills it).
func BootUntil(ctx context.Context, c Config, marker string, timeout time.Duration) (*VM, string, error) {
	w := newLineWatcher(marker)
	if c.Console != nil {
		c.Console = io.MultiWriter(c.Console, w)
	} else {
		c.Console = w
	}
	vm, err := Boot(ctx, c)
	if err != nil {
		return nil, "", err
	}
	select {
	case line := <-w.found:
		return vm, line, nil
	case <-vm.Done():
		w.mu.Lock()
		last := w.last
		w.mu.Unlock()
		return nil, "", fmt.Errorf("microvm: %s exited before the guest reached init (%v): %s", c.Accel, vm.Err(), last)
	case <-time.After(timeout):
		vm.Kill()
		w.mu.Lock()
		last := w.last
		w.mu.Unlock()
		return nil, "", fmt.Errorf("microvm: no sign of the guest's init after %v under %s; last console line: %q", timeout, c.Accel, last)
	}
}

// DetectAccel chooses the accelerator: KVM when /dev/kvm opens and a probe
// boot of kernel+initrd (with cmdline) reaches the marker its init prints, TCG otherwise.
// The reason says which and why, for the server's log.
func DetectAccel(ctx context.Context, kernel, initrd, marker, cmdline string) Accel {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return Accel{Name: "tcg", Reason: "no usable /dev/kvm: " + err.Error()}
	}
	f.Close()
	// A guest that KVM can run reaches init in a second or two; some
	// nested hosts accept the VM but never get it there.
	vm, _, err := BootUntil(ctx, Config{Kernel: kernel, Initrd: initrd, Accel: "kvm", MemoryMB: 128, Cmdline: cmdline}, marker, 8*time.Second)
	if err != nil {
		return Accel{Name: "tcg", Reason: "KVM probe boot failed: " + err.Error()}
	}
	vm.Kill()
	return Accel{Name: "kvm", Reason: "KVM probe boot reached the guest's init"}
}
