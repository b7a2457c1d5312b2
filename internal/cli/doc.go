// Package cli is vfctl, the operator's command line for filterd: it attaches
// and detaches filter chains, shows their counters, and asks the daemon what
// filters and kernel features it has. cmd/vfctl only calls Main.
//
// Every command is one or two calls of filterd's API (package
// filterd/api); vfctl keeps no state of its own. With -o json a command
// prints the API objects it received, indented, so scripts get the same
// types the API documents.
//
// # Chain syntax
//
// "vfctl chain set" takes one argument per slot, in slot order:
//
//	FILTER[:KEY=VALUE[,KEY=VALUE]...]
//
// KEY=VALUE pairs are the filter's parameters ("vfctl filters" lists them),
// except two reserved keys that configure the instance itself:
// failmode=closed|open and dir=from-vm|to-vm|both. A backslash makes the
// next character literal, so a value may hold a comma ("\,").
//
// # Exit codes
//
//	0  success
//	1  failure (the daemon refused for another reason, a required kernel
//	   feature is missing, timeout, ...)
//	2  usage error: bad command, argument or flag
//	3  filterd is not running (nothing listens on --socket)
//	4  not found: no such device, no chain on it, no such slot, unknown filter
//	5  invalid input: bad parameter, slot taken, chain already attached,
//	   request rejected
package cli
