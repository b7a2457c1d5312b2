//go:build !linux

package sdk

// KtimeNow is 0 where there is no eBPF clock to compare with.
func KtimeNow() uint64 { return 0 }
