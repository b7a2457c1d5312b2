// Package slowproc runs a slow-path filter as its own process, outside
// filterd: the third-party form of a Go slow path (docs/sdk.md, "External
// slow-path filters").
//
// filterd starts the process named in the filter's manifest
// ("slowpath": {"command": [...]}) with one end of a SOCK_SEQPACKET socket
// pair as file descriptor 3 (VNICFILTER_SLOWPATH_FD) and restarts it with
// backoff when it exits. Over the socket, one JSON Msg per packet:
//
//	process -> filterd  hello   {abi, filter, version, pid}
//	filterd -> process  open    {id, vnic, slot, dirs, failmode, params} + one punt tap fd per dir (SCM_RIGHTS)
//	process -> filterd  opened  {id} or {id, error}
//	filterd -> process  close   {id}
//	filterd -> process  ping    {seq}        every heartbeat (200 ms)
//	process -> filterd  pong    {seq, status: per instance and direction: frames, passed, dropped, calls, panicked}
//
// Frames never cross the socket: the process reads punted frames from the
// tap (each behind a struct virtio_net_hdr, GSO frames whole) and writes
// the ones it passes back to the same tap, where filterd's re-injection
// program resumes the vNIC's chain after the slot. Liveness is filterd's
// slot lease: it is renewed only while pongs arrive and no Process call
// runs beyond the watchdog, so a crashed, stalled or panicked process fails
// only its own vNICs, each by its failure mode, within the lease (1 s).
//
// A filter process is a few lines:
//
//	func main() {
//		err := slowproc.Serve(slowproc.Filter{
//			Name: "dnsblock", Version: "1.0.0",
//			Params: []sdk.ParamSpec{{Name: "names", Type: sdk.String}},
//			New: func(ctx *sdk.SlowPathContext) (sdk.SlowPath, error) { return newBlocker(ctx) },
//		})
//		if err != nil {
//			log.Fatal(err)
//		}
//	}
package slowproc
