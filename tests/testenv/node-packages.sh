#!/usr/bin/env bash
# The Debian packages this machine lacks for the real node (tests/testenv/realnode.py) and for
# plan approvals, one name per line (nothing: all present). The one list: .ci/run and the demo
# (tools/demo.py) both install what it prints with apt-get, as root.
set -euo pipefail
# The real node runs containers with Debian's runc, the CNI loopback plugin and busybox-static as
# the test images' root filesystem.
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || echo runc
[ -x /usr/lib/cni/loopback ] || echo containernetworking-plugins
bb_status=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)
[ "$bb_status" = "install ok installed" ] || echo busybox-static
# Plan approvals are tested (and the demo approves its plan) with stock OpenSSH (ssh-keygen -Y
# sign/verify, ssh-agent, ssh-add).
{ command -v ssh-keygen >/dev/null && command -v ssh-agent >/dev/null; } || echo openssh-client
