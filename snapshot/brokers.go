package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBrokerControl marks a broker that did not stop or start as asked.
var ErrBrokerControl = errors.New("broker control failed")

// waitRunning polls Control.Running until it reports want or timeout passes.
func (e Env) waitRunning(ctx context.Context, b Broker, want bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		up, err := e.Control.Running(ctx, b)
		if err == nil && up == want {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			state := "running"
			if !want {
				state = "stopped"
			}
			if last != nil {
				return fmt.Errorf("broker %d not %s within %s (status: %v)", b.ID, state, timeout, last)
			}
			return fmt.Errorf("broker %d not %s within %s", b.ID, state, timeout)
		case <-time.After(e.Poll):
		}
	}
}

// stopBroker asks broker id to stop and waits until its status says so.
func (e Env) stopBroker(ctx context.Context, id int32) error {
	b := e.broker(id)
	start := time.Now()
	e.Logger.Info("stopping broker", "broker", id)
	if err := e.Control.Stop(ctx, b); err != nil {
		return fmt.Errorf("%w: stop broker %d: %w", ErrBrokerControl, id, err)
	}
	if err := e.waitRunning(ctx, b, false, e.Config.Timeouts.StopTimeout()); err != nil {
		return fmt.Errorf("%w: %w", ErrBrokerControl, err)
	}
	e.Logger.Info("broker stopped", "broker", id, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// startBroker starts broker id and waits until its status says it runs,
// trying StartAttempts times. It ignores ctx's cancellation: a broker that
// was stopped is always started again.
func (e Env) startBroker(ctx context.Context, id int32) error {
	ctx = context.WithoutCancel(ctx)
	b := e.broker(id)
	start := time.Now()
	var errs []error
	for attempt := 1; attempt <= e.StartAttempts; attempt++ {
		e.Logger.Info("starting broker", "broker", id, "attempt", attempt)
		err := e.Control.Start(ctx, b)
		if err == nil {
			err = e.waitRunning(ctx, b, true, e.Config.Timeouts.StartTimeout())
		}
		if err == nil {
			e.Logger.Info("broker running", "broker", id, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		e.Logger.Warn("broker did not start", "broker", id, "attempt", attempt, "err", err)
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: broker %d did not come back after %d attempts: %w", ErrBrokerControl, id, e.StartAttempts, errors.Join(errs...))
}

// parallel runs fn for every id at once and joins the errors.
func parallel(ids []int32, fn func(id int32) error) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(id)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopAll stops every broker in ids at once.
func (e Env) stopAll(ctx context.Context, ids []int32) error {
	return parallel(ids, func(id int32) error { return e.stopBroker(ctx, id) })
}

// startAll starts every broker in ids at once (KRaft quorums and ZooKeeper
// clusters need their members up together).
func (e Env) startAll(ctx context.Context, ids []int32) error {
	return parallel(ids, func(id int32) error { return e.startBroker(ctx, id) })
}
