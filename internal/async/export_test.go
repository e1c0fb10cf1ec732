package async

import "time"

// SetClockSkew moves the queue's clock by d for every queue of the test
// binary; the returned func restores it.
func SetClockSkew(d time.Duration) (restore func()) {
	old := clockSkew.Swap(int64(d))
	return func() { clockSkew.Store(old) }
}
