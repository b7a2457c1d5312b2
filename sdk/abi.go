package sdk

import "strconv"

// ABIVersion is the version of the slot ABI (sdk/bpf/vnicfilter.h,
// VF_ABI_VERSION) and of this package's contract.
const ABIVersion = 1

// Slot ABI constants, mirrored from sdk/bpf/vnicfilter.h (a test keeps them
// equal).
const (
	// MaxSlots is the number of chain slots per direction.
	MaxSlots = 16
	// ChainSlot is the pseudo-slot holding chain-level counters.
	ChainSlot = MaxSlots
	// MarkResume is the skb->mark a slow path's re-injected frame carries:
	// MarkResume | dir<<8 | slot.
	MarkResume = 0x7f5a0000
	// MarkMagicMask selects the magic part of MarkResume.
	MarkMagicMask = 0xffff0000
)

// Verdicts a filter program returns (VF_* in the C header). VerdictFail
// hands the decision to the slot's failure mode.
const (
	VerdictContinue = 0
	VerdictDrop     = 1
	VerdictPunt     = 2
	VerdictRedirect = 3
	VerdictConsumed = 4
	VerdictFail     = 5
)

// Stat indexes a per-slot counter in the vNIC's vf_stats map.
type Stat uint32

// Per-slot counters. The first five are the filter's own verdicts; the rest
// are decisions the framework takes on the filter's behalf.
const (
	StatContinue   Stat = 0
	StatDrop       Stat = 1
	StatPunt       Stat = 2
	StatRedirect   Stat = 3
	StatConsumed   Stat = 4
	StatFailClosed Stat = 5
	StatFailOpen   Stat = 6
	StatEnter      Stat = 7
	NumStats            = 8
)

var statNames = [NumStats]string{"continue", "drop", "punt", "redirect", "consumed", "fail_closed", "fail_open", "enter"}

func (s Stat) String() string {
	if int(s) < len(statNames) {
		return statNames[s]
	}
	return "stat(" + strconv.Itoa(int(s)) + ")"
}

// StatKey is the vf_stats key of counter stat of (dir, slot).
func StatKey(dir Direction, slot int, stat Stat) uint32 {
	return (uint32(dir)*(MaxSlots+1)+uint32(slot))*NumStats + uint32(stat)
}

// NumStatKeys is the size of a vNIC's vf_stats map.
const NumStatKeys = NumDirections * (MaxSlots + 1) * NumStats

// ChainIndex is the vf_chain / vf_slots key of (dir, slot).
func ChainIndex(dir Direction, slot int) uint32 {
	return uint32(dir)*MaxSlots + uint32(slot)
}

// Slot flags (struct vf_slot.flags).
const (
	SlotPresent  = 1
	SlotFailOpen = 2
)

// Names of the per-vNIC maps filterd provides to every slot program. A
// filter must not declare maps with these names for its own use.
const (
	MapChain = "vf_chain"
	MapSlots = "vf_slots"
	MapStats = "vf_stats"
	// VarIfindex is the constant filterd sets to the vNIC's ifindex.
	VarIfindex = "vf_ifindex"
	// VarDirs is the constant filterd sets to the instance's directions.
	VarDirs = "vf_dirs"
)
