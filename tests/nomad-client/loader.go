// The plugin loader's launches and the agent config (nomad helper/pluginutils/loader/init.go),
// and the driver manager's long-lived launch (client/pluginmanager/drivermanager/instance.go).

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-version"
	hcl1 "github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/v2/hcldec"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"nomad-driver-systemd/tests/nomad-client/pb/base"
	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
	"nomad-driver-systemd/tests/nomad-client/pb/hclspec"
)

// what the loader learned (helper/pluginutils/loader/init.go, fingerprintPlugin and
// validatePluginConfig) and what the driver manager uses
type agentState struct {
	apiVersion   string
	configSpec   hcldec.Spec
	pluginConfig []byte // cty msgpack of examples/agent.hcl's plugin config
	// what an agent without a config block sends: the schema's defaults ({} decoded)
	defaultConfig []byte
	taskSpec      hcldec.Spec
}

var agent agentState

// negotiateAPIVersion mirrors the loader's choice (helper/pluginutils/loader/api_versions.go
// and init.go): every version the plugin lists must parse; the highest one the agent also
// speaks wins, in the plugin's own spelling.
func negotiateAPIVersion(pluginVersions []string) (string, error) {
	var best *version.Version
	bestRaw := ""
	for _, raw := range pluginVersions {
		v, err := version.NewVersion(raw)
		if err != nil {
			return "", fmt.Errorf("plugin API version %q does not parse: %v", raw, err)
		}
		for _, a := range agentAPIVersions {
			av, _ := version.NewVersion(a)
			if v.Equal(av) && (best == nil || v.GreaterThan(best)) {
				best, bestRaw = v, raw
			}
		}
	}
	if best == nil {
		return "", fmt.Errorf("no common API version: plugin %v, agent %v", pluginVersions, agentAPIVersions)
	}
	return bestRaw, nil
}

func fixtureScenario() (string, error) {
	attr := func(name string) *hclspec.Spec {
		return &hclspec.Spec{Block: &hclspec.Spec_Attr{Attr: &hclspec.Attr{Name: name, Type: "bool"}}}
	}
	mk := func(name string) *hclspec.Spec {
		return &hclspec.Spec{Block: &hclspec.Spec_Object{Object: &hclspec.Object{Attributes: map[string]*hclspec.Spec{
			"enabled": {Block: &hclspec.Spec_Default{Default: &hclspec.Default{
				Primary: attr(name),
				Default: &hclspec.Spec{Block: &hclspec.Spec_Literal{Literal: &hclspec.Literal{Value: "true"}}},
			}}},
		}}}}
	}
	if _, d := ConvertSpec(mk("")); !strings.Contains(d.Error(), "Missing name in attribute spec") {
		return "", fmt.Errorf("unnamed Attr under Default was not refused: %v", d)
	}
	if _, d := ConvertSpec(mk("enabled")); d.HasErrors() {
		return "", fmt.Errorf("named Attr under Default refused: %v", d)
	}
	return "", nil
}

func launchFingerprint() (string, error) {
	l, err := LaunchPlugin(*flagBinary, "loader", *flagVerbose, "base")
	if err != nil {
		return "", err
	}
	var errs []string
	ctx, cancel := ctxT(10 * time.Second)
	defer cancel()
	info, err := l.Stubs.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	note := ""
	if err != nil {
		errs = append(errs, "PluginInfo: "+err.Error())
	} else {
		if info.Type != base.PluginType_DRIVER {
			errs = append(errs, fmt.Sprintf("plugin type %v, want DRIVER", info.Type))
		}
		if info.Name != "systemd" {
			errs = append(errs, fmt.Sprintf("name %q, want systemd", info.Name))
		}
		if _, err := version.NewVersion(info.PluginVersion); err != nil {
			errs = append(errs, fmt.Sprintf("plugin_version %q: %v", info.PluginVersion, err))
		}
		if v, err := negotiateAPIVersion(info.PluginApiVersions); err != nil {
			errs = append(errs, err.Error())
		} else {
			agent.apiVersion = v
		}
		note = fmt.Sprintf("%s %s, API %s", info.Name, info.PluginVersion, agent.apiVersion)
	}
	schema, err := l.Stubs.Base.ConfigSchema(ctx, &base.ConfigSchemaRequest{})
	if err != nil {
		errs = append(errs, "ConfigSchema: "+err.Error())
	} else if schema.Spec == nil {
		errs = append(errs, "ConfigSchema returned no spec, but the plugin takes a config")
	} else if spec, d := ConvertSpec(schema.Spec); d.HasErrors() {
		// the agent's words: "failed converting config schema: ..." and it refuses to start
		errs = append(errs, fmt.Sprintf("failed converting config schema: %v [unnamed at %v]", formatDiags(d), UnnamedPaths(schema.Spec)))
	} else {
		agent.configSpec = spec
	}
	if err := l.Kill(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return "", errors.New(strings.Join(errs, "; "))
	}
	return note, nil
}

