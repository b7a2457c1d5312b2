package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
)

// ActionResult answers POST /v1/vnics/{vnic}/filters/{slot}/actions/{action}.
type ActionResult struct {
	VNIC   string `json:"vnic"`
	Slot   int    `json:"slot"`
	Filter string `json:"filter"`
	Action string `json:"action"`
	// Result is what the filter's Act returned, in the filter's own shape.
	Result any `json:"result"`
}

// Act asks the filter in slot of vnic's chain to carry out action (e.g.
// the encrypt filter's "rotate"); args are passed as URL query parameters.
// Result is left as raw JSON for the filter's own type.
func (c *Client) Act(ctx context.Context, vnic string, slot int, action string, args map[string]string) (*ActionResult, json.RawMessage, error) {
	p := withQuery(vnicPath(vnic)+"/filters/"+strconv.Itoa(slot)+"/actions/"+url.PathEscape(action), args)
	var raw struct {
		ActionResult
		Result json.RawMessage `json:"result"`
	}
	if err := c.do(ctx, http.MethodPost, p, nil, &raw); err != nil {
		return nil, nil, err
	}
	r := raw.ActionResult
	r.Result = raw.Result
	return &r, raw.Result, nil
}
