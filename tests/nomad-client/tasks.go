// A task as the client runs it (client/allocrunner/taskrunner): environment, alloc dir,
// config decode, StartTask and the kill path; and the refusals of examples/invalid/.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
)

// taskEnv is the environment the client computes for a task of an IMAGE-isolation driver
// (client/taskenv/env.go Builder: directories as seen in the task, identity, limits, ports;
// no host environment for IMAGE drivers), then the task's env {} on top.
func taskEnv(t JobTask, alloc *AllocDir, ports map[string]int) map[string]string {
	env := map[string]string{
		"NOMAD_ALLOC_DIR":      "/alloc",
		"NOMAD_TASK_DIR":       "/local",
		"NOMAD_SECRETS_DIR":    "/secrets",
		"NOMAD_ALLOC_ID":       alloc.ID,
		"NOMAD_SHORT_ALLOC_ID": alloc.ID[:8],
		"NOMAD_ALLOC_NAME":     fmt.Sprintf("%s.%s[0]", t.Job, t.Group),
		"NOMAD_ALLOC_INDEX":    "0",
		"NOMAD_TASK_NAME":      t.Name,
		"NOMAD_GROUP_NAME":     t.Group,
		"NOMAD_JOB_ID":         t.Job,
		"NOMAD_JOB_NAME":       t.Job,
		"NOMAD_JOB_PARENT_ID":  "",
		"NOMAD_DC":             "dc1",
		"NOMAD_NAMESPACE":      "default",
		"NOMAD_REGION":         "global",
		"NOMAD_CPU_LIMIT":      fmt.Sprint(t.CPU),
		"NOMAD_MEMORY_LIMIT":   fmt.Sprint(t.MemoryMB),
	}
	if t.MemoryMaxMB > 0 {
		env["NOMAD_MEMORY_MAX_LIMIT"] = fmt.Sprint(t.MemoryMaxMB)
	}
	for label, port := range ports {
		env["NOMAD_PORT_"+label] = fmt.Sprint(port)
		env["NOMAD_HOST_PORT_"+label] = fmt.Sprint(port)
		env["NOMAD_IP_"+label] = "127.0.0.1"
		env["NOMAD_ADDR_"+label] = fmt.Sprintf("127.0.0.1:%d", port)
		env["NOMAD_HOST_IP_"+label] = "127.0.0.1"
		env["NOMAD_HOST_ADDR_"+label] = fmt.Sprintf("127.0.0.1:%d", port)
		env["NOMAD_ALLOC_PORT_"+label] = fmt.Sprint(port)
	}
	for k, v := range t.Env {
		env[k] = v
	}
	return env
}

var nodeAttrs = map[string]string{
	"node.unique.id":   "0b2c3d4e-0000-4000-8000-00000000c0de",
	"node.unique.name": "conformance",
	"node.datacenter":  "dc1",
	"node.region":      "global",
	"node.class":       "",
	"attr.kernel.name": "linux",
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// a prepared task: decoded config and TaskConfig, alloc dir built
type prepared struct {
	alloc *AllocDir
	cfg   *drivers.TaskConfig
	ports map[string]int
}

// prepare does the client's part before StartTask; a decode error is the client refusing the
// task ("failed to parse config", a Failed Validation event).
func prepare(t JobTask, n int) (*prepared, error) {
	alloc, err := NewAllocDir(*flagRoot, t.Name)
	if err != nil {
		return nil, fmt.Errorf("alloc dir: %v", err)
	}
	ports := map[string]int{}
	for _, label := range t.Ports {
		p, err := freePort()
		if err != nil {
			alloc.Cleanup()
			return nil, err
		}
		ports[label] = p
	}
	env := taskEnv(t, alloc, ports)
	val, err := decodeConfigMap(t.Config, agent.taskSpec, taskVars(env, nodeAttrs))
	if err != nil {
		alloc.Cleanup()
		return nil, &decodeError{fmt.Errorf("failed to parse config: %v", err)}
	}
	mp, err := msgpackOf(val)
	if err != nil {
		alloc.Cleanup()
		return nil, fmt.Errorf("failed to encode driver config: %v", err)
	}
	var dyn []*drivers.NetworkPort
	for label, p := range ports {
		dyn = append(dyn, &drivers.NetworkPort{Label: label, Value: int32(p)})
	}
	cfg := &drivers.TaskConfig{
		Id:                  fmt.Sprintf("%s/%s/%08x", alloc.ID, t.Name, n),
		Name:                t.Name,
		MsgpackDriverConfig: mp,
		Env:                 env,
		DeviceEnv:           map[string]string{},
		Resources: &drivers.Resources{
			AllocatedResources: &drivers.AllocatedTaskResources{
				Cpu:      &drivers.AllocatedCpuResources{CpuShares: int64(t.CPU)},
				Memory:   &drivers.AllocatedMemoryResources{MemoryMb: int64(t.MemoryMB), MemoryMaxMb: int64(t.MemoryMaxMB)},
				Networks: []*drivers.NetworkResource{{Device: "lo", Ip: "127.0.0.1", DynamicPorts: dyn}},
			},
			LinuxResources: &drivers.LinuxResources{CpuShares: int64(t.CPU), MemoryLimitBytes: int64(t.MemoryMB) << 20, PercentTicks: float64(t.CPU) / 4000},
		},
		User:          t.User,
		AllocDir:      alloc.Dir,
		StdoutPath:    alloc.Stdout.path,
		StderrPath:    alloc.Stderr.path,
		TaskGroupName: t.Group,
		JobName:       t.Job,
		JobId:         t.Job,
		AllocId:       alloc.ID,
		Namespace:     "default",
		NodeName:      "conformance",
		NodeId:        nodeAttrs["node.unique.id"],
	}
	return &prepared{alloc: alloc, cfg: cfg, ports: ports}, nil
}

type decodeError struct{ err error }

func (d *decodeError) Error() string { return d.err.Error() }

// what each example prints, and where (the examples' own echo lines)
var expectedOutput = map[string]struct{ stream, text string }{
	"hello.nomad.hcl":        {"stdout", "hello from systemd"},
	"hello.json":             {"stdout", "hello from systemd"},
	"properties.nomad.hcl":   {"stdout", "open files: 65536"},
	"resources.nomad.hcl":    {"stdout", "limits applied"},
	"web-template.nomad.hcl": {"stderr", "GET /conformance.txt"},
}

func hardNofile() uint64 {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 65536
	}
	return r.Max
}

