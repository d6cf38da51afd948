package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// WaitCommand waits until every order of command id finished (success or
// failure) and returns the command with all its orders.
//
// It follows the progress stream (WatchProgress). When the server has no
// progress stream (it answers 404) or the stream breaks, it polls
// GetCommand every `every` (default 1s) instead. progress, when not nil, is
// called with each count the stream or a poll brings, the last (Done) one
// included. A failed poll ends the wait with its error; when ctx ends first
// the error is a *WaitError.
func (c *Client) WaitCommand(ctx context.Context, id string, every time.Duration, progress func(Progress)) (*Command, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	last, err := c.WatchProgress(ctx, id, progress)
	var cmd *Command
	switch {
	case err == nil:
		cmd, err = c.GetCommand(ctx, id)
	case ctx.Err() != nil:
		return nil, &WaitError{ID: id, Progress: last, Err: ctx.Err()}
	case streamUnavailable(err):
		cmd, err = c.pollCommand(ctx, id, every, progress)
	}
	if err != nil {
		return nil, err
	}
	if cmd.Total > len(cmd.Orders) {
		// GetCommand lists up to 1000 orders.
		orders, err := c.AllOrders(ctx, OrderQuery{RequestID: id, Limit: 1000})
		if err != nil {
			return nil, err
		}
		cmd.Orders = orders
	}
	return cmd, nil
}

// streamUnavailable reports whether WatchProgress's err calls for polling
// instead: the server has no progress stream, or the stream broke. Other
// API errors (forbidden, not found of a known route…) would poll no
// better.
func streamUnavailable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed ||
			ae.Status == http.StatusNotImplemented
	}
	return true
}

// pollCommand calls GetCommand every `every` until the command finished.
func (c *Client) pollCommand(ctx context.Context, id string, every time.Duration, progress func(Progress)) (*Command, error) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		cmd, err := c.GetCommand(ctx, id)
		if err != nil {
			return nil, err
		}
		p := cmd.Progress()
		progress(p)
		if p.Done {
			return cmd, nil
		}
		select {
		case <-ctx.Done():
			return nil, &WaitError{ID: id, Progress: p, Err: ctx.Err()}
		case <-t.C:
		}
	}
}

// WaitError is returned by WaitCommand when its context ends before every
// order finished. Progress is the last count seen.
type WaitError struct {
	ID       string
	Progress Progress
	Err      error
}

func (e *WaitError) Error() string {
	p := e.Progress
	return "wait for command " + e.ID + ": " + strconv.Itoa(p.Success+p.Failure) + "/" +
		strconv.Itoa(p.Total) + " orders finished: " + e.Err.Error()
}

func (e *WaitError) Unwrap() error { return e.Err }
