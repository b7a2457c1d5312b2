// Package cryptlab builds simulated hypervisors for the encrypt filter
// (docs/encrypt.md): hosts in network namespaces on a shared underlay,
// routed VM subnets, each host's key pair, peers and policy files. The
// cross-host benchmark (filters/encrypt's BenchmarkCrossHost and vfbench's
// crypt suite) and the CLI tests against filterd build on it. Linux only;
// it uses sdk/testkit, so it belongs in tests and benchmarks only.
package cryptlab
