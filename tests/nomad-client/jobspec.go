package main

// What Nomad does to a job's `config {}` before the driver sees it, in two steps:
//
//  1. The CLI's jobspec2 parser (nomad jobspec2/parse.go, types.config.go decodeJob and
//     EvalContext, hclutil/blockattrs.go BlocksAsAttrs, parse_map.go interfaceFromCtyValue)
//     turns the HCL2 block into a generic map: an attribute whose value is an object
//     constructor is wrapped in a one-element list, nested blocks become lists of maps (a
//     labelled block a nested map per label), and a reference to a variable jobspec2 does not
//     know (e.g. ${NOMAD_ALLOC_ID}) stays as the text "${...}" for the client to interpolate
//     (Nomad's HCL fork has EvalContext.UnknownVariable for this; upstream hcl/v2 does not, so
//     placeholders are put into the context here). Jobs given as API JSON are taken as they are.
//  2. The client (client/allocrunner/taskrunner/task_runner.go runDriver, with
//     helper/pluginutils/hclutils/util.go ParseHclInterface) encodes the map as JSON, parses it
//     as an HCL JSON body and decodes it with hcldec against the driver's TaskConfigSchema in an
//     eval context holding the task's environment (client/taskenv/env.go AllValues), then
//     cty-msgpack-encodes the value with its own type (plugins/drivers/driver.go
//     EncodeDriverConfig).
//
// This file is written for this project from reading those files; no Nomad code is copied.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
	ctymsgpack "github.com/zclconf/go-cty/cty/msgpack"
)

// JobTask is one task of a job file, as far as a driver is concerned.
type JobTask struct {
	Job, Group, Name string
	Driver, User     string
	Config           map[string]any
	Env              map[string]string
	CPU, MemoryMB    int
	MemoryMaxMB      int
	Ports            []string // dynamic port labels of the group's network block
}

// decodeConfigMap mirrors ParseHclInterface: map → JSON → HCL JSON body → hcldec.
func decodeConfigMap(m map[string]any, spec hcldec.Spec, vars map[string]cty.Value) (cty.Value, error) {
	buf, err := json.Marshal(m)
	if err != nil {
		return cty.NilVal, fmt.Errorf("Failed to encode label value: %v", err)
	}
	file, diags := hcljson.Parse(buf, "")
	if diags.HasErrors() {
		return cty.NilVal, formatDiags(diags)
	}
	val, diags := hcldec.Decode(file.Body, spec, &hcl.EvalContext{Variables: vars, Functions: nomadFuncs()})
	if diags.HasErrors() {
		return cty.NilVal, formatDiags(diags)
	}
	return val, nil
}

// formatDiags renders diagnostics as Nomad's formattedDiagnosticErrors does ("Summary: Detail",
// with hcl's "Extraneous JSON object property" renamed "Invalid label").
func formatDiags(diags hcl.Diagnostics) error {
	var parts []string
	seen := map[string]int{}
	for _, d := range diags {
		s := d.Summary
		if s == "Extraneous JSON object property" {
			s = "Invalid label"
		}
		msg := fmt.Sprintf("%s: %s", s, d.Detail)
		if seen[msg] == 0 {
			parts = append(parts, msg)
		}
		seen[msg]++
	}
	for i, msg := range parts {
		if n := seen[msg]; n > 1 {
			parts[i] = fmt.Sprintf("%s (%d times)", msg, n)
		}
	}
	return errors.New(strings.Join(parts, "; "))
}

// msgpackOf is what goes on the wire: cty msgpack with the value's own type.
func msgpackOf(v cty.Value) ([]byte, error) {
	return ctymsgpack.Marshal(v, v.Type())
}

// ---- step 1: a minimal jobspec2 for the shapes our example jobs use ----

// unknownAsTemplate evaluates expr the way jobspec2 does: references to variables it does not
// define come back as the literal text "${name}" (a dotted reference as "${a.b.c}").
func unknownAsTemplate(expr hcl.Expression) (cty.Value, hcl.Diagnostics) {
	vars := map[string]cty.Value{"var": cty.EmptyObjectVal, "local": cty.EmptyObjectVal}
	trees := map[string]map[string]any{}
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		if root == "var" || root == "local" {
			continue
		}
		names := []string{root}
		for _, step := range tr[1:] {
			a, ok := step.(hcl.TraverseAttr)
			if !ok {
				break
			}
			names = append(names, a.Name)
		}
		if len(names) == 1 {
			vars[root] = cty.StringVal("${" + root + "}")
			continue
		}
		t := trees[root]
		if t == nil {
			t = map[string]any{}
			trees[root] = t
		}
		cur := t
		for i, n := range names[1:] {
			if i == len(names)-2 {
				cur[n] = "${" + strings.Join(names, ".") + "}"
				break
			}
			next, _ := cur[n].(map[string]any)
			if next == nil {
				next = map[string]any{}
				cur[n] = next
			}
			cur = next
		}
	}
	for root, t := range trees {
		vars[root] = treeValue(t)
	}
	return expr.Value(&hcl.EvalContext{Variables: vars, Functions: nomadFuncs()})
}

