package vmm

import (
	"errors"
	"net"
	"time"

	"github.com/rs/zerolog"
)

// Accept-retry backoff: an accept error such as EMFILE (out of file
// descriptors) or ECONNABORTED is a moment's trouble, not the socket's end.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptLoop accepts connections on ln and hands each to handle until ln
// is closed. Any other accept error is logged and retried after a backoff
// that doubles up to acceptBackoffMax, as net/http's server does: one
// failed accept must never leave a VM that cannot be saved or stopped.
func acceptLoop(ln net.Listener, log zerolog.Logger, socket string, handle func(net.Conn)) {
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err == nil {
			backoff = 0
			handle(c)
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if backoff == 0 {
			backoff = acceptBackoffMin
		} else {
			backoff = min(2*backoff, acceptBackoffMax)
		}
		log.Warn().Err(err).Str("socket", socket).Dur("retry_in", backoff).Msg("accept failed; retrying")
		time.Sleep(backoff)
	}
}