// agentFile is the part of an agent config file the loader needs, decoded with HCL1 as the
// agent does (nomad command/agent/config_parse.go ParseConfigFile: hcl.Decode into Config, whose
// Plugins []*PluginConfig carry Name `hcl:",key"`, Args and Config map[string]any;
// nomad/structs/config/plugins.go).
type agentFile struct {
	Plugins []*agentPlugin `hcl:"plugin"`
}

type agentPlugin struct {
	Name   string         `hcl:",key"`
	Args   []string       `hcl:"args"`
	Config map[string]any `hcl:"config"`
}

// pluginBlockConfig reads `plugin "nomad-driver-systemd" { config { ... } }` from an agent
// config file; a block without config {} gives the empty map the loader decodes for defaults.
func pluginBlockConfig(path string) (map[string]any, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f agentFile
	if err := hcl1.Decode(&f, string(src)); err != nil {
		return nil, err
	}
	for _, p := range f.Plugins {
		if p.Name == "nomad-driver-systemd" {
			if p.Config == nil {
				return map[string]any{}, nil
			}
			return p.Config, nil
		}
	}
	return nil, errors.New(`no plugin "nomad-driver-systemd" block`)
}

func pluginConfigScenario() (string, error) {
	if agent.configSpec == nil {
		return "", errors.New("no converted ConfigSchema (launch 1 failed)")
	}
	m, err := pluginBlockConfig(repoPath("examples/agent.hcl"))
	if err != nil {
		return "", err
	}
	val, err := decodeConfigMap(m, agent.configSpec, nil)
	if err != nil {
		return "", fmt.Errorf("failed to parse config: %v", err)
	}
	// defaults are applied even without a config block ({} is decoded)
	empty, err := decodeConfigMap(map[string]any{}, agent.configSpec, nil)
	if err != nil {
		return "", fmt.Errorf("empty config: %v", err)
	}
	for _, k := range []string{"enabled", "slice"} {
		if !empty.Type().HasAttribute(k) || empty.GetAttr(k).IsNull() {
			return "", fmt.Errorf("default for %q not applied: %s", k, empty.GoString())
		}
	}
	if agent.defaultConfig, err = msgpackOf(empty); err != nil {
		return "", err
	}
	// examples/config.toml: its non-comment lines are `key = value` with values HCL1 reads the
	// same way, so they decode through the same schema and must give the same value.
	src, err := os.ReadFile(repoPath("examples/config.toml"))
	if err != nil {
		return "", err
	}
	var tm map[string]any
	if err := hcl1.Decode(&tm, string(src)); err != nil {
		return "", fmt.Errorf("config.toml is not in the simple key = value form: %v", err)
	}
	tval, err := decodeConfigMap(tm, agent.configSpec, nil)
	if err != nil {
		return "", fmt.Errorf("config.toml: %v", err)
	}
	if !tval.RawEquals(val) {
		return "", fmt.Errorf("examples/config.toml %s differs from examples/agent.hcl %s", tval.GoString(), val.GoString())
	}
	b, err := msgpackOf(val)
	if err != nil {
		return "", err
	}
	agent.pluginConfig = b
	return fmt.Sprintf("%d bytes of cty msgpack", len(b)), nil
}

func setConfig(l *Launch, withNomad bool) error {
	ctx, cancel := ctxT(10 * time.Second)
	defer cancel()
	req := &base.SetConfigRequest{MsgpackConfig: agent.pluginConfig, PluginApiVersion: agent.apiVersion}
	if withNomad {
		req.NomadConfig = nomadConfig()
	}
	_, err := l.Stubs.Base.SetConfig(ctx, req)
	return err
}