func treeValue(t map[string]any) cty.Value {
	m := map[string]cty.Value{}
	for k, v := range t {
		switch x := v.(type) {
		case string:
			m[k] = cty.StringVal(x)
		case map[string]any:
			m[k] = treeValue(x)
		}
	}
	return cty.ObjectVal(m)
}

// goValue mirrors parse_map.go interfaceFromCtyValue: numbers as the smallest Go type, a
// collection of maps/objects as []map[string]any, other sequences as []any.
func goValue(v cty.Value) (any, error) {
	if v.IsNull() {
		return nil, nil
	}
	if !v.IsKnown() {
		return nil, errors.New("value is not known")
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return v.AsString(), nil
	case t == cty.Bool:
		return v.True(), nil
	case t == cty.Number:
		if v.RawEquals(cty.PositiveInfinity) {
			return math.Inf(1), nil
		}
		if v.RawEquals(cty.NegativeInfinity) {
			return math.Inf(-1), nil
		}
		bf := v.AsBigFloat()
		if i, acc := bf.Int64(); acc == big.Exact {
			return i, nil
		}
		f, _ := bf.Float64()
		return f, nil
	case mapsOnly(t):
		out := []map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			g, err := goValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, g.(map[string]any))
		}
		return out, nil
	case t.IsListType(), t.IsSetType(), t.IsTupleType():
		out := []any{}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			g, err := goValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, g)
		}
		return out, nil
	case t.IsMapType(), t.IsObjectType():
		out := map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			g, err := goValue(e)
			if err != nil {
				return nil, err
			}
			out[k.AsString()] = g
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot serialize %s", t.FriendlyName())
}

func mapsOnly(t cty.Type) bool {
	switch {
	case t.IsListType(), t.IsSetType():
		et := t.ElementType()
		return et.IsMapType() || et.IsObjectType()
	case t.IsTupleType():
		ets := t.TupleElementTypes()
		for _, et := range ets {
			if !et.IsMapType() && !et.IsObjectType() {
				return false
			}
		}
		return len(ets) > 0
	}
	return false
}

// bodyAsMap is BlocksAsAttrs + the walker for one body (a task's config block).
func bodyAsMap(body *hclsyntax.Body) (map[string]any, hcl.Diagnostics) {
	out := map[string]any{}
	var diags hcl.Diagnostics
	for name, attr := range body.Attributes {
		v, d := unknownAsTemplate(attr.Expr)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		if _, isObj := attr.Expr.(*hclsyntax.ObjectConsExpr); isObj {
			// attrExpr: `x = { ... }` becomes `x = [{ ... }]`
			v = cty.TupleVal([]cty.Value{v})
		}
		g, err := goValue(v)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "unsuitable value type", Detail: err.Error(), Subject: attr.Expr.StartRange().Ptr()})
			continue
		}
		out[name] = g
	}
	byType := map[string][]*hclsyntax.Block{}
	var order []string
	for _, b := range body.Blocks {
		if _, seen := byType[b.Type]; !seen {
			order = append(order, b.Type)
		}
		byType[b.Type] = append(byType[b.Type], b)
	}
	for _, typ := range order {
		list := []map[string]any{}
		for _, b := range byType[typ] {
			inner, d := bodyAsMap(b.Body)
			diags = append(diags, d...)
			// labels become nested single-element maps, innermost first
			for i := len(b.Labels) - 1; i >= 0; i-- {
				inner = map[string]any{b.Labels[i]: []map[string]any{inner}}
			}
			list = append(list, inner)
		}
		out[typ] = list
	}
	return out, diags
}

func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

func attrString(body *hclsyntax.Body, name string) (string, hcl.Diagnostics) {
	a, ok := body.Attributes[name]
	if !ok {
		return "", nil
	}
	v, d := unknownAsTemplate(a.Expr)
	if d.HasErrors() || v.IsNull() || v.Type() != cty.String {
		return "", d
	}
	return v.AsString(), d
}

func attrInt(body *hclsyntax.Body, name string, def int) int {
	a, ok := body.Attributes[name]
	if !ok {
		return def
	}
	v, d := unknownAsTemplate(a.Expr)
	if d.HasErrors() || v.Type() != cty.Number {
		return def
	}
	i, _ := v.AsBigFloat().Int64()
	return int(i)
}

