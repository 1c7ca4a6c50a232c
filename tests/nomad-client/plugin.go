package main

// The agent's side of go-plugin, with go-plugin's own client: Nomad's handshake (nomad
// plugins/base/plugin.go Handshake: protocol version 2, NOMAD_PLUGIN_MAGIC_COOKIE), gRPC only,
// launched the way helper/pluginutils/loader/init.go and loader.go (Dispense) do it, killed with
// Client.Kill (controller Shutdown, close, 2 s, then SIGKILL), and reattached the way
// client/pluginmanager/drivermanager/instance.go (dispense with a ReattachConfig) does.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"nomad-driver-systemd/tests/nomad-client/pb/base"
	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
)

const (
	cookieKey   = "NOMAD_PLUGIN_MAGIC_COOKIE"
	cookieValue = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   cookieKey,
	MagicCookieValue: cookieValue,
}

// Stubs is what Dispense hands back: the generated clients on go-plugin's connection.
type Stubs struct {
	Base   base.BasePluginClient
	Driver drivers.DriverClient
}

// driverPlugin is the client half of a go-plugin GRPCPlugin for Nomad's "base"/"driver"
// plugin set; it never serves.
type driverPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (driverPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the conformance client never serves a plugin")
}

func (driverPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &Stubs{Base: base.NewBasePluginClient(conn), Driver: drivers.NewDriverClient(conn)}, nil
}

var pluginSet = map[string]plugin.Plugin{"base": driverPlugin{}, "driver": driverPlugin{}}

// syncBuf collects go-plugin's log (which also carries the plugin's re-logged stderr).
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
	tee bool
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tee {
		os.Stderr.Write(p)
	}
	return s.buf.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Launch is one plugin process (or one reattachment to it) and its go-plugin client.
type Launch struct {
	Client *plugin.Client
	Stubs  *Stubs
	Log    *syncBuf
	// the plugin's raw stderr lines, as go-plugin read them (ClientConfig.Stderr: a tap that
	// Nomad leaves at io.Discard; it changes nothing in how go-plugin parses the lines)
	Stderr *syncBuf
}

// allLogs keeps every launch's log, to show the plugin's warnings and errors when a scenario
// failed.
var allLogs []*syncBuf

func newLogger(name string, verbose bool) (hclog.Logger, *syncBuf) {
	buf := &syncBuf{tee: verbose}
	allLogs = append(allLogs, buf)
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: buf, Level: hclog.Trace}), buf
}

// dumpProblems writes every WARN/ERROR line of every launch's log to stderr.
func dumpProblems() {
	for _, b := range allLogs {
		for _, line := range strings.Split(b.String(), "\n") {
			if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") {
				fmt.Fprintln(os.Stderr, line)
			}
		}
	}
}

func dispense(c *plugin.Client, log, stderr *syncBuf, what string) (*Launch, error) {
	rpc, err := c.Client()
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("go-plugin client: %w\n%s", err, log.String())
	}
	raw, err := rpc.Dispense(what)
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("dispense: %w", err)
	}
	return &Launch{Client: c, Stubs: raw.(*Stubs), Log: log, Stderr: stderr}, nil
}

// LaunchPlugin execs the binary as the agent does (no arguments unless the operator set
// plugin.args; the agent's environment; go-plugin adds the cookie and protocol variables).
// The loader dispenses "base" (loader/init.go fingerprintPlugin), the driver manager "driver".
func LaunchPlugin(binary, name string, verbose bool, what string) (*Launch, error) {
	logger, buf := newLogger(name, verbose)
	stderr := &syncBuf{}
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          pluginSet,
		Cmd:              exec.Command(binary),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           stderr,
	})
	return dispense(c, buf, stderr, what)
}

// ReattachPlugin connects to a running plugin without a handshake, as the driver manager
// does after an agent crash.
func ReattachPlugin(rc *plugin.ReattachConfig, name string, verbose bool) (*Launch, error) {
	logger, buf := newLogger(name, verbose)
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          pluginSet,
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	})
	return dispense(c, buf, &syncBuf{}, "driver")
}

// Kill ends the launch with go-plugin's Client.Kill and reports an error unless the plugin
// exited by itself after GRPCController/Shutdown, i.e. go-plugin did not have to SIGKILL it
// after its 2 s grace period (it logs "plugin failed to exit gracefully" when it does), or the
// process exited with an error, or any stderr line fails CheckLog.
func (l *Launch) Kill() error {
	start := time.Now()
	l.Client.Kill()
	took := time.Since(start)
	log := l.Log.String()
	switch {
	case strings.Contains(log, "plugin failed to exit gracefully"):
		return fmt.Errorf("plugin failed to exit gracefully (SIGKILLed after %v)", took.Round(time.Millisecond))
	case strings.Contains(log, "signal: killed"):
		return fmt.Errorf("plugin was killed (%v)", took.Round(time.Millisecond))
	case took >= 2*time.Second:
		return fmt.Errorf("Kill took %v", took.Round(time.Millisecond))
	case !l.Client.Exited():
		return errors.New("go-plugin does not see the plugin exited")
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "plugin process exited") && strings.Contains(line, "error=") {
			return fmt.Errorf("the plugin did not exit cleanly: %s", strings.TrimSpace(line))
		}
	}
	return l.CheckLog()
}

// CheckLog checks every stderr line the plugin wrote against what go-plugin's reader
// (client.go logStderr, log_entry.go parseJSON) takes as an hclog JSON entry: a JSON object
// whose @message and @level are strings (a non-string one panics the agent), a level hclog
// knows (otherwise the raw line is logged at DEBUG), and @timestamp, if present, a string in
// 2006-01-02T15:04:05.000000Z07:00 form (otherwise the line counts as not JSON).
func (l *Launch) CheckLog() error {
	n := 0
	for _, line := range strings.Split(l.Stderr.String(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		n++
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return fmt.Errorf("stderr line is not JSON: %q", line)
		}
		if _, ok := raw["@message"].(string); !ok {
			return fmt.Errorf("@message is not a string: %q", line)
		}
		lvl, ok := raw["@level"].(string)
		if !ok || hclog.LevelFromString(lvl) == hclog.NoLevel {
			return fmt.Errorf("@level %v is not an hclog level: %q", raw["@level"], line)
		}
		if ts, present := raw["@timestamp"]; present {
			s, ok := ts.(string)
			if !ok {
				return fmt.Errorf("@timestamp is not a string: %q", line)
			}
			if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", s); err != nil {
				return fmt.Errorf("@timestamp %q: %v", s, err)
			}
		}
	}
	for _, line := range strings.Split(l.Log.String(), "\n") {
		if strings.Contains(line, "panic: ") || strings.Contains(line, "fatal error: ") {
			return fmt.Errorf("plugin log: %s", line)
		}
	}
	return nil
}
