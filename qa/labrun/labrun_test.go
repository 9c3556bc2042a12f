package labrun

import (
	"bytes"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestForwardArgs proves the lab host's test binary gets the flags that
// select and report tests, and none that name files of this machine
// (go test's -test.testlogfile, profiles) or the timeout, which runInLab
// sets itself.
func TestForwardArgs(t *testing.T) {
	keep, dropped := forwardArgs([]string{
		"-test.testlogfile=/tmp/go-build1/b001/testlog.txt", "-test.paniconexit0", "-test.timeout=10m0s",
		"-test.v=test2json", "-test.run=^TestA$", "-test.count", "3", "-test.coverprofile=/tmp/c.out",
		"-test.bench=.", "-test.benchtime=1x", "-test.short",
	})
	assert.Equal(t, []string{"-test.paniconexit0", "-test.v=test2json", "-test.run=^TestA$", "-test.count", "3",
		"-test.bench=.", "-test.benchtime=1x", "-test.short"}, keep)
	assert.Equal(t, []string{"-test.testlogfile=/tmp/go-build1/b001/testlog.txt", "-test.coverprofile=/tmp/c.out"}, dropped)
}

// TestDeadlines proves the lab host is done before go test kills this
// binary (a minute after -test.timeout), and the tests inside it get the
// timeout less the boot.
func TestDeadlines(t *testing.T) {
	inner, outer := deadlines([]string{"-test.timeout=40m0s"})
	assert.Equal(t, 38*time.Minute, inner)
	assert.Equal(t, 40*time.Minute-30*time.Second, outer)
	inner, outer = deadlines(nil) // go test's default, 10m
	assert.Equal(t, 8*time.Minute, inner)
	assert.Less(t, outer, 10*time.Minute)
	inner, _ = deadlines([]string{"-test.timeout=0s"})
	assert.Equal(t, time.Hour-bootAllowance, inner, "no timeout: an hour")
	inner, outer = deadlines([]string{"-test.timeout=1m"})
	assert.Equal(t, bootAllowance, inner, "never less than the boot allowance")
	assert.Greater(t, outer, inner)
}

// TestScenarioRunsTheBinaryInItsPackage proves the lab host's script gets
// the binary, its package's directory, the nonce and the needs'
// facilities as quoted parameters, every flag as one argument, and then
// runs scripts/run-tests.sh.
func TestScenarioRunsTheBinaryInItsPackage(t *testing.T) {
	s := scenario("vmm/kvm", "/lab/bin/kvm.test", "n0nce", []string{"-test.run=^Test(A|B)$", "-test.v", "it's"}, true, true)
	assert.Contains(t, s, "TEST_BIN='/lab/bin/kvm.test'\n")
	assert.Contains(t, s, "PKG_DIR='/src/vmm/kvm'\n")
	assert.Contains(t, s, "NONCE='n0nce'\n")
	assert.Contains(t, s, "SCRATCH='/scratch'\n")
	assert.Contains(t, s, "DAX_DEV='/dev/dax0.0'\n")
	assert.Contains(t, s, "GUEST_KERNEL='/lab/guest/vmlinuz'\n")
	assert.Contains(t, s, "GUEST_INITRD='/lab/guest/initrd.cpio'\n")
	assert.Contains(t, s, `set -- '-test.run=^Test(A|B)$' '-test.v' 'it'\''s'`+"\n")
	assert.True(t, strings.HasSuffix(s, script("run-tests.sh")), "the parameters, then the script")

	plain := scenario("pmem", "/lab/bin/pmem.test", "x", nil, false, false)
	assert.Contains(t, plain, "DAX_DEV=''\n", "no device-dax: dax_setup is not run")
	assert.Contains(t, plain, "GUEST_KERNEL=''\n")
	assert.Contains(t, plain, "set --\n", "no flags: none of the parent shell's")
}

// TestRunTestsExportsTheEnvironment proves scripts/run-tests.sh exports
// the variables under the names the tests read (this package's
// constants), runs the binary with its flags and marks its exit status
// and kernel warnings with the nonce, as bootAndRun expects.
func TestRunTestsExportsTheEnvironment(t *testing.T) {
	s := script("run-tests.sh")
	for _, want := range []string{
		InsideEnv + "=1", KernelEnv + `="$LAB_KERNEL"`, PMVMEnv + `="$LAB_PMVM"`,
		GuestKernelEnv + `="$GUEST_KERNEL"`, GuestInitrdEnv + `="$GUEST_INITRD"`, DaxEnv + `="$DAX_DEV"`,
		`TMPDIR="$SCRATCH/tmp"`,
	} {
		assert.Regexp(t, `(?m)^\s*export .*`+regexp.QuoteMeta(want), s)
	}
	assert.Contains(t, s, `cd "$PKG_DIR" ||`)
	assert.Contains(t, s, "\n"+`"$TEST_BIN" "$@"`+"\n")
	assert.Contains(t, s, `echo "PMVM-LABRUN begin $NONCE (`)
	assert.Contains(t, s, `echo "PMVM-LABRUN exit $NONCE $?"`)
	assert.Contains(t, s, "PMVM-LABRUN dmesg: ")
	assert.Contains(t, s, `echo "PMVM-LABRUN dmesg-end $NONCE"`)
	assert.Contains(t, s, "mount -t cgroup2")
	assert.Contains(t, s, `mount -t ext4 /dev/vda "$SCRATCH"`)
	assert.Contains(t, s, "dax_setup")
}

// TestScriptsEmbedded proves every script this package uses is embedded
// and says which shell it is written for (make test-shellcheck checks it
// as what busybox runs).
func TestScriptsEmbedded(t *testing.T) {
	names, err := fs.Glob(scriptFS, "scripts/*.sh")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"scripts/guest-idle.sh", "scripts/run-tests.sh"}, names)
	for _, n := range names {
		assert.True(t, strings.HasPrefix(script(path.Base(n)), "# shellcheck shell=sh\n"), n)
	}
	assert.True(t, strings.HasSuffix(guestInit, script("guest-idle.sh")))
	assert.Panics(t, func() { script("no-such.sh") })
}

