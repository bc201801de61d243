package main

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

func TestWrapHelpIsHelpNotACommandToRun(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help", "help"} {
		command, help, err := wrapCommand([]string{arg})
		if !help || err != nil || command != nil {
			t.Errorf("wrap %s: command %q help %v err %v, want help", arg, command, help, err)
		}
	}
}

func TestWrapTakesEverythingAfterTheSeparatorAsTheCommand(t *testing.T) {
	cases := map[string][]string{
		"-- app --help": {"app", "--help"}, // the app's own --help, not wrap's
		"app -h":        {"app", "-h"},
		"-- --help":     {"--help"}, // after "--" even this is the command
		"-- app":        {"app"},
	}
	for line, want := range cases {
		command, help, err := wrapCommand(strings.Fields(line))
		if help || err != nil || !reflect.DeepEqual(command, want) {
			t.Errorf("wrap %s: command %q help %v err %v, want %q", line, command, help, err, want)
		}
	}
}

func TestWrapRefusesAnUnknownFlagAndAMissingCommand(t *testing.T) {
	for _, line := range []string{"", "--", "-x app", "--verbose -- app"} {
		if _, help, err := wrapCommand(strings.Fields(line)); help || err == nil {
			t.Errorf("wrap %q: want a usage error, got help %v err %v", line, help, err)
		}
	}
}

// The built binary (TestMain's) prints help and exits 0 without reading the environment or a
// vault.
func TestWrapHelpExitsZeroWithoutRunningAnything(t *testing.T) {
	for _, args := range [][]string{{"wrap", "--help"}, {"wrap", "-h"}, {"install", "--help"}} {
		cmd := exec.Command(binary, args...)
		cmd.Env = []string{"PATH=/nonexistent"} // no CLOUDTASER_* at all: a run would fail with 2
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v (stdout %q)", args, err, out)
		}
		if !strings.Contains(string(out), "usage: cloudtaser-runtime "+args[0]) {
			t.Errorf("%v: no usage line in %q", args, out)
		}
	}
	if !strings.Contains(wrapHelp, "exit codes:") {
		t.Error("wrap -h does not end with its exit codes")
	}
}

func TestExpandFlagComesOffTheFrontBeforeDashDash(t *testing.T) {
	args, plan, err := expandFlag([]string{`--expand={"args":[1],"env":[{"name":"URL","later":["X"]}]}`, "--", "redis", "$(PW)"})
	if err != nil || len(plan.Args) != 1 || plan.Env[0].Name != "URL" || strings.Join(args, " ") != "-- redis $(PW)" {
		t.Fatalf("%q %+v %v", args, plan, err)
	}
	for _, bad := range [][]string{
		{`--expand={"args":[1]}`, "redis"},   // no --
		{`--expand={"argz":[1]}`, "--", "x"}, // unknown field
		{`--expand={"args":[-1]}`, "--", "x"},
		{`--expand=`, "--", "x"},
	} {
		if _, _, err := expandFlag(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if args, plan, err := expandFlag([]string{"--", "x"}); err != nil || len(plan.Args) != 0 || len(args) != 2 {
		t.Fatalf("no flag: %q %v", args, err)
	}
}
