//go:build unix

package agent

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
)

// inProcessGroup starts cmd in a process group of its own and makes its
// cancellation send SIGKILL to the whole group, so that the processes the
// command started die with it.
func inProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}

// exitSignal returns the signal that ended the process, if one did.
func exitSignal(ps *os.ProcessState) (int, bool) {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return int(ws.Signal()), true
}

func isExecutable(m fs.FileMode) bool { return m.Perm()&0o111 != 0 }

func baseEnv() []string {
	return []string{"PATH=" + activeResponsePath, "LANG=C"}
}

func worldWritable(m fs.FileMode) bool { return m.Perm()&0o002 != 0 }
