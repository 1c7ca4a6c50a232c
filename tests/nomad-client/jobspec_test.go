package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

const shapesJob = `
job "j" {
  group "g" {
    task "t" {
      driver = "systemd"
      config {
        unit       = "web@${NOMAD_ALLOC_ID}.service"
        command    = "$$${literal}"
        properties = { A = "1" }
        mount { source = "a" }
        mount { source = "b" }
      }
    }
  }
}
`

// The map the job parser hands the client (docs/nomad-contract.md, "Schemas and config
// encoding"): an object attribute is wrapped in a one-element list, repeated blocks are a list
// of maps, ${NOMAD_*} is kept for the client.
func TestJobspecShapes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.nomad.hcl")
	if err := os.WriteFile(path, []byte(shapesJob), 0o644); err != nil {
		t.Fatal(err)
	}
	tasks, err := ParseHCLJob(path)
	if err != nil || len(tasks) != 1 {
		t.Fatalf("%v %v", tasks, err)
	}
	cfg := tasks[0].Config
	if cfg["unit"] != "web@${NOMAD_ALLOC_ID}.service" {
		t.Errorf("unit %#v", cfg["unit"])
	}
	if !reflect.DeepEqual(cfg["properties"], []map[string]any{{"A": "1"}}) {
		t.Errorf("properties %#v", cfg["properties"])
	}
	if !reflect.DeepEqual(cfg["mount"], []map[string]any{{"source": "a"}, {"source": "b"}}) {
		t.Errorf("mount %#v", cfg["mount"])
	}

	// the client's decode: templates see the task's variables
	spec := hcldec.ObjectSpec{
		"unit":       &hcldec.AttrSpec{Name: "unit", Type: cty.String},
		"command":    &hcldec.AttrSpec{Name: "command", Type: cty.String},
		"properties": &hcldec.BlockAttrsSpec{TypeName: "properties", ElementType: cty.String},
		"mount":      &hcldec.BlockListSpec{TypeName: "mount", Nested: hcldec.ObjectSpec{"source": &hcldec.AttrSpec{Name: "source", Type: cty.String}}},
	}
	vars := taskVars(map[string]string{"NOMAD_ALLOC_ID": "abc"}, nil)
	val, err := decodeConfigMap(cfg, spec, vars)
	if err != nil {
		t.Fatal(err)
	}
	if got := val.GetAttr("unit").AsString(); got != "web@abc.service" {
		t.Errorf("unit %q", got)
	}
	// so a literal "${" reaches the driver only when written "$$${" in an HCL2 job
	if got := val.GetAttr("command").AsString(); got != "${literal}" {
		t.Errorf("command %q", got)
	}
	if got := val.GetAttr("properties").Index(cty.StringVal("A")).AsString(); got != "1" {
		t.Errorf("properties.A %q", got)
	}

	// what the spec's table warns about: map(string) as an Attr takes API JSON jobs only
	spec["properties"] = &hcldec.AttrSpec{Name: "properties", Type: cty.Map(cty.String)}
	if _, err := decodeConfigMap(cfg, spec, vars); err == nil {
		t.Error("an HCL job's properties decoded through Attr map(string)")
	}
	if _, err := decodeConfigMap(map[string]any{"properties": map[string]any{"A": "1"}}, hcldec.ObjectSpec{"properties": spec["properties"]}, vars); err != nil {
		t.Errorf("API JSON properties through Attr map(string): %v", err)
	}

	// Strings are templates twice: jobspec2 evaluates "$${x}" to "${x}", which the client's
	// decode then interpolates, so an unknown name fails there (docs/nomad-contract.md: every JSON string is
	// a template).
	if _, err := decodeConfigMap(map[string]any{"unit": "${literal}"}, hcldec.ObjectSpec{"unit": spec["unit"]}, vars); err == nil {
		t.Error("${literal} reached the driver uninterpolated")
	}

	// an unknown key is refused by the decode, naming it
	if _, err := decodeConfigMap(map[string]any{"image": "x"}, hcldec.ObjectSpec{"unit": spec["unit"]}, vars); err == nil {
		t.Error("unknown key accepted")
	}
}
