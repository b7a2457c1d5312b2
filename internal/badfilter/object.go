//go:build (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm) && linux

package badfilter

// Object is the ELF object compiled from bad.c.
var Object = _BadBytes
