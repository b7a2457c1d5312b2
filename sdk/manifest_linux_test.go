package sdk_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/internal/badfilter"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

func TestVerifyRejectsBadObject(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(badfilter.Object))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := os.ReadFile("../filterd/testdata/external/bad.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := sdk.ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.Descriptor(spec)
	if err != nil {
		t.Fatal(err)
	}
	err = sdk.Verify(d)
	if !errors.Is(err, sdk.ErrVerifierRejected) || !strings.Contains(err.Error(), "invalid access to packet") {
		t.Fatalf("Verify: %v, want a verifier rejection naming the bad access", err)
	}
	good, _ := sdk.ParseManifest([]byte(goodManifest))
	gd, err := good.Descriptor(exampleSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sdk.Verify(gd); err != nil {
		t.Fatal(err)
	}
}
