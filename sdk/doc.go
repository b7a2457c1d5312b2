// Package sdk is the public contract between vnicfilter and the filters it
// runs in front of each vNIC. A filter is described by a Descriptor and
// registered with Register, usually from an init function:
//
//	func init() { sdk.Register(&sdk.Descriptor{Name: "count", ...}) }
//
// A filter may have a fast path, an eBPF tc program written against the C
// slot ABI in sdk/bpf/vnicfilter.h and loaded through FastPathContext, and
// a slow path, Go code implementing SlowPath that receives the frames the
// fast path punts. filterd builds a chain of filter instances per vNIC; each
// instance gets its own maps, pinned under the vNIC's bpffs directory.
//
// The SDK is versioned: ABIVersion must equal VF_ABI_VERSION in the C header
// a filter was compiled against, and filterd refuses a filter built for
// another ABI version.
package sdk
