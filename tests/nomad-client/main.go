// Command nomad-client is the Nomad-side conformance client of nomad-driver-systemd:
// it loads and drives the plugin binary the way a Nomad agent does, through the libraries the
// agent links (go-plugin, hcl/v2, go-cty, go-version, grpc, protobuf), with gRPC stubs
// generated from the project's own proto/ files. Test-only; never shipped.
//
// It prints one line per scenario (PASS name / FAIL name: why) and finally "N passed, M failed",
// and exits 1 if anything failed. Run it as root inside the private systemd's namespaces
// (tests/nomad_conformance.rs does), or on a host whose PID 1 is systemd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-version"
	hcl1 "github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/v2/hcldec"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"nomad-driver-systemd/tests/nomad-client/pb/base"
	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
	"nomad-driver-systemd/tests/nomad-client/pb/hclspec"
)

var (
	flagBinary  = flag.String("binary", "", "the plugin binary (release build)")
	flagRepo    = flag.String("repo", "../..", "the repository root (examples/, proto/)")
	flagRoot    = flag.String("alloc-root", "/var/lib/nds-tests/conformance", "where alloc dirs are built (outside /tmp)")
	flagUnits   = flag.Bool("install-units", false, "install examples/units/*.service into /run/systemd/system for the run (private systemd)")
	flagVerbose = flag.Bool("v", false, "copy go-plugin's log (and the plugin's stderr) to stderr")
)

// the API versions this agent speaks (nomad plugins/drivers/versions.go: ApiVersion010)
var agentAPIVersions = []string{"v0.1.0"}

var passed, failed int