// nomadConfig is the agent part of SetConfig: client port range defaults and a two-core
// topology (client/config, numalib).
func nomadConfig() *base.NomadConfig {
	return &base.NomadConfig{Driver: &base.NomadDriverConfig{
		ClientMinPort: 14000,
		ClientMaxPort: 14512,
		Topology: &base.ClientTopology{
			NodeIds:   []uint32{0},
			Distances: &base.ClientTopologySLIT{Dimension: 1, Values: []uint32{10}},
			Cores: []*base.ClientTopologyCore{
				{SocketId: 0, NodeId: 0, CoreId: 0, BaseSpeed: 2000, MaxSpeed: 3000},
				{SocketId: 0, NodeId: 0, CoreId: 1, BaseSpeed: 2000, MaxSpeed: 3000},
			},
		},
	}}
}

func launchValidate() (string, error) {
	if agent.pluginConfig == nil {
		return "", errors.New("no plugin config (earlier scenario failed)")
	}
	l, err := LaunchPlugin(*flagBinary, "loader", *flagVerbose, "base")
	if err != nil {
		return "", err
	}
	var errs []string
	for i := 0; i < 2; i++ {
		if err := setConfig(l, false); err != nil {
			errs = append(errs, fmt.Sprintf("SetConfig #%d: setting config on plugin failed: %v", i+1, err))
		}
	}
	// and what an agent whose plugin block has no config {} would send
	ctx, cancel := ctxT(10 * time.Second)
	defer cancel()
	if _, err := l.Stubs.Base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: agent.defaultConfig, PluginApiVersion: agent.apiVersion}); err != nil {
		errs = append(errs, fmt.Sprintf("SetConfig with the schema defaults only: %v", err))
	}
	if err := l.Kill(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return "", errors.New(strings.Join(errs, "; "))
	}
	return "", nil
}

// eventLog keeps what the TaskEvents stream delivered.
type eventLog struct {
	cancel context.CancelFunc
	events chan *drivers.DriverTaskEvent
}

func launchLongLived() (*Launch, *eventLog, string, error) {
	if agent.pluginConfig == nil {
		return nil, nil, "", errors.New("no plugin config (earlier scenario failed)")
	}
	l, err := LaunchPlugin(*flagBinary, "driver_mgr", *flagVerbose, "driver")
	if err != nil {
		return nil, nil, "", err
	}
	fail := func(err error) (*Launch, *eventLog, string, error) {
		l.Kill()
		return nil, nil, "", err
	}
	if err := setConfig(l, true); err != nil {
		return fail(fmt.Errorf("SetConfig: %v", err))
	}
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	if _, err := l.Stubs.Driver.Init(ctx, &drivers.InitRequest{}); err != nil && status.Code(err) != codes.Unimplemented {
		return fail(fmt.Errorf("Init: %v", err))
	}
	fctx, fcancel := context.WithCancel(context.Background())
	fp, err := l.Stubs.Driver.Fingerprint(fctx, &drivers.FingerprintRequest{})
	if err != nil {
		fcancel()
		return fail(fmt.Errorf("Fingerprint: %v", err))
	}
	first := make(chan *drivers.FingerprintResponse, 1)
	ferr := make(chan error, 1)
	go func() {
		m, err := fp.Recv()
		if err != nil {
			ferr <- err
			return
		}
		first <- m
	}()
	var fpMsg *drivers.FingerprintResponse
	select {
	case fpMsg = <-first:
	case err := <-ferr:
		fcancel()
		return fail(fmt.Errorf("Fingerprint stream: %v", err))
	case <-time.After(20 * time.Second):
		fcancel()
		return fail(errors.New("no fingerprint within 20 s"))
	}
	// The stream stays open for the plugin's life (the instance manager keeps reading it).
	go func() {
		defer fcancel()
		for {
			if _, err := fp.Recv(); err != nil {
				return
			}
		}
	}()
	if fpMsg.Health != drivers.FingerprintResponse_HEALTHY {
		return fail(fmt.Errorf("fingerprint health %v: %s", fpMsg.Health, fpMsg.HealthDescription))
	}
	// The node's attributes as the client derives them (client/node_updater.go,
	// applyNodeUpdatesFromDriver): the driver's own, plus driver.<name> = "1" set by the client
	// itself when the driver is detected. README promises the driver.systemd.* ones below.
	node := map[string]string{}
	for k, v := range fpMsg.Attributes {
		node[k] = strings.TrimSpace(v.String())
	}
	if fpMsg.Health != drivers.FingerprintResponse_UNDETECTED {
		node["driver.systemd"] = "1"
	}
	for _, want := range []string{"driver.systemd.version", "driver.systemd.cgroup", "driver.systemd.cgroup.controllers", "driver.systemd.slice"} {
		if _, ok := node[want]; !ok {
			return fail(fmt.Errorf("fingerprint lacks %s: %v", want, fpMsg.Attributes))
		}
	}
	var attrs []string
	for k := range node {
		attrs = append(attrs, k)
	}
	sort.Strings(attrs)

	ectx, ecancel := context.WithCancel(context.Background())
	ev, err := l.Stubs.Driver.TaskEvents(ectx, &drivers.TaskEventsRequest{})
	if err != nil {
		ecancel()
		return fail(fmt.Errorf("TaskEvents: %v", err))
	}
	events := &eventLog{cancel: ecancel, events: make(chan *drivers.DriverTaskEvent, 1024)}
	go func() {
		for {
			e, err := ev.Recv()
			if err != nil {
				return
			}
			select {
			case events.events <- e:
			default:
			}
		}
	}()

	ts, err := l.Stubs.Driver.TaskConfigSchema(ctx, &drivers.TaskConfigSchemaRequest{})
	if err != nil {
		return fail(fmt.Errorf("TaskConfigSchema: %v", err))
	}
	spec, d := ConvertSpec(ts.Spec)
	if d.HasErrors() {
		// the task runner's words: "failed to convert task schema"
		return fail(fmt.Errorf("failed to convert task schema: %v [unnamed at %v]", formatDiags(d), UnnamedPaths(ts.Spec)))
	}
	agent.taskSpec = spec
	caps, err := l.Stubs.Driver.Capabilities(ctx, &drivers.CapabilitiesRequest{})
	if err != nil || caps.Capabilities == nil {
		return fail(fmt.Errorf("Capabilities: %v", err))
	}
	if caps.Capabilities.FsIsolation != drivers.DriverCapabilities_IMAGE || !caps.Capabilities.SendSignals {
		return fail(fmt.Errorf("capabilities %v", caps.Capabilities))
	}
	return l, events, "attributes " + strings.Join(attrs, ","), nil
}

