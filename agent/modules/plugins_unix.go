//go:build unix && !linux

package modules

import (
	"io/fs"
	"os/exec"
	"syscall"
)

// inProcessGroup starts cmd in a process group of its own, so that
// killGroup ends whatever it started too.
func inProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// killGroup sends SIGKILL to cmd's process group.
func killGroup(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }

func isExecutable(m fs.FileMode) bool { return m.Perm()&0o111 != 0 }

func worldWritable(m fs.FileMode) bool { return m.Perm()&0o002 != 0 }
