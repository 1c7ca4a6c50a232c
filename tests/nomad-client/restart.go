// Agent restarts: graceful (a new plugin, RecoverTask) and crashed (reattach, RecoverTask).

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"nomad-driver-systemd/tests/nomad-client/pb/base"
	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
)

// crashState is what the crashing agent leaves in its state DB for the next one: the reattach
// config (client/pluginmanager/drivermanager, the stored ReattachConfig) and the task handle.
type crashState struct {
	Network, Addr string
	Pid           int
	Handle        []byte // proto TaskHandle as StartTask returned it
}

// crashAgentMain runs in a child process: a throw-away agent that launches the plugin (launch
// #3), starts the task it is given, writes the reattach config and the handle to stdout, and
// dies without Kill: its end of the plugin's stdout/stderr pipes closes with it, as when a real
// agent crashes, so the plugin must survive writing its logs into a broken pipe
// (docs/nomad-contract.md, "Logs on stderr").
func crashAgentMain(taskFile string) {
	die := func(err error) {
		fmt.Fprintln(os.Stderr, "crash agent:", err)
		os.Exit(3)
	}
	raw, err := os.ReadFile(taskFile)
	if err != nil {
		die(err)
	}
	var in struct {
		PluginConfig, APIVersion, Task []byte
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		die(err)
	}
	agent.pluginConfig, agent.apiVersion = in.PluginConfig, string(in.APIVersion)
	var cfg drivers.TaskConfig
	if err := proto.Unmarshal(in.Task, &cfg); err != nil {
		die(err)
	}
	l, err := launchDriver("driver_mgr")
	if err != nil {
		die(err)
	}
	ctx, cancel := ctxT(60 * time.Second)
	defer cancel()
	resp, err := l.Stubs.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: &cfg})
	if err != nil {
		die(fmt.Errorf("StartTask: %v", err))
	}
	h, err := proto.Marshal(resp.Handle)
	if err != nil {
		die(err)
	}
	rc := l.Client.ReattachConfig()
	out, _ := json.Marshal(crashState{Network: rc.Addr.Network(), Addr: rc.Addr.String(), Pid: rc.Pid, Handle: h})
	os.Stdout.Write(append(out, '\n'))
	os.Exit(0) // the crash: no Kill, no Shutdown, no stream closed politely
}