func unitsOf(allocID string) []string {
	var out []string
	for _, u := range liveUnits() {
		if strings.Contains(u, allocID) {
			out = append(out, u)
		}
	}
	return out
}

func waitGone(allocID string) error {
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		if len(unitsOf(allocID)) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("units left after DestroyTask: %v", unitsOf(allocID))
}

func runTask(l *Launch, t JobTask, rel string) (string, error) {
	p, err := prepare(t, 1)
	if err != nil {
		return "", err
	}
	defer p.alloc.Cleanup()
	d := l.Stubs.Driver
	base := filepath.Base(rel)
	if base == "web-template.nomad.hcl" {
		_ = os.WriteFile(filepath.Join(p.alloc.TaskDir(), "local/conformance.txt"), []byte("served from /local\n"), 0o644)
	}
	ctx, cancel := ctxT(60 * time.Second)
	defer cancel()
	resp, err := d.StartTask(ctx, &drivers.StartTaskRequest{Task: p.cfg})
	if err != nil {
		return "", fmt.Errorf("StartTask: %v", err)
	}
	if resp.Handle == nil || resp.Handle.Config == nil || resp.Handle.Config.Id != p.cfg.Id {
		return "", fmt.Errorf("StartTask returned no usable handle: %v", resp.Handle)
	}
	var errs []string
	waited := make(chan *drivers.WaitTaskResponse, 1)
	go func() {
		w, err := d.WaitTask(context.Background(), &drivers.WaitTaskRequest{TaskId: p.cfg.Id})
		if err != nil {
			w = &drivers.WaitTaskResponse{Err: "rpc: " + err.Error()}
		}
		waited <- w
	}()
	cleanup := func() {
		sctx, scancel := ctxT(20 * time.Second)
		defer scancel()
		_, _ = d.StopTask(sctx, &drivers.StopTaskRequest{TaskId: p.cfg.Id, Timeout: durationpb.New(2 * time.Second), Signal: "SIGKILL"})
		_, _ = d.DestroyTask(sctx, &drivers.DestroyTaskRequest{TaskId: p.cfg.Id, Force: true})
	}

	note := ""
	if exp, ok := expectedOutput[base]; ok {
		if base == "properties.nomad.hcl" {
			// systemd applies LimitNOFILE=65536 as far as the kernel lets PID 1 raise it: on
			// machines whose hard limit is lower (containers) it sets that limit instead
			exp.text = fmt.Sprintf("open files: %d", min(65536, hardNofile()))
		}
		log := p.alloc.Stdout
		if exp.stream == "stderr" {
			log = p.alloc.Stderr
		}
		if base == "web-template.nomad.hcl" {
			body, err := httpGetRetry(fmt.Sprintf("http://127.0.0.1:%d/conformance.txt", p.ports["http"]), 15*time.Second)
			if err != nil || !strings.Contains(body, "served from /local") {
				errs = append(errs, fmt.Sprintf("GET on NOMAD_PORT_http: %q %v", body, err))
			}
		}
		if !log.WaitFor(exp.text, 15*time.Second) {
			errs = append(errs, fmt.Sprintf("%s FIFO never carried %q (stdout %q, stderr %q)", exp.stream, exp.text, p.alloc.Stdout.Text(), p.alloc.Stderr.Text()))
		} else {
			note = fmt.Sprintf("%s: %q", exp.stream, exp.text)
		}
	}

	// TaskStats: a couple of samples (the stats hook, when allocation metrics are published)
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	st, err := d.TaskStats(sctx, &drivers.TaskStatsRequest{TaskId: p.cfg.Id, CollectionInterval: durationpb.New(500 * time.Millisecond)})
	if err != nil {
		errs = append(errs, "TaskStats: "+err.Error())
	} else {
		for i := 0; i < 2; i++ {
			m, err := st.Recv()
			if err != nil {
				errs = append(errs, fmt.Sprintf("TaskStats sample %d: %v", i+1, err))
				break
			}
			if m.Stats == nil || m.Stats.AggResourceUsage == nil || m.Stats.AggResourceUsage.Memory == nil || m.Stats.AggResourceUsage.Cpu == nil || m.Stats.Timestamp == nil {
				errs = append(errs, fmt.Sprintf("TaskStats sample %d incomplete: %v", i+1, m))
				break
			}
		}
	}
	scancel()

	// SignalTask with a signal the workload ignores: it must still run afterwards
	if _, err := d.SignalTask(ctx, &drivers.SignalTaskRequest{TaskId: p.cfg.Id, Signal: "SIGWINCH"}); err != nil {
		errs = append(errs, "SignalTask: "+err.Error())
	}
	time.Sleep(200 * time.Millisecond)
	if in, err := d.InspectTask(ctx, &drivers.InspectTaskRequest{TaskId: p.cfg.Id}); err != nil {
		errs = append(errs, "InspectTask: "+err.Error())
	} else if in.Task == nil || in.Task.State != drivers.TaskState_RUNNING {
		errs = append(errs, fmt.Sprintf("task not running after SIGWINCH: %v", in.Task))
	}

	// the kill path: StopTask(timeout, kill_signal) → WaitTask result → DestroyTask
	if _, err := d.StopTask(ctx, &drivers.StopTaskRequest{TaskId: p.cfg.Id, Timeout: durationpb.New(5 * time.Second), Signal: "SIGINT"}); err != nil {
		errs = append(errs, "StopTask: "+err.Error())
	}
	select {
	case w := <-waited:
		if w.Err != "" {
			errs = append(errs, "WaitTask: "+w.Err)
		} else if w.Result == nil {
			errs = append(errs, "WaitTask: no result")
		} else {
			note += fmt.Sprintf("; exit %d signal %d", w.Result.ExitCode, w.Result.Signal)
		}
	case <-time.After(15 * time.Second):
		errs = append(errs, "WaitTask did not return after StopTask")
	}
	if _, err := d.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: p.cfg.Id, Force: true}); err != nil {
		errs = append(errs, "DestroyTask: "+err.Error())
		cleanup()
	}
	if err := waitGone(p.alloc.ID); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return "", errors.New(strings.Join(errs, "; "))
	}
	return strings.TrimPrefix(note, "; "), nil
}

