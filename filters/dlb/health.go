package dlb

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Health is a backend's health as the checks see it.
type Health uint8

const (
	// Unchecked: no check configured, or not enough results yet. The
	// backend takes flows.
	Unchecked Health = iota
	// Up: Rise consecutive checks succeeded.
	Up
	// Down: Fall consecutive checks failed; the backend takes no new flows.
	Down
)

func (h Health) String() string {
	switch h {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "unchecked"
}

// checkKey identifies one checker: every instance checking the same
// backend the same way from the same network namespace shares it.
type checkKey struct {
	target netip.AddrPort // the address and port checked
	check  HealthCheck    // Port resolved into target
}

func checkKeyOf(b Backend, h *HealthCheck) checkKey {
	c := *h
	port := b.Port
	if c.Port != 0 {
		port = c.Port
	}
	c.Port = 0
	return checkKey{target: netip.AddrPortFrom(b.Addr, port), check: c}
}

// checker runs one health check every interval until its last user
// releases it.
type checker struct {
	key  checkKey
	refs int // under checkers.mu
	// subs are notified (non-blocking) of every state change; under
	// checkers.mu.
	subs map[chan<- struct{}]int

	mu     sync.Mutex
	state  Health
	since  time.Time
	ok     int    // consecutive successes
	failed int    // consecutive failures
	last   string // the last failure, for Inspect

	quit chan struct{}
	done chan struct{}
}

// checkers is the process-wide set of running checkers.
var checkers = struct {
	mu sync.Mutex
	m  map[checkKey]*checker
}{m: map[checkKey]*checker{}}

// acquireChecker returns the checker of k, starting it if it is new, and
// subscribes notify to its state changes. Each call is undone by one
// releaseChecker.
func acquireChecker(k checkKey, notify chan<- struct{}) *checker {
	checkers.mu.Lock()
	defer checkers.mu.Unlock()
	c, ok := checkers.m[k]
	if !ok {
		c = &checker{key: k, subs: map[chan<- struct{}]int{}, since: time.Now(), quit: make(chan struct{}), done: make(chan struct{})}
		checkers.m[k] = c
		go c.run()
	}
	c.refs++
	c.subs[notify]++
	return c
}

// releaseChecker undoes one acquireChecker; the last release stops the
// checker and waits for its goroutine to end.
func releaseChecker(c *checker, notify chan<- struct{}) {
	checkers.mu.Lock()
	c.refs--
	if c.subs[notify]--; c.subs[notify] <= 0 {
		delete(c.subs, notify)
	}
	last := c.refs == 0
	if last {
		delete(checkers.m, c.key)
	}
	checkers.mu.Unlock()
	if last {
		close(c.quit)
		<-c.done
	}
}

// runningCheckers is the number of checkers alive (for tests).
func runningCheckers() int {
	checkers.mu.Lock()
	defer checkers.mu.Unlock()
	return len(checkers.m)
}

// status returns the checker's state, since when, and the last failure.
func (c *checker) status() (Health, time.Time, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.since, c.last
}

func (c *checker) run() {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(c.key.check.Interval)
	defer t.Stop()
	for {
		c.record(probe(ctx, c.key))
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
	}
}

// record counts one result and notifies the subscribers when the state
// changes.
func (c *checker) record(err error) {
	c.mu.Lock()
	prev := c.state
	if err == nil {
		c.ok, c.failed = c.ok+1, 0
		if c.state != Up && c.ok >= c.key.check.Rise {
			c.state = Up
		}
	} else {
		c.ok, c.failed = 0, c.failed+1
		c.last = err.Error()
		if c.state != Down && c.failed >= c.key.check.Fall {
			c.state = Down
		}
	}
	changed := c.state != prev
	if changed {
		c.since = time.Now()
	}
	c.mu.Unlock()
	if !changed {
		return
	}
	checkers.mu.Lock()
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default: // a change is pending already
		}
	}
	checkers.mu.Unlock()
}

// probe runs one check with its timeout.
func probe(ctx context.Context, k checkKey) error {
	ctx, cancel := context.WithTimeout(ctx, k.check.Timeout)
	defer cancel()
	conn, err := dialIn(ctx, k.check.Netns, k.target.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if k.check.Type != "http" {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+k.target.String()+k.check.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "vnicfilter-dlb-health")
	req.Close = true
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("send GET %s: %w", k.check.Path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", k.check.Path, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: %s", k.check.Path, resp.Status)
	}
	return nil
}

// dialDirect connects from filterd's own network namespace.
func dialDirect(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	d.SetMultipathTCP(false)
	return d.DialContext(ctx, "tcp", addr)
}