func scenario(name string, fn func() (string, error)) {
	var note string
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		note, err = fn()
	}()
	if err != nil {
		failed++
		fmt.Printf("FAIL %s: %s\n", name, oneLine(err.Error()))
		return
	}
	passed++
	if note != "" {
		fmt.Printf("PASS %s (%s)\n", name, oneLine(note))
	} else {
		fmt.Printf("PASS %s\n", name)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ⏎ ")), " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

func ctxT(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

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

func systemctl(args ...string) string {
	out, _ := exec.Command("systemctl", args...).CombinedOutput()
	return string(out)
}

// liveUnits: the driver's units and template instances systemd still knows.
func liveUnits() []string {
	var out []string
	for _, l := range strings.Split(systemctl("list-units", "--all", "--plain", "--no-legend", "nomad-*", "web@*"), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	sort.Strings(out)
	return out
}

func dropIns() []string {
	m, _ := filepath.Glob("/run/systemd/system/*.d/50-nomad-driver-systemd.conf")
	return m
}

func repoPath(p string) string { return filepath.Join(*flagRepo, p) }

func main() {
	flag.Parse()
	if *flagBinary == "" {
		fmt.Fprintln(os.Stderr, "usage: nomad-client -binary target/release/nomad-driver-systemd [-repo DIR] [-install-units] [-v]")
		os.Exit(2)
	}
	if err := os.MkdirAll(*flagRoot, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *flagUnits {
		cleanup, err := installUnits()
		if err != nil {
			fmt.Fprintln(os.Stderr, "installing unit templates:", err)
			os.Exit(2)
		}
		defer cleanup()
	}
	unitsBefore := liveUnits()

	scenario("hclspec fixture: an unnamed Attr under Default is refused, a named one converts", fixtureScenario)
	scenario("loader launch 1 (fingerprint): PluginInfo, version, API version, ConfigSchema converts, Kill is graceful", launchFingerprint)
	scenario("plugin config: examples/agent.hcl (and the same settings in examples/config.toml) decodes through ConfigSchema", pluginConfigScenario)
	scenario("loader launch 2 (validation): SetConfig twice without nomad_config (and once with only the defaults), Kill is graceful", launchValidate)

	scenario("plugin config refused naming the key: unknown key by Nomad's decode, bad slice by SetConfig", badPluginConfigs)

	var long *Launch
	var events *eventLog
	scenario("driver manager launch 3: SetConfig with nomad_config, Init, Fingerprint HEALTHY, TaskEvents, TaskConfigSchema converts, Capabilities", func() (string, error) {
		var err error
		var note string
		long, events, note, err = launchLongLived()
		return note, err
	})

	jobs, _ := filepath.Glob(repoPath("examples/jobs/*"))
	sort.Strings(jobs)
	for _, file := range jobs {
		rel, _ := filepath.Rel(*flagRepo, file)
		tasks, perr := ParseJob(file)
		if perr != nil {
			scenario(rel, func() (string, error) { return "", fmt.Errorf("job does not parse: %v", perr) })
			continue
		}
		for _, t := range tasks {
			if t.Driver != "systemd" {
				continue
			}
			scenario(fmt.Sprintf("%s task %q: decode, StartTask, logs, TaskStats, SignalTask, StopTask, WaitTask, DestroyTask", rel, t.Name), func() (string, error) {
				if long == nil {
					return "", errors.New("no long-lived plugin (launch 3 failed)")
				}
				return runTask(long, t, rel)
			})
		}
	}

	invalid, _ := filepath.Glob(repoPath("examples/invalid/*"))
	sort.Strings(invalid)
	for _, file := range invalid {
		rel, _ := filepath.Rel(*flagRepo, file)
		scenario(rel+": refused, naming the key, nothing left behind", func() (string, error) {
			if long == nil {
				return "", errors.New("no long-lived plugin (launch 3 failed)")
			}
			return refuseInvalid(long, file)
		})
	}

	scenario("agent restart: Driver/Shutdown, Kill, the task keeps running; a new plugin (SetConfig, Init) recovers it, stops and destroys it", agentRestartScenario)

	scenario("agent crash: reattach to the running plugin (no handshake), PluginInfo, Init, RecoverTask, stop the task, Kill is graceful", func() (string, error) {
		if long == nil {
			return "", errors.New("no long-lived plugin (launch 3 failed)")
		}
		l := long
		long = nil
		return reattachScenario(l, events)
	})
	if long != nil {
		long.Kill()
	}

	scenario("nothing left behind: no task units, no drop-ins", func() (string, error) {
		time.Sleep(300 * time.Millisecond)
		after := liveUnits()
		if strings.Join(after, " ") != strings.Join(unitsBefore, " ") {
			return "", fmt.Errorf("units before %v, after %v", unitsBefore, after)
		}
		if d := dropIns(); len(d) > 0 {
			return "", fmt.Errorf("drop-ins left: %v", d)
		}
		return "", nil
	})

	if failed > 0 {
		dumpProblems()
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

// installUnits copies the example unit templates into /run/systemd/system (runtime units: in
// the private systemd that /run is its own tmpfs), the way tests/unit_mode.rs installs its
// templates, and reloads once.
func installUnits() (func(), error) {
	units, _ := filepath.Glob(repoPath("examples/units/*.service"))
	var installed []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join("/run/systemd/system", filepath.Base(u))
		if _, err := os.Stat(dst); err == nil {
			return nil, fmt.Errorf("%s exists already; not overwriting", dst)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return nil, err
		}
		installed = append(installed, dst)
	}
	if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("daemon-reload: %v %s", err, out)
	}
	return func() {
		for _, p := range installed {
			_ = os.Remove(p)
		}
		_ = exec.Command("systemctl", "daemon-reload").Run()
	}, nil
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
	l, err := LaunchPlugin(*flagBinary, "loader", *flagVerbose)
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
	if err := l.CheckLog(); err != nil {
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
	l, err := LaunchPlugin(*flagBinary, "loader", *flagVerbose)
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
	l, err := LaunchPlugin(*flagBinary, "driver_mgr", *flagVerbose)
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
	l, err := LaunchPlugin(*flagBinary, "loader", *flagVerbose)
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
	l, err := LaunchPlugin(*flagBinary, name, *flagVerbose)
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

func unitActive(allocID string) bool {
	for _, u := range unitsOf(allocID) {
		if strings.TrimSpace(systemctl("is-active", u)) == "active" {
			return true
		}
	}
	return false
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
