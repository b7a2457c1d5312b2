package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is a private etcd server started by a test.
type Etcd struct {
	// Endpoint is the client URL (http://127.0.0.1:PORT).
	Endpoint string
	cmd      *exec.Cmd
	exited   chan struct{}
	log      bytes.Buffer
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartEtcd runs the etcd binary (Debian's etcd-server) on loopback ports
// with a data directory in t.TempDir() and stops it (by pid) at cleanup.
// Without an etcd binary the test is skipped, or fails when CI=true.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		msg := "no etcd binary in PATH (apt-get install etcd-server)"
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: a CI machine must provide it)", msg)
		}
		t.Skip(msg)
	}
	client, peer := freePort(t), freePort(t)
	e := &Etcd{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", client), exited: make(chan struct{})}
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	e.cmd = exec.Command(bin,
		"--name", "test",
		"--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-client-urls", e.Endpoint, "--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test="+peerURL, "--initial-cluster-state", "new",
		"--log-level", "warn")
	e.cmd.Stdout, e.cmd.Stderr = &e.log, &e.log
	if arch := runtimeArch(); arch != "amd64" {
		// etcd 3.4 refuses to start elsewhere without this.
		e.cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+arch)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	go func() { e.cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			e.cmd.Process.Kill()
			<-e.exited
		}
		if t.Failed() {
			t.Logf("etcd log:\n%s", e.log.String())
		}
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return e
		}
		select {
		case <-e.exited:
			t.Fatalf("etcd exited at start:\n%s", e.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not answer within 20 s: %v\n%s", err, e.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
