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
	"exec": {
		usage: "exec -- COMMAND [ARGS...]",
		help:  "run COMMAND with the app's environment (an exec probe or hook the injector routes here; no vault login)",
		run:   func(args []string) int { return wrap.RunExec(execCommand(args), os.Environ(), os.Stderr) },
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

// wrapHelp is the text of `cloudtaser-runtime wrap -h`.
const wrapHelp = `usage: cloudtaser-runtime wrap [--] COMMAND [ARGS...]

Log in to the vault with the pod's ServiceAccount token, read the secrets the pod's
CLOUDTASER_* environment maps (fail closed: nothing starts when one is missing), and start
COMMAND with them as environment variables, without the wrapper's own variables. The
injector writes this command line into opted-in pods; wrap takes no flags of its own:
everything after "wrap" (and an optional "--") is the command to run. The one exception is
the injector's --expand=PLAN before "--": the $(VAR) references of the pod spec it left for
the wrapper to expand with the vault's values (docs/injector.md).

environment: docs/connect-and-runtime.md lists every CLOUDTASER_* variable.

exit codes: COMMAND's own once it runs; before that 2 bad configuration or usage, 3 vault
unreachable, login refused or read denied, 4 a secret path or field missing, deleted or
unusable, 70 a bug, 126 COMMAND cannot be executed, 127 COMMAND not found.
`

// wrapCommand splits wrap's arguments: the command to run, or help (-h, --help, help), or a
// usage error. Only the first argument can ask for help: after it, everything is COMMAND's.
func wrapCommand(args []string) (command []string, help bool, err error) {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			return nil, true, nil
		case "--":
			args = args[1:]
		default:
			if strings.HasPrefix(args[0], "-") {
				return nil, false, fmt.Errorf("wrap takes no flags (%s): cloudtaser-runtime wrap -- COMMAND [ARGS...]", args[0])
			}
		}
	}
	if len(args) == 0 {
		return nil, false, fmt.Errorf("no command: cloudtaser-runtime wrap -- COMMAND [ARGS...]")
	}
	return args, false, nil
}

// execCommand is exec's COMMAND: everything after an optional "--".
func execCommand(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

// expandFlag takes the injector's --expand=PLAN off the front of wrap's arguments (the
// $(VAR) references the wrapper expands: contract.ExpandPlan).
func expandFlag(args []string) ([]string, contract.ExpandPlan, error) {
	if len(args) > 0 {
		if v, ok := strings.CutPrefix(args[0], "--expand="); ok {
			plan, err := contract.ParseExpandPlan(v)
			if err != nil {
				return nil, plan, err
			}
			if len(args) < 2 || args[1] != "--" {
				return nil, plan, fmt.Errorf("--expand must be followed by --: cloudtaser-runtime wrap --expand=PLAN -- COMMAND [ARGS...]")
			}
			return args[1:], plan, nil
		}
	}
	return args, contract.ExpandPlan{}, nil
}

func runWrap(args []string) int {
	args, plan, err := expandFlag(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return wrap.ExitConfig
	}
	args, help, err := wrapCommand(args)
	if help {
		fmt.Print(wrapHelp)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return wrap.ExitConfig
	}
	environ := os.Environ() // the app's environment, unchanged
	wrap.IsolateProcessEnv()
	cfg, err := contract.ResolveEnv(contract.EnvMap(environ), contract.OSFileExists)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return wrap.ExitConfig
	}
	w := &wrap.Wrapper{Cfg: cfg, Argv: args, Expand: plan, Environ: environ, Stderr: os.Stderr, Started: started}
	return w.Run()
}

func runInstall(args []string) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Println("usage: cloudtaser-runtime install DIR\n\ncopy this binary into DIR (mode 0555) and exit; what the init container runs")
		return 0
	}
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
