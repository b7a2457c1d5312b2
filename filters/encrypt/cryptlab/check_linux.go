package cryptlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// Echo sends payload over TCP from client to server's addr:port and reads
// it echoed back; it returns the first error.
func Echo(ctx context.Context, client, server *testkit.VM, addr net.IP, port int, payload []byte) error {
	hp := net.JoinHostPort(addr.String(), strconv.Itoa(port))
	l, err := server.ListenTCP(hp)
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	c, err := client.DialTCP(ctx, hp)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("echo differs")
	}
	return nil
}

// Counter returns fp's counter name for peer, failing t when there is
// none.
func Counter(t testing.TB, fp sdk.FastPath, name, peer string) float64 {
	t.Helper()
	cs, err := fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name && c.Labels["peer"] == peer {
			return c.Value
		}
	}
	t.Fatalf("no counter %s{peer=%q}", name, peer)
	return 0
}