func badPluginConfigs() (string, error) {
	if agent.configSpec == nil {
		return "", errors.New("no converted ConfigSchema (launch 1 failed)")
	}
	// a typo never reaches the plugin: the agent's own decode refuses it
	_, derr := decodeConfigMap(map[string]any{"enabeld": true}, agent.configSpec, nil)
	if derr == nil || !strings.Contains(derr.Error(), `"enabeld"`) {
		return "", fmt.Errorf("unknown key: %v", derr)
	}
	// a well-typed but invalid value is the plugin's to refuse, at SetConfig (agent start fails)
	val, err := decodeConfigMap(map[string]any{"slice": "nomad.slice"}, agent.configSpec, nil)
	if err != nil {
		return "", fmt.Errorf("slice decode: %v", err)
	}
	b, err := msgpackOf(val)
	if err != nil {
		return "", err
	}
	l, err := LaunchPlugin(*flagBinary, "loader", *flagVerbose, "base")
	if err != nil {
		return "", err
	}
	ctx, cancel := ctxT(10 * time.Second)
	defer cancel()
	_, serr := l.Stubs.Base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: b, PluginApiVersion: agent.apiVersion})
	kerr := l.Kill()
	if serr == nil || !strings.Contains(status.Convert(serr).Message(), "slice") {
		return "", fmt.Errorf("SetConfig with slice = \"nomad.slice\": %v", serr)
	}
	if kerr != nil {
		return "", kerr
	}
	return "decode: " + derr.Error() + "; SetConfig: " + status.Convert(serr).Message(), nil
}

// launchDriver is a bare launch #3: SetConfig with nomad_config and Init.
func launchDriver(name string) (*Launch, error) {
	l, err := LaunchPlugin(*flagBinary, name, *flagVerbose, "driver")
	if err != nil {
		return nil, err
	}
	if err := setConfig(l, true); err != nil {
		l.Kill()
		return nil, fmt.Errorf("SetConfig: %v", err)
	}
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	if _, err := l.Stubs.Driver.Init(ctx, &drivers.InitRequest{}); err != nil && status.Code(err) != codes.Unimplemented {
		l.Kill()
		return nil, fmt.Errorf("Init: %v", err)
	}
	return l, nil
}
