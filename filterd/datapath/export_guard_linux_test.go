package datapath

// PinGuardModeForTest is PinGuard with the attach mode forced.
func PinGuardModeForTest(root, tap string, mode Mode) error { return pinGuard(root, tap, mode) }
