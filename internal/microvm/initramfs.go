package microvm

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// File is one entry of an initramfs.
type File struct {
	Name string // path inside, without a leading slash
	Mode os.FileMode
	Body []byte
	// Link makes the entry a symlink to Link.
	Link string
}

// WriteInitramfs writes files as a gzip-compressed cpio "newc" archive,
// the format the kernel unpacks into its initial root. Parent directories
// are added as needed.
func WriteInitramfs(w io.Writer, files []File) error {
	zw := gzip.NewWriter(w)
	if err := writeCpio(zw, files); err != nil {
		return err
	}
	return zw.Close()
}

// writeCpio writes files as an uncompressed cpio "newc" archive.
func writeCpio(zw io.Writer, files []File) error {
	dirs := map[string]bool{}
	names := map[string]bool{}
	for _, f := range files {
		names[f.Name] = true
	}
	var all []File
	for _, f := range files {
		parts := strings.Split(f.Name, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if !dirs[d] && !names[d] {
				dirs[d] = true
				all = append(all, File{Name: d, Mode: os.ModeDir | 0o755})
			}
		}
		all = append(all, f)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	ino := 1
	for _, f := range all {
		if err := writeEntry(zw, ino, f); err != nil {
			return err
		}
		ino++
	}
	return writeHeader(zw, "TRAILER!!!", 0, 0, 0, 0)
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

func writeEntry(w io.Writer, ino int, f File) error {
	var mode uint32
	body := f.Body
	switch {
	case f.Link != "":
		mode = sIFLNK | 0o777
		body = []byte(f.Link)
	case f.Mode.IsDir():
		mode = sIFDIR | uint32(f.Mode.Perm())
		body = nil
	default:
		mode = sIFREG | uint32(f.Mode.Perm())
	}
	nlink := 1
	if f.Mode.IsDir() {
		nlink = 2
	}
	if err := writeHeader(w, f.Name, ino, mode, nlink, len(body)); err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return pad(w, len(body))
}

// writeHeader writes a newc header and the name, padded to 4 bytes.
func writeHeader(w io.Writer, name string, ino int, mode uint32, nlink, size int) error {
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if _, err := io.WriteString(w, hdr+name+"\x00"); err != nil {
		return err
	}
	return pad(w, len(hdr)+len(name)+1)
}

func pad(w io.Writer, n int) error {
	if r := n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}
