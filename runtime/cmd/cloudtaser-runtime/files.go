package main

import (
	"fmt"
	"os"
	"strings"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/wrap"
)

// filesHelp is the text of `cloudtaser-runtime files -h`.
const filesHelp = `usage: cloudtaser-runtime files [--rotating VOLUME[,VOLUME...]]

What the init container cloudtaser-files runs: log in to the vault like wrap, read every file
CLOUDTASER_SECRET_FILES lists (the cloudtaser.io/secret-files annotation), and write each
volume at ` + contract.FilesDir + `/VOLUME (a memory emptyDir) with the kubelet's atomic layout
(..<timestamp>/, ..data, top-level symlinks). The report (volume names and file counts, never
a value) goes to /dev/termination-log. --rotating names the volumes a resident wrapper
re-renders later (their directories are left writable for it). docs/injector.md, "Secret files
in the pod".

exit codes: 0 written; 2 bad configuration or usage, 3 vault unreachable, login refused or read
denied, 4 a non-optional file's path or field missing (the pod does not start), 70 a bug.
`

// TerminationLog is where the kubelet reads a container's termination message.
const TerminationLog = "/dev/termination-log"

func init() {
	commands["files"] = command{
		usage: "files [--rotating VOLUMES]",
		help:  "write the pod's secret files into their memory volumes; what cloudtaser-files runs",
		run:   runFiles,
	}
}

// filesArgs parses files' arguments: the volumes rotated later, or help.
func filesArgs(args []string) (rotating []string, help bool, err error) {
	for len(args) > 0 {
		switch a := args[0]; {
		case a == "-h" || a == "--help" || a == "help":
			return nil, true, nil
		case a == "--rotating" && len(args) > 1:
			for _, v := range strings.Split(args[1], ",") {
				if !contract.DNSLabel(v) {
					return nil, false, fmt.Errorf("--rotating: %q is not a volume name", v)
				}
				rotating = append(rotating, v)
			}
			args = args[2:]
		default:
			return nil, false, fmt.Errorf("unknown argument %q: cloudtaser-runtime files [--rotating VOLUME[,VOLUME...]]", a)
		}
	}
	return rotating, false, nil
}

func runFiles(args []string) int {
	rotating, help, err := filesArgs(args)
	if help {
		fmt.Print(filesHelp)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return wrap.ExitConfig
	}
	environ := os.Environ()
	wrap.IsolateProcessEnv()
	cfg, err := contract.ResolveEnv(contract.EnvMap(environ), contract.OSFileExists)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		return wrap.ExitConfig
	}
	w := &wrap.Wrapper{Cfg: cfg, Environ: environ, Stderr: os.Stderr, Started: started}
	return w.RenderFiles(rotating, TerminationLog)
}
