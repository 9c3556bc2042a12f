package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sample = `labrun: qa/bench: tests run inside a lab host (this machine lacks: no usable /dev/kvm)
goos: linux
goarch: amd64
pkg: github.com/pmvm/pmvm/qa/bench
BenchmarkSave/ram=256MiB-2   	10	2100000 ns/op	2.1 ms/op	2.0 p50-ms	0.05 resident-MiB	1365 state-bytes
BenchmarkSave/ram=256MiB-2   	10	4100000 ns/op	4.1 ms/op	4.0 p50-ms	0.05 resident-MiB	1365 state-bytes
BenchmarkSave/ram=256MiB-2   	10	3100000 ns/op	3.1 ms/op	3.0 p50-ms	0.05 resident-MiB	1365 state-bytes
BenchmarkSave/ram=4GiB-2     	10	3100000 ns/op	3.1 ms/op	3.0 p50-ms	0.05 resident-MiB	1441 state-bytes
BenchmarkQEMUSave/ram=256MiB-2	10	8600000 ns/op	5.8 migrate-ms/op	5.7 migrate-p50-ms	8.6 ms/op	8.5 p50-ms	0.004 resident-MiB	314069 state-bytes
--- FAIL: BenchmarkQEMUResume/ram=1GiB
    bench_test.go:1: QEMU exited
BenchmarkQEMUSaveCopyRAM/ram=256MiB-2	3	1250000000 ns/op	1250 ms/op	1249 p50-ms	256.0 resident-MiB	269273736 state-bytes
PASS
`

func TestParseTakesMediansAndIgnoresOtherLines(t *testing.T) {
	r, err := Parse(strings.NewReader(sample))
	require.NoError(t, err)
	assert.Len(t, r.byName, 4)
	v, ok := r.Get("Save/ram=256MiB", "p50-ms")
	require.True(t, ok)
	assert.Equal(t, 3.0, v, "median of 2, 4, 3")
	v, ok = r.Get("QEMUSave/ram=256MiB", "migrate-p50-ms")
	require.True(t, ok)
	assert.Equal(t, 5.7, v)
	_, ok = r.Get("QEMUResume/ram=1GiB", "ms/op")
	assert.False(t, ok, "a failed benchmark has no result")
	assert.Equal(t, []string{"256MiB", "4GiB"}, r.sizes())
}

func TestWritePutsPeersSideBySide(t *testing.T) {
	r, err := Parse(strings.NewReader(sample))
	require.NoError(t, err)
	var out bytes.Buffer
	Write(&out, r)
	s := out.String()
	assert.Contains(t, s, "median over 3 run(s)")
	// The 256MiB save row: pmvm, QEMU, QEMU migrate, both state sizes.
	// The 256MiB save row: pmvm, QEMU, their ratio, QEMU migrate, both state sizes.
	assert.Regexp(t, `256MiB\s+sparse\s+3\.00\s+8\.50\s+0\.35x\s+5\.70\s+1365\s+314069`, s)
	// The growth row: 4GiB over 256MiB (no ratio of ratios).
	assert.Regexp(t, `4GiB / 256MiB\s+sparse\s+1\.00x\s+-\s+-\s+-\s+1\.06x\s+-`, s)
	assert.Contains(t, s, "Where they ran: qa/bench: a lab host (nested KVM under QEMU TCG)")
	assert.Contains(t, s, "compare the pmvm/QEMU ratios")
	assert.Contains(t, s, "VMM-ONLY PART, SAVE")
	assert.Regexp(t, `256MiB\s+touched\s+1249\s+-\s+-\s+269273736`, s)
	assert.NotContains(t, s, "RESUME:", "no resume results, no resume table")
}

func TestRunRefusesEmptyInput(t *testing.T) {
	var out bytes.Buffer
	err := run(nil, strings.NewReader("FAIL\n"), &out)
	assert.ErrorContains(t, err, "no benchmark results")
}
