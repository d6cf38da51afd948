//go:build !unix

package modules

import (
	"io/fs"
	"os/exec"
)

func inProcessGroup(*exec.Cmd) {}

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }

func isExecutable(fs.FileMode) bool { return true }

func worldWritable(fs.FileMode) bool { return false }
