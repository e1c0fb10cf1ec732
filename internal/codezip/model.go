package codezip

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"strings"
)

const (
	maxNameComponent = 255  // NAME_MAX
	maxPath          = 4095 // PATH_MAX less the NUL
	maxLinkTarget    = 4095
	// maxLinkHops is the kernel's limit on symlinks followed in one lookup.
	maxLinkHops = 40
	// resolveBudget bounds the path components visited while resolving all
	// symlinks of a package, so links whose targets name other links cannot
	// make the check itself expensive. Real packages use a tiny fraction.
	resolveBudget = 1 << 22
)

// The "version made by" host systems whose external attributes carry a unix
// mode in their high 16 bits.
const (
	creatorUnix   = 3
	creatorMacOSX = 19
)

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

// node is one path of the package's tree as it will exist on disk.
type node struct {
	name     string
	parent   *node
	kind     kind
	children map[string]*node
	order    []*node // children in creation order, for a stable extraction
	entry    *entry  // the entry that creates a file or symlink (the last one for a file named twice)
	target   string  // symlink target
}

// entry is one zip entry that creates or names something.
type entry struct {
	f          *zip.File
	kind       kind
	path       string // cleaned, slash-separated, relative
	exec       bool
	superseded bool // a later entry of the same file wins
	node       *node
}

// pkg is a package that passed every structural check; file contents are
// checked when they are read.
type pkg struct {
	lim                   Limits
	root                  *node
	nodes                 int
	files, dirs, symlinks int
	entries               []*entry // zip order
	count                 counter
}

// validate runs every check that needs no file content: zip structure, names,
// types, duplicates, counts, declared sizes, then reads and resolves the
// symlink targets. What remains is reading the files, which counts their
// real size and verifies their CRCs.
func validate(zipBytes []byte, lim Limits) (*pkg, error) {
	r, err := zip.NewReader(bytes.NewReader(zipBytes), int64(len(zipBytes)))
	// ErrInsecurePath comes only with GODEBUG=zipinsecurepath=0 and the
	// reader is still usable; the checks below are stricter anyway.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, errInvalid(err)
	}
	if len(r.File) > lim.MaxFiles {
		return nil, errTooManyFiles(lim.MaxFiles)
	}
	p := &pkg{
		lim:   lim,
		root:  &node{kind: kindDir},
		count: counter{max: lim.MaxUnzipped},
	}
	var declared uint64
	for _, f := range r.File {
		e, err := p.add(f)
		if err != nil {
			return nil, err
		}
		if e != nil && e.kind != kindDir {
			declared += f.UncompressedSize64
			if declared < f.UncompressedSize64 { // wrapped
				declared = ^uint64(0)
			}
		}
	}
	if declared > uint64(lim.MaxUnzipped) {
		return nil, errTooBig(lim.MaxUnzipped)
	}
	for _, e := range p.entries {
		if e.kind != kindSymlink {
			continue
		}
		t, err := p.readLink(e)
		if err != nil {
			return nil, err
		}
		switch {
		case t == "":
			return nil, errInvalidf("%s: empty symlink target", e.path)
		case strings.IndexByte(t, 0) >= 0:
			return nil, errInvalidf("%s: NUL in symlink target", e.path)
		case t[0] == '/':
			return nil, errInvalidf("%s: absolute symlink target %q", e.path, t)
		}
		e.node.target = t
	}
	budget := resolveBudget
	for _, e := range p.entries {
		if e.kind != kindSymlink {
			continue
		}
		if err := p.checkLink(e, &budget); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// classify tells what an entry creates. Only zips from unix hosts carry a
// mode; for the others a trailing slash (or the MS-DOS directory attribute)
// makes a directory and everything else is a plain file.
func classify(f *zip.File) (kind, bool, error) {
	if f.Flags&0x1 != 0 {
		return 0, false, errInvalidf("%s: encrypted entry", f.Name)
	}
	host := f.CreatorVersion >> 8
	if (host != creatorUnix && host != creatorMacOSX) || f.ExternalAttrs>>16 == 0 {
		if f.Mode().IsDir() {
			return kindDir, false, nil
		}
		return kindFile, false, nil
	}
	m := f.Mode() // also sets ModeDir for a trailing slash
	switch m.Type() {
	case os.ModeDir:
		return kindDir, false, nil
	case os.ModeSymlink:
		return kindSymlink, false, nil
	case 0:
		return kindFile, m&0o111 != 0, nil
	}
	return 0, false, errInvalidf("%s: unsupported file type %v", f.Name, m.Type())
}

// splitName turns an entry name into its path components; see the package
// doc for what is refused.
func splitName(name string) ([]string, error) {
	switch {
	case strings.IndexByte(name, 0) >= 0:
		return nil, errInvalidf("%q: NUL in name", name)
	case strings.IndexByte(name, '\\') >= 0:
		return nil, errInvalidf("%q: backslash in name", name)
	case strings.HasPrefix(name, "/"):
		return nil, errInvalidf("%q: absolute path", name)
	}
	parts := strings.Split(name, "/")
	out := parts[:0]
	size := 0
	for _, c := range parts {
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			return nil, errInvalidf("%q: '..' in path", name)
		case len(c) > maxNameComponent:
			return nil, errInvalidf("%q: name component longer than %d bytes", name, maxNameComponent)
		}
		size += len(c) + 1
		out = append(out, c)
	}
	if size-1 > maxPath {
		return nil, errInvalidf("%q: path longer than %d bytes", name, maxPath)
	}
	return out, nil
}

