package domainxml

import (
	"fmt"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Lookup returns the descriptor of a registered filter, or an error
// wrapping sdk.ErrUnknownFilter. Only Name, Directions and Params are
// used, so a lookup backed by filterd's GET /v1/filters will do.
type Lookup func(name string) (*sdk.Descriptor, error)

// Validate checks every filter of cfg against its schema: the filter
// exists, its parameters pass sdk.ValidateParams and its direction is one
// the filter handles. Errors name the interface and the filter.
func Validate(cfg *Config, lookup Lookup) error {
	if cfg == nil {
		return nil
	}
	for _, ic := range cfg.Interfaces {
		if err := ValidateFilters(ic.Filters, lookup); err != nil {
			return &Error{Line: ic.line, Msg: "vnicfilter:interface " + ic.String(), Err: err}
		}
	}
	return nil
}

// ValidateFilters checks one chain's filters as Validate does. Errors
// wrap sdk.ErrUnknownFilter or sdk.ErrInvalidParam when that is the cause.
func ValidateFilters(filters []api.FilterSpec, lookup Lookup) error {
	for slot, f := range filters {
		d, err := lookup(f.Name)
		if err != nil {
			return fmt.Errorf("filter %d (%s): %w", slot, f.Name, err)
		}
		if _, err := sdk.ValidateParams(d.Params, f.Params); err != nil {
			return fmt.Errorf("filter %d (%s): %w", slot, f.Name, err)
		}
		if f.FailMode != "" {
			if _, err := sdk.ParseFailMode(f.FailMode); err != nil {
				return fmt.Errorf("filter %d (%s): %w", slot, f.Name, err)
			}
		}
		if f.Directions != "" {
			want, err := sdk.ParseDirections(f.Directions)
			if err != nil {
				return fmt.Errorf("filter %d (%s): %w", slot, f.Name, err)
			}
			if has := d.Dirs(); want&has != want {
				return fmt.Errorf("filter %d (%s): direction %s: the filter handles only %s", slot, f.Name, want, has)
			}
		}
	}
	return nil
}