func httpGetRetry(url string, d time.Duration) (string, error) {
	end := time.Now().Add(d)
	var last error
	for time.Now().Before(end) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b), nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return "", last
}

// expectation of an examples/invalid file: its "# expect:" lines
func expectOf(file string) (string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(l, "# expect:") {
			parts = append(parts, strings.TrimSpace(strings.TrimPrefix(l, "# expect:")))
		}
	}
	if len(parts) == 0 {
		return "", errors.New("no # expect: line")
	}
	return strings.Join(parts, " "), nil
}

func refuseInvalid(l *Launch, file string) (string, error) {
	expect, err := expectOf(file)
	if err != nil {
		return "", err
	}
	before := liveUnits()
	// "config.properties.User: ..." → key path "config.properties.User", last element "User"
	keyPath := strings.SplitN(expect, ": ", 2)[0]
	key := keyPath[strings.LastIndex(keyPath, ".")+1:]

	tasks, perr := ParseJob(file)
	if perr != nil {
		// refused before any client sees it: the job file does not parse (jobspec2 / HCL)
		var line int
		if _, err := fmt.Sscanf(expect, "HCL parse error in line %d", &line); err == nil {
			if !strings.Contains(perr.Error(), fmt.Sprintf(":%d,", line)) {
				return "", fmt.Errorf("HCL error does not point at line %d: %v", line, perr)
			}
		}
		return "by the job parser (HCL): " + perr.Error(), nil
	}
	var refusals []string
	for _, t := range tasks {
		if t.Driver != "systemd" {
			continue
		}
		p, err := prepare(t, 1)
		var de *decodeError
		if errors.As(err, &de) {
			// refused by the client's decode against TaskConfigSchema: Nomad's task runner emits
			// Failed Validation and never calls StartTask
			if !strings.Contains(de.Error(), fmt.Sprintf("%q", key)) {
				return "", fmt.Errorf("decode error does not name %q: %v", key, de)
			}
			refusals = append(refusals, "by Nomad's task-config decode (hcldec): "+de.Error())
			continue
		}
		if err != nil {
			return "", err
		}
		ctx, cancel := ctxT(60 * time.Second)
		_, serr := l.Stubs.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: p.cfg})
		if serr == nil {
			_, _ = l.Stubs.Driver.StopTask(ctx, &drivers.StopTaskRequest{TaskId: p.cfg.Id, Timeout: durationpb.New(time.Second), Signal: "SIGKILL"})
			_, _ = l.Stubs.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: p.cfg.Id, Force: true})
			cancel()
			p.alloc.Cleanup()
			return "", fmt.Errorf("StartTask accepted task %q (expected: %s)", t.Name, expect)
		}
		cancel()
		msg := status.Convert(serr).Message()
		p.alloc.Cleanup()
		if !strings.Contains(msg, keyPath) {
			return "", fmt.Errorf("StartTask error does not name %s: %s", keyPath, msg)
		}
		refusals = append(refusals, fmt.Sprintf("by the driver at StartTask (%s): %s", status.Code(serr), msg))
	}
	if len(refusals) == 0 {
		return "", errors.New("no systemd task in the file")
	}
	time.Sleep(100 * time.Millisecond)
	if after := liveUnits(); strings.Join(after, " ") != strings.Join(before, " ") {
		return "", fmt.Errorf("units changed: before %v, after %v", before, after)
	}
	if d := dropIns(); len(d) > 0 {
		return "", fmt.Errorf("drop-ins left: %v", d)
	}
	return strings.Join(refusals, "; "), nil
}