// reattachScenario: an agent (a child process) starts a task and crashes; a new agent
// reattaches with the saved ReattachConfig (no handshake), calls PluginInfo and Init (no
// SetConfig), restores the task with RecoverTask from the persisted handle (whose
// msgpack_driver_config is not persisted: empty), then stops and destroys it, and finally
// kills the plugin (client/pluginmanager/drivermanager/instance.go dispense with reattach;
// task_runner.go restoreHandle).
func reattachScenario() (string, error) {
	if agent.taskSpec == nil {
		return "", errors.New("no converted TaskConfigSchema (launch 3 failed)")
	}
	jobs, err := ParseJob(repoPath("examples/jobs/hello.nomad.hcl"))
	if err != nil || len(jobs) == 0 {
		return "", fmt.Errorf("hello job: %v", err)
	}
	p, err := prepare(jobs[0], 2)
	if err != nil {
		return "", err
	}
	defer p.alloc.Cleanup()
	task, err := proto.Marshal(p.cfg)
	if err != nil {
		return "", err
	}
	in, _ := json.Marshal(map[string][]byte{"PluginConfig": agent.pluginConfig, "APIVersion": []byte(agent.apiVersion), "Task": task})
	inFile := filepath.Join(p.alloc.Dir, "crash-agent.json")
	if err := os.WriteFile(inFile, in, 0o600); err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-binary", *flagBinary, "-crash-agent", inFile}
	if *flagVerbose {
		args = append(args, "-v")
	}
	child := exec.Command(self, args...)
	child.Stderr = os.Stderr
	out, err := child.Output()
	if err != nil {
		return "", fmt.Errorf("crash agent: %v", err)
	}
	var st crashState
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("crash agent output %q: %v", out, err)
	}
	var persisted drivers.TaskHandle
	if err := proto.Unmarshal(st.Handle, &persisted); err != nil {
		return "", err
	}
	resp := &drivers.StartTaskResponse{Handle: &persisted}
	if !p.alloc.Stdout.WaitFor("hello from systemd", 15*time.Second) {
		return "", errors.New("no hello from the task the crashed agent started")
	}
	addr, err := net.ResolveUnixAddr(st.Network, st.Addr)
	if err != nil {
		return "", err
	}
	rc := &plugin.ReattachConfig{Protocol: plugin.ProtocolGRPC, ProtocolVersion: 2, Addr: addr, Pid: st.Pid}
	ctx, cancel := ctxT(60 * time.Second)
	defer cancel()

	r, err := ReattachPlugin(rc, "driver_mgr.reattached", *flagVerbose)
	if err != nil {
		return "", fmt.Errorf("reattach: %v", err)
	}
	var errs []string
	d := r.Stubs.Driver
	if got := r.Client.ReattachConfig(); got == nil || got.Pid != rc.Pid {
		errs = append(errs, fmt.Sprintf("reattached to another process: %v vs %v", got, rc))
	}
	if info, err := r.Stubs.Base.PluginInfo(ctx, &base.PluginInfoRequest{}); err != nil {
		errs = append(errs, "PluginInfo: "+err.Error())
	} else if _, err := negotiateAPIVersion(info.PluginApiVersions); err != nil {
		errs = append(errs, err.Error())
	}
	if _, err := d.Init(ctx, &drivers.InitRequest{}); err != nil && status.Code(err) != codes.Unimplemented {
		errs = append(errs, "Init: "+err.Error())
	}
	handle := resp.Handle
	handle.Config.MsgpackDriverConfig = nil // not persisted across an agent restart (docs/nomad-contract.md)
	if _, err := d.RecoverTask(ctx, &drivers.RecoverTaskRequest{TaskId: p.cfg.Id, Handle: handle}); err != nil {
		errs = append(errs, "RecoverTask: "+err.Error())
	}
	if in, err := d.InspectTask(ctx, &drivers.InspectTaskRequest{TaskId: p.cfg.Id}); err != nil {
		errs = append(errs, "InspectTask: "+err.Error())
	} else if in.Task == nil || in.Task.State != drivers.TaskState_RUNNING {
		errs = append(errs, fmt.Sprintf("recovered task not running: %v", in.Task))
	}
	waited := make(chan *drivers.WaitTaskResponse, 1)
	go func() {
		w, err := d.WaitTask(context.Background(), &drivers.WaitTaskRequest{TaskId: p.cfg.Id})
		if err != nil {
			w = &drivers.WaitTaskResponse{Err: "rpc: " + err.Error()}
		}
		waited <- w
	}()
	if _, err := d.StopTask(ctx, &drivers.StopTaskRequest{TaskId: p.cfg.Id, Timeout: durationpb.New(5 * time.Second), Signal: "SIGINT"}); err != nil {
		errs = append(errs, "StopTask: "+err.Error())
	}
	select {
	case w := <-waited:
		if w.Err != "" || w.Result == nil {
			errs = append(errs, fmt.Sprintf("WaitTask: %v", w))
		}
	case <-time.After(15 * time.Second):
		errs = append(errs, "WaitTask did not return after StopTask")
	}
	if _, err := d.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: p.cfg.Id, Force: true}); err != nil {
		errs = append(errs, "DestroyTask: "+err.Error())
	}
	if err := waitGone(p.alloc.ID); err != nil {
		errs = append(errs, err.Error())
	}
	if err := r.Kill(); err != nil {
		errs = append(errs, "Kill after reattach: "+err.Error())
	}
	if len(errs) > 0 {
		return "", errors.New(strings.Join(errs, "; "))
	}
	return fmt.Sprintf("pid %d", rc.Pid), nil
}

