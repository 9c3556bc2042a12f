package vmm

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm/x86"
)

type recorder struct {
	reads, writes []uint16
}

func (r *recorder) Read(off uint16, data []byte) {
	r.reads = append(r.reads, off)
	for i := range data {
		data[i] = byte(off)
	}
}
func (r *recorder) Write(off uint16, data []byte) { r.writes = append(r.writes, off) }

// TestPortBusRouting proves accesses reach the device that claims the port,
// with the offset from its base, and unclaimed ports read as all-ones.
func TestPortBusRouting(t *testing.T) {
	var b PortBus
	com1, pm := &recorder{}, &recorder{}
	require.NoError(t, b.Register("com1", 0x3f8, 8, com1))
	require.NoError(t, b.Register("pm", 0x600, 12, pm))

	data := []byte{0}
	b.In(0x3fd, data)
	assert.Equal(t, byte(5), data[0])
	b.Out(0x604, []byte{1, 2})
	assert.Equal(t, []uint16{4}, pm.writes)

	wide := []byte{0, 0, 0, 0}
	b.In(0xcf8, wide)
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff}, wide)
	b.Out(0x80, []byte{1})
	assert.Equal(t, uint64(2), b.Unhandled())
	b.In(0x3f7, data)
	b.In(0x400, data)
	assert.Len(t, com1.reads, 1, "ports next to a device are not the device")
}

// TestPortBusRefusesOverlap proves two devices can never claim one port.
func TestPortBusRefusesOverlap(t *testing.T) {
	var b PortBus
	require.NoError(t, b.Register("a", 0x60, 5, &recorder{}))
	assert.ErrorContains(t, b.Register("b", 0x64, 1, &recorder{}), "overlap a")
	assert.Error(t, b.Register("c", 0xfffe, 4, &recorder{}))
	assert.Error(t, b.Register("d", 0x10, 0, &recorder{}))
}

// TestGuestMemoryAddressing proves guest-physical addresses map to the right
// block across the MMIO gap and accesses never cross out of RAM.
func TestGuestMemoryAddressing(t *testing.T) {
	// Small host buffers stand in for a low range and one above 4 GiB.
	g := &GuestMemory{ranges: []x86.RAMRange{
		{GuestPhys: 0, Size: 8192},
		{GuestPhys: 4 << 30, Size: 4096},
	}}
	g.host = [][]byte{make([]byte, 8192), make([]byte, 4096)}
	_, err := g.WriteAt([]byte("abc"), 4<<30)
	require.NoError(t, err)
	assert.Equal(t, "abc", string(g.host[1][:3]))
	buf := make([]byte, 3)
	_, err = g.ReadAt(buf, 4<<30)
	require.NoError(t, err)
	assert.Equal(t, "abc", string(buf))
	_, err = g.WriteAt([]byte("xy"), 8191)
	assert.ErrorContains(t, err, "crosses the end")
	_, err = g.WriteAt([]byte("x"), 3<<30)
	assert.ErrorContains(t, err, "not RAM")
	_, err = g.ReadAt(buf, -1)
	assert.Error(t, err)
}

// TestControlSocketStatus proves the control socket is private (0600) and
// answers status and unknown commands with one JSON line each.
func TestControlSocketStatus(t *testing.T) {
	m := newMachine(&configs.VM{Name: "ctl", VCPUs: 2, Memory: []configs.Memory{{Name: "ram0", Size: 64 << 20}}}, zerolog.Nop())
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := ServeControl(path, m, zerolog.Nop(), nil)
	require.NoError(t, err)
	defer s.Close()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func(line string) ControlResponse {
		_, err := c.Write([]byte(line + "\n"))
		require.NoError(t, err)
		resp, err := r.ReadBytes('\n')
		require.NoError(t, err)
		var cr ControlResponse
		require.NoError(t, json.Unmarshal(resp, &cr))
		return cr
	}
	st := ask(`{"command":"status"}`)
	require.True(t, st.OK)
	assert.Equal(t, "ctl", st.Status.Name)
	assert.Equal(t, StateCreated, st.Status.RunState)
	assert.Equal(t, uint64(64<<20), st.Status.MemoryBytes)
	bad := ask(`{"command":"explode"}`)
	assert.False(t, bad.OK)
	assert.Contains(t, bad.Error, "unknown command")
	junk := ask(`not json`)
	assert.Contains(t, junk.Error, "not JSON")

	_, err = ServeControl(path, m, zerolog.Nop(), nil)
	assert.ErrorContains(t, err, "in use", "a second pmvm cannot take a live socket")
}
