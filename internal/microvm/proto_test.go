package microvm

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "lib", "deep"), 0o755)
	os.WriteFile(filepath.Join(src, "bootstrap"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(src, "lib", "deep", "data.txt"), []byte("hello"), 0o644)
	os.Symlink("deep/data.txt", filepath.Join(src, "lib", "link"))
	var buf bytes.Buffer
	if err := writeTar(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := readTar(&buf, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "lib", "link")); err != nil || string(b) != "hello" {
		t.Fatalf("through the symlink: %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dst, "bootstrap")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bootstrap: %v, %v", st, err)
	}
}

// TestTarCannotEscape: a deployment package's symlink cannot carry a later
// entry outside the directory the guest unpacks into.
func TestTarSizeBound(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2048})
	tw.Write(make([]byte, 2048))
	tw.Close()
	if err := readTarLimit(bytes.NewReader(buf.Bytes()), filepath.Join(t.TempDir(), "d"), 1024); err == nil {
		t.Fatal("an entry beyond the limit was unpacked")
	}
	if err := readTarLimit(bytes.NewReader(buf.Bytes()), filepath.Join(t.TempDir(), "d"), 4096); err != nil {
		t.Fatalf("an entry within the limit: %v", err)
	}
}

func TestTarCannotEscape(t *testing.T) {
	outside := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "esc/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	err := readTar(&buf, filepath.Join(t.TempDir(), "dst"))
	if err == nil {
		t.Fatal("an entry through an escaping symlink was written")
	}
	if _, serr := os.Stat(filepath.Join(outside, "pwned")); serr == nil {
		t.Fatal("a file was written outside the directory")
	}
}

// FuzzGuestAnswer: what a (possibly compromised) guest answers is parsed
// without panicking and never read past the line.
func FuzzGuestAnswer(f *testing.F) {
	f.Add([]byte(`{"paths":{"TaskRoot":"/var/task"}}` + "\nrest"))
	f.Add([]byte(`{"error":"x"}` + "\n"))
	f.Add([]byte(`{"stats":{"MemoryPeak":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var resp response
		err := readJSONLine(r, &resp)
		if i := bytes.IndexByte(b, '\n'); err == nil && i >= 0 && r.Len() != len(b)-i-1 {
			t.Fatalf("read %d bytes past the line", len(b)-i-1-r.Len())
		}
	})
}

func yamuxFrame(typ byte, flags uint16, id, length uint32, payload []byte) []byte {
	h := make([]byte, 12)
	h[1] = typ
	h[2], h[3] = byte(flags>>8), byte(flags)
	h[4], h[5], h[6], h[7] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
	h[8], h[9], h[10], h[11] = byte(length>>24), byte(length>>16), byte(length>>8), byte(length)
	return append(h, payload...)
}

func TestFrameGuard(t *testing.T) {
	ok := bytes.Join([][]byte{
		yamuxFrame(1, 2, 1, 0, nil),                            // ACK of the host's stream 1
		yamuxFrame(0, 0, 1, 5, []byte("\x02\x00\x00\x00\x00")), // data that looks like a ping header
		yamuxFrame(1, 4, 3, 0, nil),                            // FIN
	}, nil)
	for _, tc := range []struct {
		name string
		in   []byte
		bad  bool
	}{
		{"normal", ok, false},
		{"ping", append(ok, yamuxFrame(2, 1, 0, 7, nil)...), true},
		{"guest SYN", append(ok, yamuxFrame(1, 1, 2, 0, nil)...), true},
		{"even stream", append(ok, yamuxFrame(0, 0, 4, 0, nil)...), true},
	} {
		var why string
		g := &frameGuard{violation: func(w string) { why = w }}
		// Byte by byte: frames split across reads.
		for i := range tc.in {
			if w := g.inspect(tc.in[i : i+1]); w != "" {
				why = w
				break
			}
		}
		if (why != "") != tc.bad {
			t.Errorf("%s: violation %q, want bad=%v", tc.name, why, tc.bad)
		}
	}
}
