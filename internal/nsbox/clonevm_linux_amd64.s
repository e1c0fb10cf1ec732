//go:build !race

#include "textflag.h"

// func cloneVM(args *cloneArgs, size uintptr, p *initProg) (r uintptr, errno syscall.Errno)
//
// clone3(args, size). The parent returns the child's pid, or -1 and the
// errno. The child starts on the stack args names (the kernel sets its
// stack pointer to the stack's end) and calls replayChild(p), which execs
// or exits: it never comes back here. See clonevm_linux_amd64.go.
TEXT ·cloneVM(SB),NOSPLIT|NOFRAME,$0-40
	MOVQ	args+0(FP), DI
	MOVQ	size+8(FP), SI
	// The child keeps every register but AX, CX and R11: p travels in
	// R12, which the system call leaves alone.
	MOVQ	p+16(FP), R12
	MOVQ	$435, AX // SYS_clone3
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$-1, r+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, r+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
child:
	// One argument slot (ABI0) and room to keep the stack 16-byte aligned.
	SUBQ	$16, SP
	MOVQ	R12, 0(SP)
	CALL	·replayChild(SB)
die:
	MOVL	$1, DI
	MOVL	$231, AX // SYS_exit_group
	SYSCALL
	JMP	die
