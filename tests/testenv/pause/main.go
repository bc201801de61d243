// pause: the sandbox ("infra") container of the real test-bed node.
//
// It holds the pod's namespaces open: it sleeps until SIGTERM or SIGINT (then exits 0) and reaps
// every zombie it inherits as PID 1. Built statically by tests/testenv/build-k8s.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
