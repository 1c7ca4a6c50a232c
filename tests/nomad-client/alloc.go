package main

// Alloc and task directories as the Nomad client builds them before StartTask (spec §9.1;
// nomad client/allocdir alloc_dir.go AllocDir.Build, task_dir.go TaskDir.Build, fs_unix.go
// dropDirPermissions and the secrets tmpfs), and log FIFOs read the way logmon does (spec §8;
// client/logmon/logmon.go, client/lib/fifo): mode 0600 FIFOs in alloc/logs, a reader that
// copies into <task>.stdout.0 / .stderr.0 and keeps its read end open after EOF.

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const nobody = 65534

func newAllocID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// fifoLog is one logmon-style reader.
type fifoLog struct {
	path, file string
	mu         sync.Mutex
	data       bytes.Buffer
	fd         *os.File
	done       chan struct{}
}

func startFifo(path, file string) (*fifoLog, error) {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("mkfifo %s: %w", path, err)
	}
	f := &fifoLog{path: path, file: file, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		r, err := os.OpenFile(path, os.O_RDONLY, 0) // blocks until a writer (the task) opens
		if err != nil {
			return
		}
		f.mu.Lock()
		f.fd = r
		f.mu.Unlock()
		out, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return
		}
		defer out.Close()
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				f.mu.Lock()
				f.data.Write(buf[:n])
				f.mu.Unlock()
				_, _ = out.Write(buf[:n])
			}
			if err != nil {
				return // EOF: every writer closed; the read end stays open, as logmon's does
			}
		}
	}()
	return f, nil
}

func (f *fifoLog) Text() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data.String()
}

func (f *fifoLog) WaitFor(needle string, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if bytes.Contains([]byte(f.Text()), []byte(needle)) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// close releases the reader; a reader still waiting for a writer is woken by a writer of ours.
func (f *fifoLog) close() {
	f.mu.Lock()
	fd := f.fd
	f.mu.Unlock()
	if fd == nil {
		if w, err := os.OpenFile(f.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	}
	select {
	case <-f.done:
	case <-time.After(2 * time.Second):
	}
	f.mu.Lock()
	if f.fd != nil {
		f.fd.Close()
	}
	f.mu.Unlock()
}

// AllocDir is <root>/<alloc id> with one task.
type AllocDir struct {
	ID, Dir, Task  string
	Stdout, Stderr *fifoLog
	mounts         []string
}

func mkdirAs(p string, mode os.FileMode, dropToNobody bool) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	if dropToNobody {
		// dropDirPermissions: requested mode | 0777, owned by nobody when the agent is root
		if err := os.Chmod(p, mode|0o777); err != nil {
			return err
		}
		return os.Chown(p, nobody, nobody)
	}
	return os.Chmod(p, mode)
}

// NewAllocDir lays out the alloc and task dirs, mounts secrets/ and private/ as 1 MiB noexec
// tmpfs (in the caller's mount namespace: run this inside the private systemd's), and creates
// the log FIFOs with their readers.
func NewAllocDir(root, task string) (*AllocDir, error) {
	a := &AllocDir{ID: newAllocID(), Task: task}
	a.Dir = filepath.Join(root, a.ID)
	td := filepath.Join(a.Dir, task)
	steps := []struct {
		p    string
		mode os.FileMode
		drop bool
	}{
		{a.Dir, 0o755, false},
		{filepath.Join(a.Dir, "alloc"), 0o755, true},
		{filepath.Join(a.Dir, "alloc/data"), 0o777, true},
		{filepath.Join(a.Dir, "alloc/tmp"), 0o777, true},
		{filepath.Join(a.Dir, "alloc/logs"), 0o777, true},
		{td, 0o777, true},
		{filepath.Join(td, "local"), 0o777, true},
		{filepath.Join(td, "tmp"), 0o1777, true},
	}
	for _, s := range steps {
		if err := mkdirAs(s.p, s.mode, s.drop); err != nil {
			a.Cleanup()
			return nil, err
		}
	}
	if err := os.Chmod(filepath.Join(td, "tmp"), 0o777|os.ModeSticky); err != nil {
		a.Cleanup()
		return nil, err
	}
	for _, d := range []string{"secrets", "private"} {
		p := filepath.Join(td, d)
		if err := os.MkdirAll(p, 0o777); err != nil {
			a.Cleanup()
			return nil, err
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOEXEC, "size=1m"); err != nil {
			a.Cleanup()
			return nil, fmt.Errorf("tmpfs on %s: %w", p, err)
		}
		a.mounts = append(a.mounts, p)
		if err := mkdirAs(p, 0o777, true); err != nil {
			a.Cleanup()
			return nil, err
		}
	}
	logs := filepath.Join(a.Dir, "alloc/logs")
	var err error
	if a.Stdout, err = startFifo(filepath.Join(logs, "."+task+".stdout.fifo"), filepath.Join(logs, task+".stdout.0")); err != nil {
		a.Cleanup()
		return nil, err
	}
	if a.Stderr, err = startFifo(filepath.Join(logs, "."+task+".stderr.fifo"), filepath.Join(logs, task+".stderr.0")); err != nil {
		a.Cleanup()
		return nil, err
	}
	return a, nil
}

func (a *AllocDir) TaskDir() string { return filepath.Join(a.Dir, a.Task) }

// Cleanup is the client's alloc GC: readers stopped, tmpfs unmounted, tree removed.
func (a *AllocDir) Cleanup() {
	for _, f := range []*fifoLog{a.Stdout, a.Stderr} {
		if f != nil {
			f.close()
		}
	}
	for _, m := range a.mounts {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	_ = os.RemoveAll(a.Dir)
}
