// Command cloudtaser-runtime is the in-cluster runtime of cloudtaser: one static binary
// with subcommands. Subcommands are registered in the commands table; the injector adds
// its own entry there.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/install"
	"cloudtaser/runtime/internal/wrap"
)

// started is taken as early as Go lets a program run, for the wrapper's timing output.
var started = time.Now()

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

type command struct {
	usage string
	help  string
	run   func(args []string) int
}

var commands = map[string]command{
	"wrap": {
		usage: "wrap -- COMMAND [ARGS...]",
		help:  "log in to the vault, fetch the pod's secrets and start COMMAND with them",
		run:   runWrap,
	},
	"inject": {
		usage: "inject --runtime-image REF ...",
		help:  "the admission webhook that injects the wrapper into opted-in pods (docs/injector.md)",
		run:   runInject,
	},
	"install": {
		usage: "install DIR",
		help:  "copy this binary into DIR (mode 0555) and exit; what the init container runs",
		run:   runInstall,
	},
	"version": {
		usage: "version",
		help:  "print the version",
		run: func([]string) int {
			fmt.Println("cloudtaser-runtime", version)
			return 0
		},
	},
}

func usage() {
	var b strings.Builder
	b.WriteString("usage: cloudtaser-runtime COMMAND [ARGS...]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-28s %s\n", commands[n].usage, commands[n].help)
	}
	b.WriteString("\nSee docs/connect-and-runtime.md for the wrapper's environment variables.\n")
	fmt.Fprint(os.Stderr, b.String())
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(wrap.ExitConfig)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		os.Exit(0)
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: unknown command %q\n", name)
		usage()
		os.Exit(wrap.ExitConfig)
	}
	os.Exit(cmd.run(os.Args[2:]))
}

func runWrap(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "cloudtaser-runtime: no command: cloudtaser-runtime wrap -- COMMAND [ARGS...]")
		return wrap.ExitConfig
	}
	environ := os.Environ() // the app's environment, unchanged
	wrap.IsolateProcessEnv()
	cfg, err := contract.ResolveEnv(contract.EnvMap(environ), contract.OSFileExists)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return wrap.ExitConfig
	}
	w := &wrap.Wrapper{Cfg: cfg, Argv: args, Environ: environ, Stderr: os.Stderr, Started: started}
	return w.Run()
}

func runInstall(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: cloudtaser-runtime install DIR")
		return wrap.ExitConfig
	}
	dst, err := install.Install("/proc/self/exe", args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cloudtaser-runtime: installed %s\n", dst)
	return 0
}
