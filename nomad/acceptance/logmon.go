package main

// A stand-in for Nomad's logmon: it makes the FIFOs Nomad hands a driver as stdout_path and
// stderr_path, reads them, and can go away and come back as logmon does when its agent
// restarts.

import (
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

type logmon struct {
	path   string
	mu     sync.Mutex
	got    []byte
	opened chan *os.File
	done   chan struct{}
}

// newLogmon makes the FIFO at path (as logmon does, before StartTask) and starts reading it.
func newLogmon(path string) *logmon {
	check(syscall.Mkfifo(path, 0o600), "mkfifo "+path)
	l := &logmon{path: path}
	l.attach()
	return l
}

// attach opens the FIFO for reading, as logmon does: the open waits for the driver's end
// (at once when it is already open), then what arrives is copied until detach or the end.
func (l *logmon) attach() {
	opened := make(chan *os.File, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(l.path, os.O_RDONLY, 0)
		if err != nil {
			close(opened)
			return
		}
		opened <- f
		buf := make([]byte, 64*1024)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				l.mu.Lock()
				l.got = append(l.got, buf[:n]...)
				l.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	l.mu.Lock()
	l.opened, l.done = opened, done
	l.mu.Unlock()
}

// detach closes the reading end, as a logmon that exits. Only after something arrived:
// the open has returned by then.
func (l *logmon) detach() {
	l.mu.Lock()
	opened, done := l.opened, l.done
	l.mu.Unlock()
	f, ok := <-opened
	if !ok {
		fail("%s was never opened", l.path)
	}
	f.Close()
	<-done
}

func (l *logmon) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.got)
}

// waitFor waits (bounded) until needle has arrived since the start.
func (l *logmon) waitFor(needle string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		if t := l.text(); strings.Contains(t, needle) {
			return t
		}
		if time.Now().After(deadline) {
			t := l.text()
			if len(t) > 300 {
				t = t[len(t)-300:]
			}
			fail("%q did not arrive on %s within %s; the end of what did: %q", needle, l.path, timeout, t)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEOF waits (bounded) until the driver has closed its end: the task's life is over.
func (l *logmon) waitEOF(timeout time.Duration) {
	l.mu.Lock()
	done := l.done
	l.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		fail("%s still open %s after the task's end", l.path, timeout)
	}
}

// restart detaches and attaches again with nothing read yet, as logmon restarted with its
// agent.
func (l *logmon) restart() {
	l.detach()
	l.mu.Lock()
	l.got = nil
	l.mu.Unlock()
	l.attach()
}
