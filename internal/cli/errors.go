package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// Exit codes, stable for scripts (see the package documentation).
const (
	ExitOK       = 0
	ExitFailure  = 1
	ExitUsage    = 2
	ExitNoDaemon = 3
	ExitNotFound = 4
	ExitBadInput = 5
)

// usageError is a mistake in the command line itself: vfctl never sent a
// request.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries an exit code for failures that are not API errors
// (a missing kernel feature, an unknown filter name given to "filters").
type exitError struct {
	code int
	msg  string
	hint string
}

func (e *exitError) Error() string { return e.msg }

// exitCode maps an error to vfctl's exit code.
func exitCode(err error) int {
	var ue *usageError
	var ee *exitError
	var ae *api.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, api.ErrDaemonNotRunning):
		return ExitNoDaemon
	case errors.As(err, &ae):
		switch ae.Code {
		case api.CodeNoSuchDevice, api.CodeNotAttached, api.CodeUnknownFilter, api.CodeNoTable, api.CodeNoEntry:
			return ExitNotFound
		case api.CodeInvalidParam, api.CodeSlotTaken, api.CodeAlreadyExists, api.CodeBadRequest,
			api.CodeBadManifest, api.CodeABIMismatch, api.CodeVerifierRejected, api.CodeFilterInUse, api.CodeBadState,
			api.CodeStaleGeneration:
			return ExitBadInput
		}
	}
	return ExitFailure
}

// report prints err the way operators read it, "vfctl: message" and,
// where vfctl knows the fix, a hint line, and returns the exit code.
func (a *app) report(stderr io.Writer, cmd *cobra.Command, err error) int {
	code := exitCode(err)
	msg := strings.TrimSpace(err.Error())
	hint := a.hint(cmd, err)
	if code == ExitNoDaemon {
		// The client reports every failed dial as "not running"; a socket
		// that exists but refuses us is a different problem.
		if m, h, c, ok := diagnoseSocket(a.socket); ok {
			msg, hint, code = m, h, c
		}
	}
	fmt.Fprintf(stderr, "vfctl: %s\n", msg)
	if hint != "" {
		fmt.Fprintf(stderr, "hint: %s\n", hint)
	}
	return code
}

// hint returns the line that tells the operator what to do about err.
func (a *app) hint(cmd *cobra.Command, err error) string {
	var ue *usageError
	var ee *exitError
	var ae *api.Error
	switch {
	case errors.As(err, &ue):
		if cmd == nil || !cmd.HasParent() || cmd.HasSubCommands() {
			path := "vfctl"
			if cmd != nil {
				path = cmd.CommandPath()
			}
			return fmt.Sprintf("run '%s --help' for the commands and their usage", path)
		}
		return fmt.Sprintf("usage: %s; run '%s --help' for details", cmd.UseLine(), cmd.CommandPath())
	case errors.As(err, &ee):
		return ee.hint
	case errors.Is(err, api.ErrDaemonNotRunning):
		return fmt.Sprintf("start it: filterd --socket %s (or point --socket / VNICFILTER_SOCKET at the one running)", a.socket)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("filterd did not answer within %s; raise --timeout or read filterd's log", a.timeout)
	case errors.As(err, &ae):
		switch ae.Code {
		case api.CodeUnknownFilter:
			return "'vfctl filters' lists the registered filters"
		case api.CodeInvalidParam:
			return "'vfctl filters' lists each filter's parameters, their types and defaults"
		case api.CodeNoSuchDevice:
			return "the vNIC must be a network device on this host ('ip link show'); libvirt names taps vnetN"
		case api.CodeNotAttached:
			return "'vfctl list' shows the vNICs that have a chain and 'vfctl show VNIC' its slots"
		case api.CodeAlreadyExists:
			return "the vNIC has a chain already: add to it with 'vfctl attach', or 'vfctl detach VNIC' first"
		case api.CodeSlotTaken:
			return "'vfctl show VNIC' lists the used slots; without --slot, attach takes the next free one"
		case api.CodeNotSupported:
			return "'vfctl check' shows which kernel features are missing"
		}
	}
	return ""
}

// diagnoseSocket looks at a socket filterd could not be reached on and
// explains a failure other than "no socket there": permission denied (the
// socket is root only; exit code 1) or a stale socket file left by a
// filterd that died (still exit code 3). ok is false when there is nothing
// more to say.
func diagnoseSocket(path string) (msg, hint string, code int, ok bool) {
	if _, err := os.Stat(path); err != nil {
		return "", "", 0, false
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		c.Close()
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Sprintf("permission denied on filterd's socket %s", path),
			"the socket is root only: run vfctl as root (sudo vfctl ...)", ExitFailure, true
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("filterd is not running (stale socket %s: nothing accepts on it)", path),
			fmt.Sprintf("start it: filterd --socket %s", path), ExitNoDaemon, true
	}
	return "", "", 0, false
}
