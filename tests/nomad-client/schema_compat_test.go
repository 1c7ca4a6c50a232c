package main

// The first release's task config schema (tests/fixtures/task-config-v1/schema.json), built the
// way the plugin then sent it, decodes a few job configs as Nomad's client does (hcldec, then
// cty msgpack with the value's own type); the bytes must equal the committed fixtures, which
// tests/schema_compat.rs decodes with the current driver. NDS_WRITE_FIXTURES=1 rewrites them.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"nomad-driver-systemd/tests/nomad-client/pb/hclspec"
)

const fixtureDir = "../fixtures/task-config-v1"

type recordedSchema struct {
	Attributes []struct {
		Key  string `json:"key"`
		Kind string `json:"kind"`
		Type string `json:"type"`
	} `json:"attributes"`
}

// firstSchema: unnamed specs directly under the Object (the name is implied by the key), as
// the first release sent them.
func firstSchema(t *testing.T) *hclspec.Spec {
	raw, err := os.ReadFile(filepath.Join(fixtureDir, "schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec recordedSchema
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	attrs := map[string]*hclspec.Spec{}
	for _, a := range rec.Attributes {
		switch a.Kind {
		case "attr":
			attrs[a.Key] = attrSpec("", a.Type)
		case "block_attrs":
			attrs[a.Key] = &hclspec.Spec{Block: &hclspec.Spec_BlockAttrs{BlockAttrs: &hclspec.BlockAttrs{Type: a.Type}}}
		default:
			t.Fatalf("%s: unknown kind %q", a.Key, a.Kind)
		}
	}
	return object(attrs)
}

// The job configs of the fixtures, as the client's map (a `properties {}` block is a list of
// one map).
var fixtureConfigs = map[string]map[string]any{
	"command": {"command": "/bin/sleep", "args": []any{"300"}},
	"full": {
		"command":    "/usr/bin/python3",
		"args":       []any{"-c", "print(1)", "$HOME", "%n", "", "a b"},
		"work_dir":   "/local",
		"properties": []any{map[string]any{"MemoryMax": "1G", "Nice": "5"}},
	},
	"unit": {
		"unit":       "web@x.service",
		"properties": []any{map[string]any{"CPUQuota": "50%"}},
	},
}

func TestFirstReleaseTaskConfigFixtures(t *testing.T) {
	spec, diags := ConvertSpec(firstSchema(t))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	write := os.Getenv("NDS_WRITE_FIXTURES") == "1"
	for name, cfg := range fixtureConfigs {
		val, err := decodeConfigMap(cfg, spec, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := msgpackOf(val)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		path := filepath.Join(fixtureDir, name+".msgpack")
		if write {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s (NDS_WRITE_FIXTURES=1 writes it): %v", path, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: go-cty now encodes %x, the fixture holds %x", name, got, want)
		}
	}
}
