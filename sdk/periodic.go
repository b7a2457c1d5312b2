package sdk

import "time"

// Periodic calls fn every interval on its own goroutine until the returned
// stop is called; stop waits for a running call to finish. Filters use it
// for housekeeping their fast path cannot do itself, such as sweeping
// expired entries out of a connection table.
func Periodic(interval time.Duration, fn func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
