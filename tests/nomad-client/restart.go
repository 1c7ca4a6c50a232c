// Agent restarts: graceful (a new plugin, RecoverTask) and crashed (reattach, RecoverTask).

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"nomad-driver-systemd/tests/nomad-client/pb/base"
	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
)

// reattachScenario: a task runs; the agent "crashes" (its go-plugin client is dropped without
// Kill, streams cut); a new agent reattaches with the saved ReattachConfig (no handshake), calls
// PluginInfo and Init (no SetConfig), restores the task with RecoverTask from the persisted
// handle (msgpack_driver_config is not persisted: empty), then stops and destroys it, and
// finally kills the plugin.
func reattachScenario(l *Launch, events *eventLog) (string, error) {
	jobs, err := ParseJob(repoPath("examples/jobs/hello.nomad.hcl"))
	if err != nil || len(jobs) == 0 {
		l.Kill()
		return "", fmt.Errorf("hello job: %v", err)
	}
	p, err := prepare(jobs[0], 2)
	if err != nil {
		l.Kill()
		return "", err
	}
	defer p.alloc.Cleanup()
	ctx, cancel := ctxT(60 * time.Second)
	defer cancel()
	resp, err := l.Stubs.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: p.cfg})
	if err != nil {
		l.Kill()
		return "", fmt.Errorf("StartTask: %v", err)
	}
	if !p.alloc.Stdout.WaitFor("hello from systemd", 15*time.Second) {
		l.Kill()
		return "", errors.New("no hello before the crash")
	}
	rc := l.Client.ReattachConfig()
	if rc == nil {
		l.Kill()
		return "", errors.New("no ReattachConfig")
	}
	// the crash: the agent's streams end with it; its go-plugin client is never Killed
	if events != nil {
		events.cancel()
	}
	l = nil

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
	handle.Config.MsgpackDriverConfig = nil // not persisted across an agent restart (spec §6.4)
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
// the persisted handle, whose msgpack_driver_config is empty (spec §6.3, §6.4).
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