func unitActive(allocID string) bool {
	for _, u := range unitsOf(allocID) {
		if strings.TrimSpace(systemctl("is-active", u)) == "active" {
			return true
		}
	}
	return false
}

// naturalExit: a task that ends by itself (the client's natural-exit path: WaitTask returns,
// then DestroyTask(force); task_runner.go runDriver/handleTaskExitResult) reports its exit
// code, and its output reached the log before the FIFO closed.
func naturalExit(l *Launch) (string, error) {
	t := JobTask{Job: "exit", Group: "exit", Name: "exit", Driver: "systemd", CPU: 100, MemoryMB: 64,
		Env:    map[string]string{"PATH": "/usr/bin:/bin"},
		Config: map[string]any{"command": "/bin/sh", "args": []any{"-c", "echo bye from ${NOMAD_TASK_NAME}; exit 3"}}}
	p, err := prepare(t, 1)
	if err != nil {
		return "", err
	}
	defer p.alloc.Cleanup()
	d := l.Stubs.Driver
	ctx, cancel := ctxT(60 * time.Second)
	defer cancel()
	if _, err := d.StartTask(ctx, &drivers.StartTaskRequest{Task: p.cfg}); err != nil {
		return "", fmt.Errorf("StartTask: %v", err)
	}
	w, err := d.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: p.cfg.Id})
	var errs []string
	switch {
	case err != nil:
		errs = append(errs, "WaitTask: "+err.Error())
	case w.Err != "" || w.Result == nil:
		errs = append(errs, fmt.Sprintf("WaitTask: %v", w))
	case w.Result.ExitCode != 3 || w.Result.Signal != 0:
		errs = append(errs, fmt.Sprintf("exit result %v, want exit code 3", w.Result))
	}
	// ${NOMAD_TASK_NAME} was interpolated by the client's decode, not by a shell
	if !p.alloc.Stdout.WaitFor("bye from exit\n", 5*time.Second) {
		errs = append(errs, fmt.Sprintf("stdout %q", p.alloc.Stdout.Text()))
	}
	if _, err := d.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: p.cfg.Id, Force: true}); err != nil {
		errs = append(errs, "DestroyTask: "+err.Error())
	}
	if err := waitGone(p.alloc.ID); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return "", errors.New(strings.Join(errs, "; "))
	}
	return "exit code 3", nil
}
