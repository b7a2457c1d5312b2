package sdk

import (
	"io"
	"time"
)

// StateDeltaExporter is an optional interface of a StateMover, for the
// final step of a live migration: the destination pulled everything (a
// full ExportState) while the VM still ran here, and when the VM pauses
// only what changed since must follow. ExportStateSince writes, in the
// format of ExportState (ImportState reads either), the entries created
// or touched within the last age — a superset of what changed; a filter
// that cannot tell writes everything.
type StateDeltaExporter interface {
	ExportStateSince(w io.Writer, age time.Duration) error
}
