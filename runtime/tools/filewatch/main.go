// Command filewatch is a test app for secret files (tests/integration/test_secret_files_realnode.py):
// it watches a Secret-style volume with inotify, as libraries that reload certificates do
// (they watch the directory for ..data being renamed over), and prints one line per swap:
// "watch: ..data -> <target>". It never reads a file's content.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: filewatch DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "inotify:", err)
		os.Exit(1)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		fmt.Fprintln(os.Stderr, "watch:", err)
		os.Exit(1)
	}
	target, _ := os.Readlink(filepath.Join(dir, "..data"))
	fmt.Printf("watch: start ..data -> %s\n", target)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			os.Exit(1)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
			for len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			if name == "..data" && ev.Mask&unix.IN_MOVED_TO != 0 {
				target, _ := os.Readlink(filepath.Join(dir, "..data"))
				fmt.Printf("watch: ..data -> %s\n", target)
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}
