package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// HCL1, as the agent parses its config files: a list stays a list, the plugin label is the key.
func TestAgentPluginBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.hcl")
	src := `client { enabled = true }
plugin "other" { config { x = 1 } }
plugin "nomad-driver-systemd" {
  config {
    allowed_units = ["web@*.service"]
    allow_root    = false
  }
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := pluginBlockConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"allowed_units": []any{"web@*.service"}, "allow_root": false}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %#v", m)
	}
}
