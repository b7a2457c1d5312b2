package storetest

import "runtime"

func runtimeArch() string { return runtime.GOARCH }