// add places an entry in the tree. It returns nil for an entry naming the
// root directory itself ("./"), which creates nothing.
func (p *pkg) add(f *zip.File) (*entry, error) {
	k, exec, err := classify(f)
	if err != nil {
		return nil, err
	}
	comps, err := splitName(f.Name)
	if err != nil {
		return nil, err
	}
	if len(comps) == 0 {
		if k == kindDir {
			return nil, nil
		}
		return nil, errInvalidf("%q: entry without a name", f.Name)
	}
	cur := p.root
	for _, c := range comps[:len(comps)-1] {
		child := cur.children[c]
		if child == nil {
			if child, err = p.newNode(cur, c, kindDir); err != nil {
				return nil, err
			}
		} else if child.kind != kindDir {
			// Refusing this, rather than resolving it, is what guarantees
			// that no entry is ever written through a symlink.
			return nil, errInvalidf("%q: path runs through a non-directory", f.Name)
		}
		cur = child
	}
	e := &entry{f: f, kind: k, path: strings.Join(comps, "/"), exec: exec}
	last := comps[len(comps)-1]
	n := cur.children[last]
	switch {
	case n == nil:
		if n, err = p.newNode(cur, last, k); err != nil {
			return nil, err
		}
		n.entry = e
	case n.kind == kindDir && k == kindDir:
	case n.kind == kindFile && k == kindFile:
		n.entry.superseded = true
		n.entry = e
	default:
		return nil, errInvalidf("%q: conflicts with an earlier entry of the same path", f.Name)
	}
	e.node = n
	p.entries = append(p.entries, e)
	return e, nil
}

func (p *pkg) newNode(parent *node, name string, k kind) (*node, error) {
	p.nodes++
	if p.nodes > p.lim.MaxFiles {
		return nil, errTooManyFiles(p.lim.MaxFiles)
	}
	n := &node{name: name, parent: parent, kind: k}
	if parent.children == nil {
		parent.children = make(map[string]*node)
	}
	parent.children[name] = n
	parent.order = append(parent.order, n)
	switch k {
	case kindDir:
		p.dirs++
	case kindFile:
		p.files++
	case kindSymlink:
		p.symlinks++
	}
	return n, nil
}

// checkLink resolves a symlink the way path lookup would, inside the
// package's tree, and refuses it if the lookup can climb above the root.
func (p *pkg) checkLink(e *entry, budget *int) error {
	var stack []*node
	for n := e.node.parent; n != p.root; n = n.parent {
		stack = append(stack, n)
	}
	for i, j := 0, len(stack)-1; i < j; i, j = i+1, j-1 {
		stack[i], stack[j] = stack[j], stack[i]
	}
	hops := 0
	if _, ok := p.walk(stack, e.node.target, &hops, budget); !ok {
		return errInvalidf("%s: symlink target %q leaves the package", e.path, e.node.target)
	}
	return nil
}

// walk follows path from the directory at the top of stack (the nodes from
// the root down; nil stands for a path the package does not contain). Links
// met on the way are followed like the kernel does. A ".." at the root is an
// escape. Positions under a missing path are kept as nil: the kernel would
// fail there, so treating them as directories only ever refuses more.
func (p *pkg) walk(stack []*node, path string, hops, budget *int) ([]*node, bool) {
	for len(path) > 0 {
		var c string
		if i := strings.IndexByte(path, '/'); i >= 0 {
			c, path = path[:i], path[i+1:]
		} else {
			c, path = path, ""
		}
		*budget--
		if *budget < 0 {
			return nil, false
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return nil, false
			}
			stack = stack[:len(stack)-1]
			continue
		}
		cur := p.root
		if len(stack) > 0 {
			cur = stack[len(stack)-1]
		}
		var child *node
		if cur != nil && cur.kind == kindDir {
			child = cur.children[c]
		}
		if child != nil && child.kind == kindSymlink {
			*hops++
			if *hops > maxLinkHops {
				return nil, false
			}
			var ok bool
			if stack, ok = p.walk(stack, child.target, hops, budget); !ok {
				return nil, false
			}
			continue
		}
		stack = append(stack, child)
	}
	return stack, true
}

func (p *pkg) info() Info {
	in := Info{Files: p.files, Dirs: p.dirs, Symlinks: p.symlinks, UnzippedSize: p.count.total}
	for _, e := range p.entries {
		if e.kind == kindFile && e.exec && !e.superseded {
			in.Executables = append(in.Executables, e.path)
		}
	}
	return in
}
