package labrun

import (
	"bytes"
	"os"
	"path/filepath"
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

// TestScenarioRunsTheBinaryInItsPackage proves the lab host's script
// quotes every flag, runs the binary in its package's directory with the
// needs' facilities set up, and reports its exit status and kernel
// warnings with the run's nonce.
func TestScenarioRunsTheBinaryInItsPackage(t *testing.T) {
	s := scenario("vmm/kvm", "/lab/bin/kvm.test", "n0nce", []string{"-test.run=^Test(A|B)$", "-test.v", "it's"}, true, true)
	assert.Contains(t, s, "cd /src/vmm/kvm ||")
	assert.Contains(t, s, `/lab/bin/kvm.test '-test.run=^Test(A|B)$' '-test.v' 'it'\''s'`)
	assert.Contains(t, s, `echo "PMVM-LABRUN exit n0nce $?"`)
	assert.Contains(t, s, "PMVM-LABRUN dmesg-end n0nce")
	assert.Contains(t, s, "mount -t cgroup2")
	assert.Contains(t, s, "mount -t ext4 /dev/vda /scratch")
	assert.Contains(t, s, "dax_setup\nexport PMVM_TEST_DAX=/dev/dax0.0")
	assert.Contains(t, s, "export PMVM_TEST_GUEST_KERNEL=/lab/guest/vmlinuz PMVM_TEST_GUEST_INITRD=/lab/guest/initrd.cpio")
	assert.Contains(t, s, InsideEnv+"=1")
	assert.NotContains(t, scenario("pmem", "/lab/bin/pmem.test", "x", nil, false, false), "dax_setup")
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
