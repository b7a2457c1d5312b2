package datapath

import "github.com/vnicfilter/vnicfilter/sdk"

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
