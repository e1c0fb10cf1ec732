package microvm

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/nubo-dev/nubo/internal/sandbox"
)

// The host and the guest agent talk over one virtio-serial port carrying a
// yamux session: the host opens a stream per request. A request is one
// JSON line; the guest answers with one JSON line. After a successful
// "create" the stream is the sandbox's agent connection and carries the
// same framed protocol (package agentproto) as on the host backend; after
// "put" the host sends a tar stream of the directory before the answer.

// Operations.
const (
	opSetup     = "setup"     // tar of the runtime clients follows; makes the guest's sandbox backend
	opPut       = "put"       // tar of a code or layers directory follows, stored under Key
	opDrop      = "drop"      // removes the tree stored under Key (no sandbox uses it)
	opCreate    = "create"    // a sandbox; the stream then is its agent connection
	opWait      = "wait"      // answers when the sandbox's agent has exited
	opFreeze    = "freeze"    //
	opThaw      = "thaw"      //
	opAfterInit = "afterinit" //
	opStats     = "stats"     //
	opDestroy   = "destroy"   //
	opInfo      = "info"      // the guest's boot id, memory and sandboxes
	opClock     = "clock"     // sets the guest's wall clock to HostTimeNs
)

type request struct {
	Op  string `json:"op"`
	ID  string `json:"id,omitempty"`
	Key string `json:"key,omitempty"`
	// Create.
	Spec   *guestSpec `json:"spec,omitempty"`
	Code   string     `json:"code,omitempty"`
	Layers string     `json:"layers,omitempty"`
	// Setup: the guest's network, when it has one.
	Net *GuestNet `json:"net,omitempty"`
	// TimerSlackNs is the timer slack of the guest's sandboxes
	// (nsbox.Config.TimerSlack); 0 leaves the guest kernel's default.
	TimerSlackNs int64 `json:"timerSlackNs,omitempty"`
	// HostTimeNs is the host's wall clock when it sent the request (setup,
	// create, clock): a guest without an RTC would otherwise live in 1970,
	// and an emulated one drifts. Invocation deadlines are wall-clock times.
	HostTimeNs int64 `json:"hostTimeNs,omitempty"`
}

// GuestNet is the guest's place on the host's environment network: its
// virtio-net interface gets Addr (with the subnet's length), MTU and MAC,
// and a default route via Gateway.
type GuestNet struct {
	Addr    string `json:"addr"`
	Gateway string `json:"gateway"`
	MAC     string `json:"mac"`
	MTU     int    `json:"mtu"`
	// ResolvConf is the host's, as its own sandboxes get it
	// (nsbox.ResolvConf): the guest's image cannot read the host's
	// systemd-resolved state under /run.
	ResolvConf string `json:"resolvConf,omitempty"`
}

// guestSpec is the part of sandbox.Spec that crosses into the guest: host
// paths do not.
type guestSpec struct {
	ID          string `json:"id"`
	Account     string `json:"account"`
	MemoryMB    int    `json:"memoryMB"`
	EphemeralMB int    `json:"ephemeralMB"`
	NoNetwork   bool   `json:"noNetwork"`
}

type response struct {
	Error string         `json:"error,omitempty"`
	Paths *sandbox.Paths `json:"paths,omitempty"`
	Stats *sandbox.Stats `json:"stats,omitempty"`
	Info  *GuestInfo     `json:"info,omitempty"`
}

// GuestInfo describes a running guest.
type GuestInfo struct {
	BootID    string `json:"bootId"`
	MemoryMB  int    `json:"memoryMB"`
	Sandboxes int    `json:"sandboxes"`
	Cgroup    string `json:"cgroup"` // "v2" inside the guest
}

// maxLine bounds a request or answer line.
const maxLine = 1 << 20

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readJSONLine reads one line byte by byte, so nothing after it (the tar
// stream or the agent's frames) is consumed.
func readJSONLine(r io.Reader, v any) error {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return err
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) > maxLine {
			return errors.New("microvm: line too long")
		}
	}
	return json.Unmarshal(line, v)
}

// writeTar sends dir (regular files, directories, symlinks) as a tar stream.
func writeTar(w io.Writer, dir string) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	tw := tar.NewWriter(bw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// readTar unpacks a tar stream into dir. The archive is the unpacked
// deployment package, which its owner wrote: every entry is resolved
// through os.Root, so no name or symlink can reach outside dir.
func readTar(r io.Reader, dir string) error { return readTarLimit(r, dir, maxTarBytes) }

// maxTarBytes bounds what one tar stream may unpack to: more than a
// function's code (250 MB unzipped) plus its layers.
const maxTarBytes = 2 << 30

// readTarLimit is readTar unpacking at most limit bytes of file content.
func readTarLimit(r io.Reader, dir string, limit int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(hdr.Name)
		if name == "." || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("microvm: tar entry %q leaves its directory", hdr.Name)
		}
		mode := os.FileMode(hdr.Mode).Perm()
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			if hdr.Size < 0 || hdr.Size > limit {
				return fmt.Errorf("microvm: tar entry %q: %d bytes is beyond what is left (%d)", hdr.Name, hdr.Size, limit)
			}
			limit -= hdr.Size
			f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
			if err != nil {
				return err
			}
			if _, err := io.CopyN(f, tr, hdr.Size); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}
