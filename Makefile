# vnicfilter — see README.md. Targets that touch the kernel need root.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/vnicfilter/vnicfilter/filterd.Version=$(VERSION) -X github.com/vnicfilter/vnicfilter/internal/cli.Version=$(VERSION)
# go test flags; CI=true makes privileged tests fail instead of skip.
TESTFLAGS ?= -count=1 -timeout 40m
ARGS      ?=

.PHONY: all build deps test test-unit demo demo-libvirt install bench soak generate generate-check lint clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...
	# vfagent and vfctl go into the control VM's initramfs, which has no
	# dynamic loader.
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/vfagent ./cmd/vfctl

# Installs the apt packages listed in deps/apt-packages.txt (idempotent).
deps:
	bash scripts/deps.sh

# Out-of-tree filter examples, each its own Go module (docs/sdk.md).
EXAMPLES := ttlguard dnsblock

# Everything: dependencies, generated-code check, vet, all tests as root.
test: deps build generate-check lint
	$(GO) test $(TESTFLAGS) ./...
	for ex in $(EXAMPLES); do (cd examples/$$ex && GOFLAGS=-mod=readonly $(GO) test $(TESTFLAGS) ./...) || exit 1; done

# Tests that need neither root nor the kernel.
test-unit:
	$(GO) test -count=1 -short ./...

# Two namespace VMs, filterd on embedded defaults, a chain, traffic and
# counters; everything is removed at the end.
demo: build
	bash scripts/demo.sh

# Two QEMU guests under a private libvirtd with the hook and filterd's
# libvirt watcher: chains from the domain XML, filtering shown by counters.
# Needs root, libvirt and QEMU (make deps); everything is removed at the end.
demo-libvirt:
	bash scripts/demo-libvirt.sh

# Installs filterd, vfctl and the hook (docs/libvirt.md). The hook goes to
# $(HOOKSDIR)/qemu.d/vnicfilter; vnicfilter.conf (filterd's socket) and an
# empty $(HOOKSDIR)/qemu dispatcher are written only if absent. Restart
# libvirtd afterwards if it had no qemu hook before: it looks for hooks at
# start-up only. make install DESTDIR=/tmp/stage stages the tree.
PREFIX   ?= /usr/local
HOOKSDIR ?= /etc/libvirt/hooks
install:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/filterd ./cmd/vfctl ./cmd/vnicfilter-hook
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(HOOKSDIR)/qemu.d
	install -m 0755 $(BIN)/filterd $(BIN)/vfctl $(BIN)/vnicfilter-hook $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(BIN)/vnicfilter-hook $(DESTDIR)$(HOOKSDIR)/qemu.d/vnicfilter
	@if [ -e $(DESTDIR)$(HOOKSDIR)/vnicfilter.conf ]; then echo "keeping $(DESTDIR)$(HOOKSDIR)/vnicfilter.conf"; \
		else install -m 0644 hooks/vnicfilter.conf $(DESTDIR)$(HOOKSDIR)/vnicfilter.conf; fi
	@if [ -e $(DESTDIR)$(HOOKSDIR)/qemu ] || [ -L $(DESTDIR)$(HOOKSDIR)/qemu ]; then echo "keeping $(DESTDIR)$(HOOKSDIR)/qemu"; \
		else install -m 0755 hooks/qemu.dispatcher $(DESTDIR)$(HOOKSDIR)/qemu; \
		echo "installed $(DESTDIR)$(HOOKSDIR)/qemu: restart libvirtd so it notices the qemu hooks"; fi

# Filtered cases against the unfiltered baseline, in one run, as ratios.
# make bench ARGS=--json   or   make bench ARGS="--attach 200"
bench: build
	$(BIN)/vfbench --filterd $(BIN)/filterd $(ARGS)

# Long-running checks kept out of make test.
soak: build
	VNICFILTER_SOAK=1 $(GO) test -count=1 -timeout 2h -run 'Soak|Differential' ./...

# Rebuilds the eBPF objects (clang from apt) with bpf2go.
generate:
	$(GO) generate ./...

# Fails when the committed eBPF objects differ from a fresh generate.
generate-check: generate
	@git diff --exit-code --stat -- '*_bpfel.go' '*_bpfel.o' || \
		{ echo "generated eBPF objects are stale: run 'make generate' and commit"; exit 1; }

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	GOOS=darwin $(GO) vet ./sdk/... ./filterd/api/

clean:
	rm -rf $(BIN)
