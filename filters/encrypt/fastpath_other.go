//go:build !linux

package encrypt

import "github.com/vnicfilter/vnicfilter/sdk"

func loadFastPath(*sdk.FastPathContext) (sdk.FastPath, error) { return nil, sdk.ErrNotSupported }
