// Command nomad-client is the Nomad-side conformance client of nomad-driver-systemd:
// it loads and drives the plugin binary the way a Nomad agent does, through the libraries the
// agent links (go-plugin, hcl/v2, HCL1, go-cty, go-version, grpc, protobuf), with gRPC stubs
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
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"nomad-driver-systemd/tests/nomad-client/pb/drivers"
)

var (
	flagBinary  = flag.String("binary", "", "the plugin binary (release build)")
	flagRepo    = flag.String("repo", "../..", "the repository root (examples/, proto/)")
	flagRoot    = flag.String("alloc-root", "/var/lib/nds-tests/conformance", "where alloc dirs are built (outside /tmp)")
	flagUnits   = flag.Bool("install-units", false, "install examples/units/*.service into /run/systemd/system for the run (private systemd)")
	flagVerbose = flag.Bool("v", false, "copy go-plugin's log (and the plugin's stderr) to stderr")
	flagCrash   = flag.String("crash-agent", "", "internal: run as the agent that starts a task and crashes (reattach scenario)")
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
	if *flagCrash != "" {
		crashAgentMain(*flagCrash)
	}
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
	scenario("driver manager launch 3: SetConfig with nomad_config, Init, Fingerprint HEALTHY, TaskEvents, TaskConfigSchema converts, Capabilities", func() (string, error) {
		var err error
		var note string
		long, _, note, err = launchLongLived()
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

	scenario("natural exit: a task exiting 3 is reported with exit code 3, its log complete, DestroyTask cleans up", func() (string, error) {
		if long == nil {
			return "", errors.New("no long-lived plugin (launch 3 failed)")
		}
		return naturalExit(long)
	})

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

	scenario("driver manager launch 3 ends: Driver/Shutdown, Kill is graceful", func() (string, error) {
		if long == nil {
			return "", errors.New("no long-lived plugin (launch 3 failed)")
		}
		ctx, cancel := ctxT(2 * time.Second)
		defer cancel()
		_, serr := long.Stubs.Driver.Shutdown(ctx, &drivers.ShutdownRequest{})
		kerr := long.Kill()
		if serr != nil && status.Code(serr) != codes.Unimplemented {
			return "", fmt.Errorf("Driver/Shutdown: %v", serr)
		}
		return "", kerr
	})

	scenario("agent crash: an agent process starts a task and dies without Kill; a new one reattaches (no handshake), PluginInfo, Init, RecoverTask, stops the task, Kill is graceful", reattachScenario)

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
