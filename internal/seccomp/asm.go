//go:build linux

package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// label names a position in the program being assembled.
type label int

// noLabel on a conditional branch means "fall through to the next
// instruction".
const noLabel label = -1

// item is one assembled instruction, or a label definition (isLabel).
// Conditional jumps name their targets by label; assemble turns them into
// the 8-bit offsets classic BPF has, inserting long jumps where needed.
type item struct {
	isLabel bool
	lbl     label

	code   uint16
	k      uint32
	jt, jf label // conditional jumps
	ja     label // unconditional jump

	// farT/farF: the branch is too far for 8 bits and goes through a
	// following BPF_JA instead. Only ever switched on (see assemble).
	farT, farF bool
}

type assembler struct {
	items  []item
	labels int
	rets   map[uint32]label // one shared return instruction per value
}

func newAssembler() *assembler {
	return &assembler{rets: map[uint32]label{}}
}

func (a *assembler) newLabel() label {
	a.labels++
	return label(a.labels - 1)
}

func (a *assembler) place(l label) {
	a.items = append(a.items, item{isLabel: true, lbl: l})
}

// load puts the 32-bit word at off in struct seccomp_data into A.
func (a *assembler) load(off uint32) {
	a.items = append(a.items, item{code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: off, jt: noLabel, jf: noLabel, ja: noLabel})
}

func (a *assembler) and(k uint32) {
	a.items = append(a.items, item{code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, k: k, jt: noLabel, jf: noLabel, ja: noLabel})
}

// jump emits a conditional jump (op is BPF_JEQ, BPF_JGT, BPF_JGE or
// BPF_JSET) and returns its index so a tree builder can set targets later.
func (a *assembler) jump(op uint16, k uint32, jt, jf label) int {
	a.items = append(a.items, item{code: unix.BPF_JMP | op | unix.BPF_K, k: k, jt: jt, jf: jf, ja: noLabel})
	return len(a.items) - 1
}

func (a *assembler) goTo(l label) {
	a.items = append(a.items, item{code: unix.BPF_JMP | unix.BPF_JA, jt: noLabel, jf: noLabel, ja: l})
}

// retLabel is the label of a shared "return r" instruction, emitted by
// assemble at the end of the program.
func (a *assembler) retLabel(r uint32) label {
	if l, ok := a.rets[r]; ok {
		return l
	}
	l := a.newLabel()
	a.rets[r] = l
	return l
}

// size is the number of BPF instructions item i becomes.
func (it *item) size() int {
	if it.isLabel {
		return 0
	}
	n := 1
	if it.farT {
		n++
	}
	if it.farF {
		n++
	}
	return n
}

func isCond(code uint16) bool {
	return code&0x07 == unix.BPF_JMP && code&0xf0 != unix.BPF_JA
}

// assemble resolves labels into a Program. A conditional branch whose
// target is more than 255 instructions ahead is routed through a BPF_JA
// placed right after it; since that only lengthens the program, the loop
// reaches a fixed point.
func (a *assembler) assemble() (Program, error) {
	// The shared returns go last, in a fixed order for determinism.
	for _, r := range sortedKeys(a.rets) {
		a.place(a.rets[r])
		a.items = append(a.items, item{code: unix.BPF_RET | unix.BPF_K, k: r, jt: noLabel, jf: noLabel, ja: noLabel})
	}
	pos := make([]int, a.labels)
	for {
		at := 0
		for i := range pos {
			pos[i] = -1
		}
		for i := range a.items {
			if a.items[i].isLabel {
				pos[a.items[i].lbl] = at
			}
			at += a.items[i].size()
		}
		changed := false
		at = 0
		for i := range a.items {
			it := &a.items[i]
			if !it.isLabel && isCond(it.code) {
				next := at + 1
				if it.jt != noLabel && !it.farT && pos[it.jt]-next > 255 {
					it.farT, changed = true, true
				}
				if it.jf != noLabel && !it.farF && pos[it.jf]-next > 255 {
					it.farF, changed = true, true
				}
			}
			at += it.size()
		}
		if !changed {
			break
		}
	}

	var p Program
	target := func(l label) (int, error) {
		if l < 0 || int(l) >= len(pos) || pos[l] < 0 {
			return 0, fmt.Errorf("seccomp: label %d never placed", l)
		}
		return pos[l], nil
	}
	// longJump is a BPF_JA from the instruction at from to the one at to;
	// classic BPF only jumps forward.
	longJump := func(from, to int) (unix.SockFilter, error) {
		if to <= from {
			return unix.SockFilter{}, fmt.Errorf("seccomp: backward jump from %d to %d", from, to)
		}
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(to - from - 1)}, nil
	}
	for i := range a.items {
		it := &a.items[i]
		if it.isLabel {
			continue
		}
		here := len(p)
		switch {
		case it.code == unix.BPF_JMP|unix.BPF_JA:
			t, err := target(it.ja)
			if err != nil {
				return nil, err
			}
			ja, err := longJump(here, t)
			if err != nil {
				return nil, err
			}
			p = append(p, ja)
		case isCond(it.code):
			// Layout: the jump, then the JA for a far true branch, then the
			// one for a far false branch. Offsets count from the
			// instruction after the jump, so a fall-through skips the
			// trampolines.
			ins := unix.SockFilter{Code: it.code, K: it.k}
			var far []label
			if it.farT {
				far = append(far, it.jt)
			}
			if it.farF {
				far = append(far, it.jf)
			}
			branch := func(l label, isFar bool, tramp int) (uint8, error) {
				switch {
				case isFar:
					return uint8(tramp), nil
				case l == noLabel:
					return uint8(len(far)), nil
				}
				t, err := target(l)
				if err != nil {
					return 0, err
				}
				d := t - here - 1
				if d < len(far) || d > 255 {
					return 0, fmt.Errorf("seccomp: jump offset %d out of range", d)
				}
				return uint8(d), nil
			}
			var err error
			if ins.Jt, err = branch(it.jt, it.farT, 0); err != nil {
				return nil, err
			}
			if ins.Jf, err = branch(it.jf, it.farF, len(far)-1); err != nil {
				return nil, err
			}
			p = append(p, ins)
			for _, l := range far {
				t, err := target(l)
				if err != nil {
					return nil, err
				}
				ja, err := longJump(len(p), t)
				if err != nil {
					return nil, err
				}
				p = append(p, ja)
			}
		default:
			p = append(p, unix.SockFilter{Code: it.code, K: it.k})
		}
	}
	if len(p) > maxInsns {
		return nil, fmt.Errorf("seccomp: program has %d instructions, the kernel takes at most %d", len(p), maxInsns)
	}
	return p, nil
}
