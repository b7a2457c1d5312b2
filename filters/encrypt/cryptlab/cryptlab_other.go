//go:build !linux

package cryptlab
