//go:build !unix

package agent

import (
	"io/fs"
	"os"
	"os/exec"
)

// inProcessGroup keeps exec's default cancellation where process groups
// do not exist: only the command itself is killed.
func inProcessGroup(*exec.Cmd) {}

func exitSignal(*os.ProcessState) (int, bool) { return 0, false }

func isExecutable(fs.FileMode) bool { return true }

func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if root := os.Getenv("SystemRoot"); root != "" {
		env = append(env, "SystemRoot="+root)
	}
	return env
}

// worldWritable cannot be told from the mode bits here.
func worldWritable(fs.FileMode) bool { return false }
