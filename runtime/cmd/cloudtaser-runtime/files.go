package main

import (
	"fmt"
	"os"

	"cloudtaser/runtime/internal/contract"
	"cloudtaser/runtime/internal/wrap"
)

// filesHelp is the text of `cloudtaser-runtime files -h`.
const filesHelp = `usage: cloudtaser-runtime files

What the init container cloudtaser-files runs: log in to the vault like wrap, read every file
CLOUDTASER_SECRET_FILES lists (the cloudtaser.io/secret-files annotation), and write each
volume at ` + contract.FilesDir + `/VOLUME (a memory emptyDir) with the kubelet's atomic layout
(..<timestamp>/, ..data, top-level symlinks). The report (volume names and file counts, never
a value) goes to /dev/termination-log. docs/injector.md, "Secret files in the pod".

exit codes: 0 written; 2 bad configuration or usage, 3 vault unreachable, login refused or read
denied, 4 a non-optional file's path or field missing (the pod does not start), 70 a bug.
`

// TerminationLog is where the kubelet reads a container's termination message.
const TerminationLog = "/dev/termination-log"

func init() {
	commands["files"] = command{
		usage: "files",
		help:  "write the pod's secret files into their memory volumes; what cloudtaser-files runs",
		run:   runFiles,
	}
}

func runFiles(args []string) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Print(filesHelp)
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "cloudtaser-runtime: files takes no arguments (its configuration is the environment)")
		return wrap.ExitConfig
	}
	environ := os.Environ()
	wrap.IsolateProcessEnv()
	cfg, err := contract.ResolveEnv(contract.EnvMap(environ), contract.OSFileExists)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloudtaser-runtime: %v\n", err)
		_ = wrap.WriteReport(TerminationLog, wrap.RenderReport{FormatVersion: 1, Error: err.Error()})
		return wrap.ExitConfig
	}
	w := &wrap.Wrapper{Cfg: cfg, Environ: environ, Stderr: os.Stderr, Started: started}
	return w.RenderFiles(TerminationLog)
}
