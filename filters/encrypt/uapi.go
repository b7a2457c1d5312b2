package encrypt

import (
	"bufio"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// wgPeer is one peer as wireguard-go reports it.
type wgPeer struct {
	rx, tx    uint64
	handshake time.Time
}

func parseIpcGet(s string) map[Key]wgPeer {
	out := map[Key]wgPeer{}
	var cur Key
	var have bool
	var p wgPeer
	var sec, nsec int64
	flush := func() {
		if have {
			if sec != 0 || nsec != 0 {
				p.handshake = time.Unix(sec, nsec)
			}
			out[cur] = p
		}
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			have, p, sec, nsec = false, wgPeer{}, 0, 0
			if b, err := hex.DecodeString(v); err == nil && len(b) == len(cur) {
				cur, have = Key(b), true
			}
		case "rx_bytes":
			p.rx, _ = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			p.tx, _ = strconv.ParseUint(v, 10, 64)
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	flush()
	return out
}