// agentRestartScenario: the agent's graceful shutdown (client/pluginmanager/drivermanager,
// instance.go: Driver/Shutdown with a 2 s deadline, then go-plugin Kill) must leave the task
// running; the next agent launches a new plugin and restores the task with RecoverTask from
// the persisted handle, whose msgpack_driver_config is empty (docs/nomad-contract.md,
// "What survives an agent restart").
func agentRestartScenario() (string, error) {
	if agent.taskSpec == nil {
		return "", errors.New("no converted TaskConfigSchema (launch 3 failed)")
	}
	jobs, err := ParseJob(repoPath("examples/jobs/hello.nomad.hcl"))
	if err != nil || len(jobs) == 0 {
		return "", fmt.Errorf("hello job: %v", err)
	}
	p, err := prepare(jobs[0], 3)
	if err != nil {
		return "", err
	}
	defer p.alloc.Cleanup()
	l, err := launchDriver("driver_mgr")
	if err != nil {
		return "", err
	}
	ctx, cancel := ctxT(60 * time.Second)
	defer cancel()
	resp, err := l.Stubs.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: p.cfg})
	if err != nil {
		l.Kill()
		return "", fmt.Errorf("StartTask: %v", err)
	}
	if !p.alloc.Stdout.WaitFor("hello from systemd", 15*time.Second) {
		l.Kill()
		return "", errors.New("no hello")
	}
	var errs []string
	sctx, scancel := ctxT(2 * time.Second)
	if _, err := l.Stubs.Driver.Shutdown(sctx, &drivers.ShutdownRequest{}); err != nil && status.Code(err) != codes.Unimplemented {
		errs = append(errs, "Driver/Shutdown: "+err.Error())
	}
	scancel()
	if err := l.Kill(); err != nil {
		errs = append(errs, err.Error())
	}
	time.Sleep(300 * time.Millisecond)
	if !unitActive(p.alloc.ID) {
		errs = append(errs, fmt.Sprintf("the task's unit is not active after the plugin stopped: %v", unitsOf(p.alloc.ID)))
	}
	n, err := launchDriver("driver_mgr.restarted")
	if err != nil {
		return "", fmt.Errorf("%s; new plugin: %v", strings.Join(errs, "; "), err)
	}
	d := n.Stubs.Driver
	handle := resp.Handle
	handle.Config.MsgpackDriverConfig = nil
	if _, err := d.RecoverTask(ctx, &drivers.RecoverTaskRequest{TaskId: p.cfg.Id, Handle: handle}); err != nil {
		errs = append(errs, "RecoverTask: "+err.Error())
	}
	if in, err := d.InspectTask(ctx, &drivers.InspectTaskRequest{TaskId: p.cfg.Id}); err != nil {
		errs = append(errs, "InspectTask: "+err.Error())
	} else if in.Task == nil || in.Task.State != drivers.TaskState_RUNNING {
		errs = append(errs, fmt.Sprintf("recovered task not running: %v", in.Task))
	}
	waited := make(chan *drivers.WaitTaskResponse, 1)
	go func() {
		w, err := d.WaitTask(context.Background(), &drivers.WaitTaskRequest{TaskId: p.cfg.Id})
		if err != nil {
			w = &drivers.WaitTaskResponse{Err: "rpc: " + err.Error()}
		}
		waited <- w
	}()
	if _, err := d.StopTask(ctx, &drivers.StopTaskRequest{TaskId: p.cfg.Id, Timeout: durationpb.New(5 * time.Second), Signal: "SIGINT"}); err != nil {
		errs = append(errs, "StopTask: "+err.Error())
	}
	select {
	case w := <-waited:
		if w.Err != "" || w.Result == nil {
			errs = append(errs, fmt.Sprintf("WaitTask: %v", w))
		}
	case <-time.After(15 * time.Second):
		errs = append(errs, "WaitTask did not return after StopTask")
	}
	if _, err := d.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: p.cfg.Id, Force: true}); err != nil {
		errs = append(errs, "DestroyTask: "+err.Error())
	}
	if err := waitGone(p.alloc.ID); err != nil {
		errs = append(errs, err.Error())
	}
	if err := n.Kill(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return "", errors.New(strings.Join(errs, "; "))
	}
	return "", nil
}