// TestHostShape proves 1 GiB pages and the large device-dax region are
// given only to packages that need them, and every lab host logs warnings.
func TestHostShape(t *testing.T) {
	cpu, line := hostShape([]Need{KVM})
	assert.Equal(t, "EPYC,+svm", cpu)
	assert.NotContains(t, line, "hugepagesz=1G")
	assert.NotContains(t, line, "quiet")
	assert.Contains(t, line, "loglevel=5")
	assert.Contains(t, line, "memmap=256M!4G")
	cpu, line = hostShape([]Need{HugePages1G, DeviceDax})
	assert.Equal(t, "EPYC,+svm,+pdpe1gb", cpu)
	assert.Contains(t, line, "hugepagesz=1G hugepages=1")
	assert.Contains(t, line, daxMemmap)
	assert.NotContains(t, line, "memmap=256M!4G")
}

// TestSummaryRoundTrip proves records appended by several test binaries
// come back in make test's summary, by where they ran, with every retried
// lab test and its first failure.
func TestSummaryRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "summary.jsonl")
	t.Setenv(SummaryEnv, path)
	Append(Record{Kind: KindPackage, Name: "vmm/kvm", Where: WhereLab, Code: 0, Seconds: 6.5, Note: "this machine lacks: no usable /dev/kvm"})
	Append(Record{Kind: KindPackage, Name: "configs", Where: WhereHost, Code: 1, Seconds: 0.1})
	Append(Record{Kind: KindRetry, Name: "TestLabBoot", Where: WhereLab, Code: 0, Note: "console reported failure (lab host: Kernel panic)"})
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	recs, err := ReadSummary(f)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	var out bytes.Buffer
	WriteSummary(&out, recs)
	s := out.String()
	assert.Regexp(t, `vmm/kvm\s+lab host\s+ok\s+6\.5s\s+this machine lacks: no usable /dev/kvm`, s)
	assert.Regexp(t, `configs\s+this machine\s+FAIL`, s)
	assert.Regexp(t, `TestLabBoot\s+second attempt ok; first failed: console reported failure \(lab host: Kernel panic\)`, s)
	assert.Less(t, strings.Index(s, "configs"), strings.Index(s, "vmm/kvm"), "this machine's packages first")

	_, err = ReadSummary(strings.NewReader("{not json\n"))
	assert.ErrorContains(t, err, "summary line 1")
}

// TestNeedsSayWhatIsMissing proves every need names what is missing, and
// that device-dax and a Linux guest are never guessed from this machine.
func TestNeedsSayWhatIsMissing(t *testing.T) {
	t.Setenv(DaxEnv, "")
	t.Setenv(GuestKernelEnv, "")
	assert.Contains(t, DeviceDax.Missing(), "$PMVM_TEST_DAX unset")
	assert.Contains(t, LinuxGuest.Missing(), "$PMVM_TEST_GUEST_KERNEL unset")
	t.Setenv(DaxEnv, t.TempDir())
	assert.Contains(t, DeviceDax.Missing(), "is not a character device")
	assert.Contains(t, Need("frob").Missing(), `unknown need "frob"`)
	if _, err := os.Stat("/dev/kvm"); err != nil {
		assert.Contains(t, KVM.Missing(), "no usable /dev/kvm")
	}
}