// ParseHCLJob reads an HCL2 job file. A syntax error is returned as HCL's diagnostics, with
// file:line:column, like `nomad job run` would print it.
func ParseHCLJob(path string) ([]JobTask, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	root := file.Body.(*hclsyntax.Body)
	var tasks []JobTask
	for _, job := range blocksOf(root, "job") {
		for _, group := range blocksOf(job.Body, "group") {
			var ports []string
			for _, nw := range blocksOf(group.Body, "network") {
				for _, p := range blocksOf(nw.Body, "port") {
					ports = append(ports, p.Labels...)
				}
			}
			for _, task := range blocksOf(group.Body, "task") {
				t := JobTask{Job: job.Labels[0], Group: group.Labels[0], Name: task.Labels[0], CPU: 100, MemoryMB: 300, Ports: ports, Env: map[string]string{}, Config: map[string]any{}}
				var d hcl.Diagnostics
				t.Driver, d = attrString(task.Body, "driver")
				diags = append(diags, d...)
				t.User, d = attrString(task.Body, "user")
				diags = append(diags, d...)
				for _, env := range blocksOf(task.Body, "env") {
					for k := range env.Body.Attributes {
						v, d := attrString(env.Body, k)
						diags = append(diags, d...)
						t.Env[k] = v
					}
				}
				for _, res := range blocksOf(task.Body, "resources") {
					t.CPU = attrInt(res.Body, "cpu", t.CPU)
					t.MemoryMB = attrInt(res.Body, "memory", t.MemoryMB)
					t.MemoryMaxMB = attrInt(res.Body, "memory_max", 0)
				}
				for _, cfg := range blocksOf(task.Body, "config") {
					m, d := bodyAsMap(cfg.Body)
					diags = append(diags, d...)
					t.Config = m
				}
				tasks = append(tasks, t)
			}
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return tasks, nil
}

// ParseJSONJob reads Nomad's API JSON ({"Job": {...}} or the bare job): Config as it is.
func ParseJSONJob(path string) ([]JobTask, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type apiTask struct {
		Name, Driver, User string
		Config             map[string]any
		Env                map[string]string
		Resources          *struct{ CPU, MemoryMB, MemoryMaxMB int }
	}
	type apiJob struct {
		ID, Name   string
		TaskGroups []struct {
			Name     string
			Networks []struct {
				DynamicPorts []struct{ Label string }
			}
			Tasks []apiTask
		}
	}
	var wrapped struct{ Job *apiJob }
	if err := json.Unmarshal(src, &wrapped); err != nil {
		return nil, err
	}
	job := wrapped.Job
	if job == nil {
		job = &apiJob{}
		if err := json.Unmarshal(src, job); err != nil {
			return nil, err
		}
	}
	var tasks []JobTask
	for _, g := range job.TaskGroups {
		var ports []string
		for _, n := range g.Networks {
			for _, p := range n.DynamicPorts {
				ports = append(ports, p.Label)
			}
		}
		for _, at := range g.Tasks {
			t := JobTask{Job: job.ID, Group: g.Name, Name: at.Name, Driver: at.Driver, User: at.User, Config: at.Config, Env: at.Env, CPU: 100, MemoryMB: 300, Ports: ports}
			if t.Env == nil {
				t.Env = map[string]string{}
			}
			if t.Config == nil {
				t.Config = map[string]any{}
			}
			if r := at.Resources; r != nil {
				if r.CPU > 0 {
					t.CPU = r.CPU
				}
				if r.MemoryMB > 0 {
					t.MemoryMB = r.MemoryMB
				}
				t.MemoryMaxMB = r.MemoryMaxMB
			}
			tasks = append(tasks, t)
		}
	}
	return tasks, nil
}

// ParseJob dispatches on the file name.
func ParseJob(path string) ([]JobTask, error) {
	if strings.HasSuffix(path, ".json") {
		return ParseJSONJob(path)
	}
	return ParseHCLJob(path)
}

// taskVars mirrors taskenv AllValues: every variable at the top level, `env` as a map, and the
// node's attributes nested by their dots (node.unique.id, attr.kernel.name, ...).
func taskVars(env map[string]string, node map[string]string) map[string]cty.Value {
	vars := map[string]cty.Value{}
	flat := map[string]cty.Value{}
	tree := map[string]any{}
	add := func(k, v string) {
		parts := strings.Split(k, ".")
		cur := tree
		for i, p := range parts {
			if i == len(parts)-1 {
				if _, isMap := cur[p].(map[string]any); !isMap {
					cur[p] = v
				}
				return
			}
			next, ok := cur[p].(map[string]any)
			if !ok {
				if _, taken := cur[p]; taken {
					return
				}
				next = map[string]any{}
				cur[p] = next
			}
			cur = next
		}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, env[k])
		flat[k] = cty.StringVal(env[k])
	}
	for k, v := range node {
		add(k, v)
	}
	for k, v := range tree {
		switch x := v.(type) {
		case string:
			vars[k] = cty.StringVal(x)
		case map[string]any:
			vars[k] = treeValue(x)
		}
	}
	vars["env"] = cty.MapVal(flat)
	if len(flat) == 0 {
		vars["env"] = cty.MapValEmpty(cty.String)
	}
	return vars
}
