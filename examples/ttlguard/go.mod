module example.com/ttlguard

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0
	github.com/vnicfilter/vnicfilter v0.0.0
)

require (
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

// Out of tree, drop this line and require a released vnicfilter version.
replace github.com/vnicfilter/vnicfilter => ../..
