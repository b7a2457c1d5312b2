package datapath

import (
	"errors"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// RemoveProgramForTest takes slot's program out of the chain but leaves its
// flags, as a failed reload would.
func (v *VNIC) RemoveProgramForTest(slot int) error {
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if err := v.chain.Delete(sdk.ChainIndex(dir, slot)); err != nil {
			return err
		}
	}
	return nil
}

// DispatcherForTest returns the dispatcher program of dir.
func (v *VNIC) DispatcherForTest(dir sdk.Direction) *ebpf.Program { return v.progs[dir] }

// SkipForTest returns the pass-through program.
func (v *VNIC) SkipForTest() *ebpf.Program {
	p, err := v.skipProgram()
	if err != nil {
		panic(err)
	}
	return p
}

// SetRawSlotForTest writes slot's program (nil: none) and raw vf_slots
// entries for both directions.
func (v *VNIC) SetRawSlotForTest(slot int, prog *ebpf.Program, flags uint32, punt [sdk.NumDirections]uint32, alive [sdk.NumDirections]uint64) error {
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		k := sdk.ChainIndex(dir, slot)
		if err := v.slots.Put(k, slotValue{Flags: flags, PuntIfindex: punt[dir], AliveUntil: alive[dir]}); err != nil {
			return err
		}
		if prog == nil {
			if err := v.chain.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
		} else if err := v.chain.Put(k, prog); err != nil {
			return err
		}
	}
	return nil
}
