package uart_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pmvm/pmvm/vmm/devices/uart"
	"github.com/pmvm/pmvm/vmm/devices/uart/uarttest"
)

// lineBuffer collects what the guest transmits, line by line.
type lineBuffer struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	for {
		i := bytes.IndexByte(b.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case b.lines <- string(b.buf[:i]):
		default:
		}
		b.buf = b.buf[i+1:]
	}
}

// hostFeed is vmm.SerialPort.feed: offer p to Receive until it is all
// taken, waiting for SpaceAvailable (or 50 ms) when the FIFO is full.
func hostFeed(u *uart.UART, p []byte, stop <-chan struct{}) {
	for len(p) > 0 {
		p = p[u.Receive(p):]
		if len(p) > 0 {
			select {
			case <-u.SpaceAvailable():
			case <-time.After(50 * time.Millisecond):
			case <-stop:
				return
			}
		}
	}
}

// agentLineRun powers on a UART, has Linux open it while the host is
// already sending requests (the echo of the default termios on until
// qemu-ga's tcsetattr), and runs trips request/reply round trips: a
// qemu-ga stand-in answers "Q<id>" lines with "R<id>". Until the port is
// open and one reply came, the host resends every resend (the open empties
// the FIFO and reads RBR, so bytes may be lost there); from then on nothing
// may be lost, so nothing is resent and a request with no reply within
// stall is a stalled line. It returns a description of a stall, or "".
func agentLineRun(seed uint64, trips int, resend, stall time.Duration) string {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pin := uarttest.NewEdgePin()
	out := &lineBuffer{lines: make(chan string, 1024)}
	u := uart.New(pin, out)
	d := uarttest.NewLinux8250(u, pin)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// The host: requests go to a feeder goroutine, as SerialPort does.
	reqs := make(chan []byte, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case p := <-reqs:
				hostFeed(u, p, stop)
			case <-stop:
				return
			}
		}
	}()

	// The guest: the port opens after a random delay, echoes for a while,
	// goes raw, then qemu-ga answers every line with its id.
	opened := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		d.Open()
		for until := time.Now().Add(time.Duration(rng.IntN(2000)) * time.Microsecond); time.Now().Before(until); {
			if echo := d.TakeReceived(); len(echo) > 0 {
				d.Write(echo)
			}
			time.Sleep(50 * time.Microsecond)
		}
		d.SetTermios() // qemu-ga's tcsetattr
		close(opened)
		go func() { <-stop; d.Close() }()
		for {
			line, ok := d.ReadLine()
			if !ok {
				return
			}
			if i := bytes.LastIndexByte(line, 'Q'); i >= 0 {
				d.Write(append([]byte("R"+string(line[i+1:])), '\n'))
			}
		}
	}()

	settled := false
	for id := 1; id <= trips; id++ {
		want := "R" + strconv.Itoa(id)
		req := []byte("Q" + strconv.Itoa(id) + "\n")
		reqs <- req
		start := time.Now()
		retry := time.NewTimer(resend)
		for got := false; !got; {
			select {
			case l := <-out.lines:
				got = l == want
			case <-retry.C:
				if time.Since(start) < stall {
					if !settled {
						reqs <- req
					}
					retry.Reset(resend)
					continue
				}
				select {
				case <-opened:
				default:
					return fmt.Sprintf("seed %#x: the guest never finished opening the port in %v", seed, stall)
				}
				received, unsent := d.Backlog()
				return fmt.Sprintf("seed %#x: round trip %d/%d got no reply in %v: UART %+v, line high %v, edges lost while masked %d, THRE bug %v, TXEN bug %v, %d bytes received and unread, %d waiting to be sent",
					seed, id, trips, stall, u.State(), pin.Level(), pin.Lost(), d.BugTHRE, d.BugTXEN, received, unsent)
			}
		}
		retry.Stop()
		select {
		case <-opened:
			settled = true
		default:
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
		}
	}
	return ""
}

// TestLinuxAgentLine runs the agent line as Linux and qemu-ga drive it
// right after boot, many times with different timing: the line must never
// stop draining (issue 12 #18). A lost received-data or THR-empty
// interrupt leaves a request unanswered and fails it.
func TestLinuxAgentLine(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 40
	}
	base := rand.Uint64()
	t.Logf("seeds %#x + 0..%d", base, runs-1)
	for i := 0; i < runs; i++ {
		if msg := agentLineRun(base+uint64(i), 50, 20*time.Millisecond, 2*time.Second); msg != "" {
			t.Fatal(msg)
		}
	}
}
