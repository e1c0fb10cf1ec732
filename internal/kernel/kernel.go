// Package kernel tells which Linux release nubo runs on, for what depends
// on one: nested epoll that passes readiness on soundly (5.10, package
// rawio), a conntrack dump the kernel filters (5.8, package netenv).
package kernel

import (
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// AtLeast reports whether the running kernel is major.minor or later;
// false when its release cannot be read.
func AtLeast(major, minor int) bool {
	return releaseAtLeast(release(), major, minor)
}

// release is uname's release ("6.1.0-18-amd64"), "" if uname fails.
var release = sync.OnceValue(func() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
})

// releaseAtLeast reports whether release is major.minor or later.
func releaseAtLeast(release string, major, minor int) bool {
	f := strings.FieldsFunc(release, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(f[0])
	mi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
