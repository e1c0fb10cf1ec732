package main

import (
	"fmt"
	"os/exec"
	"time"
)

// timeExec times one fork+exec of argv to its exit: the floors the cold
// figures are read against (a process cannot start faster than the kernel
// runs it, nor a sandbox faster than its namespaces are made). wantOK says
// whether a non-zero exit is a failure: the echo bootstrap run outside
// Lambda exits 1 once its runtime is up, which is exactly the point timed.
func timeExec(wantOK bool, argv ...string) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		if _, exited := err.(*exec.ExitError); !exited || wantOK {
			return 0, fmt.Errorf("%v: %w", argv, err)
		}
	}
	return d, nil
}
