//go:build unix

package modules

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// fileIDOf identifies a file by device and inode, which a rename keeps.
func fileIDOf(path string, fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.FormatUint(uint64(st.Dev), 10) + ":" + strconv.FormatUint(uint64(st.Ino), 10)
	}
	return "path:" + path
}

// linkCount is the file's number of names (0: deleted).
func linkCount(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// findInDir returns the path in dir of the regular file with that id, or "".
func findInDir(dir, id string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(p); err == nil && fileIDOf(p, fi) == id {
			return p
		}
	}
	return ""
}
