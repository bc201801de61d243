package wrap

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the app the wrapper starts (real child processes):
// CT_HELPER selects what it does.
func TestMain(m *testing.M) {
	switch os.Getenv("CT_HELPER") {
	case "":
		os.Exit(m.Run())
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("CT_CODE"))
		os.Exit(code)
	case "trap": // report the signals it gets; exit 42 on SIGTERM
		ch := make(chan os.Signal, 8)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGINT, syscall.SIGQUIT)
		f, _ := os.OpenFile(os.Getenv("CT_OUT"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		fmt.Fprintf(f, "ready %d\n", os.Getpid())
		for s := range ch {
			fmt.Fprintf(f, "%s\n", s)
			if s == syscall.SIGTERM {
				f.Close()
				os.Exit(42)
			}
		}
	case "sleep": // default dispositions: dies of the signal
		f, _ := os.OpenFile(os.Getenv("CT_OUT"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		fmt.Fprintf(f, "ready %d\n", os.Getpid())
		f.Close()
		time.Sleep(time.Minute)
	case "orphans": // leave children behind that exit after the app is gone, then exit 0 later
		self, _ := os.Executable()
		for i := 0; i < 3; i++ {
			attr := &os.ProcAttr{Env: []string{"CT_HELPER=exit", "CT_CODE=0"}, Files: []*os.File{nil, nil, nil}}
			p, err := os.StartProcess(self, []string{self}, attr)
			if err == nil {
				_ = p.Release() // never waited for: the wrapper must reap it
			}
		}
		time.Sleep(300 * time.Millisecond)
		os.Exit(5)
	case "runexec": // the exec subcommand, as the kubelet would start it for a probe
		os.Exit(RunExec(os.Args[1:], os.Environ(), os.Stderr))
	case "argv-env": // its arguments, then its environment
		f, _ := os.Create(os.Getenv("CT_OUT"))
		for _, a := range os.Args[1:] {
			fmt.Fprintln(f, "ARG="+a)
		}
		for _, kv := range os.Environ() {
			fmt.Fprintln(f, kv)
		}
		f.Close()
		os.Exit(0)
	case "env":
		f, _ := os.Create(os.Getenv("CT_OUT"))
		for _, kv := range os.Environ() {
			fmt.Fprintln(f, kv)
		}
		f.Close()
		os.Exit(0)
	}
	os.Exit(99)
}

func jsonNumber(s string) any { return jsonNum(s) }

type jsonNum = json.Number
