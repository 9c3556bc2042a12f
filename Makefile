# pmvm: two commands matter. `make demo` boots the lab and shows a guest
# running under pmvm; `make test` runs every test. Both install what they need.

GO ?= go
DEB_PACKAGES = qemu-system-x86 busybox-static acpica-tools xz-utils cpio
GOTEST_FLAGS ?= -timeout 40m

.PHONY: all build deps test unit lab demo bench fuzz clean

all: build

# deps installs the Debian packages the tests and the lab use (root, apt).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

build:
	CGO_ENABLED=0 $(GO) build -o bin/pmvm ./cmd/pmvm

# test: vet, unit tests, tiny guests on /dev/kvm, ACPI tables through iasl,
# and the lab (a nested KVM host under QEMU TCG booting a real guest).
test: deps
	$(GO) vet ./...
	$(GO) test $(GOTEST_FLAGS) ./...

# unit: everything but the lab, for a quick loop.
unit: deps
	$(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -v /qa)

lab: deps
	$(GO) test $(GOTEST_FLAGS) ./qa/... -run TestLab -v

demo: deps
	$(GO) run ./qa/cmd/labdemo

fuzz:
	$(GO) test ./vmm/devices/uart -run '^$$' -fuzz FuzzUARTRegisters -fuzztime 30s
	$(GO) test ./vmm/devices/acpipm -run '^$$' -fuzz FuzzPM1Registers -fuzztime 30s
	$(GO) test ./configs -run '^$$' -fuzz FuzzDecode -fuzztime 30s -fuzzminimizetime 100x
	$(GO) test ./state -run '^$$' -fuzz FuzzDecode -fuzztime 30s -fuzzminimizetime 100x
	$(GO) test ./guestpm -run '^$$' -fuzz FuzzReplyParser -fuzztime 30s -fuzzminimizetime 100x

clean:
	rm -rf bin
