# pmvm: two commands matter. `make demo` boots the lab and shows a host
# kernel update with two VMs carried across the kexec; `make test` runs every
# test. Both install what they need.

GO ?= go
DEB_PACKAGES = qemu-system-x86 busybox-static acpica-tools xz-utils cpio e2fsprogs shellcheck
GOTEST_FLAGS ?= -timeout 40m

.PHONY: all build deps test unit lab demo bench fuzz soak clean

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

# test: gofmt, vet, shellcheck of the lab's scripts, unit tests, a short run
# of every fuzz target, tiny guests on a KVM host, ACPI tables
# through iasl, then the lab (a nested KVM host under QEMU TCG booting a
# real guest), and a summary at the end: where the packages that need a
# KVM host ran (this machine's /dev/kvm, or a lab host when it has none;
# PMVM_TEST_WHERE=lab forces the lab) and which lab tests needed a second
# attempt. The lab packages run last and one at a time: a TCG lab host
# starved of CPU stalls (2 cores here).
UNIT_PKGS = $$($(GO) list ./... | grep -v /qa)
TEST_SUMMARY = $(CURDIR)/bin/test-summary.jsonl
test: deps
	@mkdir -p bin; rm -f $(TEST_SUMMARY)
	@rc=0; PMVM_TEST_SUMMARY=$(TEST_SUMMARY) $(MAKE) --no-print-directory -k test-steps || rc=$$?; \
	echo; $(GO) run ./qa/cmd/testsummary $(TEST_SUMMARY); \
	if [ $$rc != 0 ]; then echo "make test: FAILED (see above)"; else echo "make test: all passed"; fi; exit $$rc

.PHONY: test-steps test-fmt test-vet test-shellcheck test-unit test-fuzz test-bench-smoke test-lab
test-steps: test-fmt test-vet test-shellcheck test-unit test-fuzz test-bench-smoke test-lab
test-fmt:
	@unformatted=$$($$($(GO) env GOROOT)/bin/gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt -w these files:"; echo "$$unformatted"; exit 1; fi
test-vet:
	$(GO) vet ./...
# The lab's shell (qa/lab/scripts, run by busybox sh in the lab's inits,
# the fake pmvm its unit tests run the scenarios with, and qa/labrun's
# scripts that run a package's tests in a lab host): -x follows the
# ". /lab/lib.sh" of the scenarios to the file their source= names.
test-shellcheck:
	shellcheck -x qa/lab/scripts/*.sh qa/lab/testdata/*.sh qa/labrun/scripts/*.sh
# -count=1: the summary says where each package ran, so they really run.
test-unit:
	$(GO) test $(GOTEST_FLAGS) -count=1 $(UNIT_PKGS)
# A short run of every fuzz target (make fuzz runs them longer).
test-fuzz:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)
test-bench-smoke:
	@echo "bench smoke: every benchmark once, so make bench keeps working"
	$(GO) test $(GOTEST_FLAGS) -run '^$$' -bench . -benchtime 1x ./qa/bench ./qa/bench/cycle
test-lab:
	$(GO) test $(GOTEST_FLAGS) -p 1 ./qa/...

# unit: everything but the lab, for a quick loop.
unit: deps
	$(GO) test $(GOTEST_FLAGS) $(UNIT_PKGS)

lab: deps
	$(GO) test $(GOTEST_FLAGS) ./qa/... -run TestLab -v

demo: deps
	$(GO) run ./qa/cmd/labdemo

# bench: pmvm beside QEMU 7.2 in the same run, with the pmvm/QEMU ratios:
# the whole reboot-mode cycle as a real Linux guest sees it (qa/bench/cycle:
# save or stop request until its agent answers from a new process; RAM on
# device-dax, 256 MiB and 1 GiB), and the VMM-only part (qa/bench: save and
# resume of a tiny suspended guest, RAM in /dev/shm, 256 MiB to 4 GiB, QEMU
# with x-ignore-shared). They run on this machine's /dev/kvm, or in a lab
# host (nested KVM under QEMU TCG) where there is none; the report says
# where. Raw output in bin/bench.txt; what each number times: the packages'
# doc comments.
BENCH_FLAGS ?= -benchtime 10x -count 3 -timeout 40m
bench: deps
	@mkdir -p bin
	@{ $(GO) test -run '^$$' -bench . $(BENCH_FLAGS) ./qa/bench ./qa/bench/cycle 2>&1; echo $$? > bin/bench.rc; } | tee bin/bench.txt
	@rc=$$(cat bin/bench.rc); rm -f bin/bench.rc; \
	if [ "$$rc" != 0 ]; then echo "make bench: the benchmarks failed (exit $$rc), see above"; exit 1; fi
	@echo
	$(GO) run ./qa/bench/report bin/bench.txt

# fuzz runs every fuzz target of the repo (found by name, so a new one is
# never left out) for FUZZTIME each.
FUZZTIME ?= 30s
TEST_FUZZTIME ?= 5s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		dir=./$$(dirname $${f#./}); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz: $$dir $$t"; \
			$(GO) test $$dir -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x; \
		done; \
	done

# soak: the guest agent line (issue 12 #18) far longer than make test runs
# it: SOAK_BOOTS boots of a guest driving COM2 as Linux's 8250 driver does,
# 200 agent round trips each, and SOAK_RUNS x 50 round trips of the UART
# model alone, every one right after the port's open. It fails, never
# skips, when the line stops draining.
SOAK_BOOTS ?= 500
SOAK_RUNS ?= 20
soak:
	PMVM_AGENT_SOAK=$(SOAK_BOOTS) $(GO) test -race -count=1 -timeout 60m -run '^TestAgentLineSoak$$' -v ./vmm/
	$(GO) test -race -count=$(SOAK_RUNS) -timeout 60m -run '^TestLinuxAgentLine$$' ./vmm/devices/uart/

clean:
	rm -rf bin
