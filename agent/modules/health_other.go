//go:build !unix

package modules

func cpuSeconds() float64 { return 0 }

func rssBytes() uint64 { return 0 }
