//go:build !unix

package main

func openFileLimit() int64 { return 0 }
