package sdk

// Reloader is an optional interface of a FastPath: the filter re-reads
// its configuration (files its parameters name, e.g. the firewall's
// policy) and swaps it in without reloading its program or losing state.
// filterd calls it for POST /v1/vnics/{vnic}/filters/{slot}/reload
// (`vfctl fw load`). An error must leave the running configuration
// untouched; wrap ErrInvalidParam when the new configuration is at fault.
type Reloader interface {
	Reload(params Params) error
}
