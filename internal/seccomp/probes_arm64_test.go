//go:build linux && arm64

package seccomp

// archProbes: arm64 has no architecture-specific denied syscalls.
func archProbes() []probe { return nil }
