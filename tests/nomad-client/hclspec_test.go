package main

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"nomad-driver-systemd/tests/nomad-client/pb/hclspec"
)

func attrSpec(name, ty string) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Attr{Attr: &hclspec.Attr{Name: name, Type: ty}}}
}

func literal(v string) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Literal{Literal: &hclspec.Literal{Value: v}}}
}

func withDefault(primary, def *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Default{Default: &hclspec.Default{Primary: primary, Default: def}}}
}

func object(kv map[string]*hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Object{Object: &hclspec.Object{Attributes: kv}}}
}

// The schema shape that made a stock Nomad agent refuse the plugin (issue 13): an Attr with
// no name inside a Default. The Object key is NOT passed through the Default.
func TestUnnamedAttrUnderDefaultIsRefused(t *testing.T) {
	bad := object(map[string]*hclspec.Spec{
		"enabled": withDefault(attrSpec("", "bool"), literal("true")),
	})
	_, diags := ConvertSpec(bad)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Missing name in attribute spec") {
		t.Fatalf("want \"Missing name in attribute spec\", got %v", diags)
	}
}

func TestNamedAttrUnderDefaultConverts(t *testing.T) {
	good := object(map[string]*hclspec.Spec{
		"enabled": withDefault(attrSpec("enabled", "bool"), literal("true")),
	})
	spec, diags := ConvertSpec(good)
	if diags.HasErrors() {
		t.Fatalf("unexpected: %v", diags)
	}
	val, err := decodeConfigMap(map[string]any{}, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !val.GetAttr("enabled").RawEquals(cty.True) {
		t.Fatalf("default not applied: %#v", val)
	}
}

// Directly under an Object key the name may be implied; in an Array it may not.
func TestImpliedNameOnlyForDirectObjectChildren(t *testing.T) {
	spec, diags := ConvertSpec(object(map[string]*hclspec.Spec{"command": attrSpec("", "string")}))
	if diags.HasErrors() {
		t.Fatalf("unexpected: %v", diags)
	}
	if got := spec.(hcldec.ObjectSpec)["command"].(*hcldec.AttrSpec).Name; got != "command" {
		t.Fatalf("implied name %q", got)
	}
	arr := &hclspec.Spec{Block: &hclspec.Spec_Array{Array: &hclspec.Array{Values: []*hclspec.Spec{attrSpec("", "string")}}}}
	if _, diags := ConvertSpec(object(map[string]*hclspec.Spec{"x": arr})); !strings.Contains(diags.Error(), "Missing name in attribute spec") {
		t.Fatalf("array child: %v", diags)
	}
	ba := &hclspec.Spec{Block: &hclspec.Spec_BlockAttrs{BlockAttrs: &hclspec.BlockAttrs{Type: "string"}}}
	if _, diags := ConvertSpec(withDefault(ba, literal("{}"))); !strings.Contains(diags.Error(), "Missing name in block_attrs spec") {
		t.Fatalf("block_attrs under default: %v", diags)
	}
}

func TestTypeExpressions(t *testing.T) {
	for src, want := range map[string]cty.Type{
		"string":                      cty.String,
		"list(map(string))":           cty.List(cty.Map(cty.String)),
		"set(number)":                 cty.Set(cty.Number),
		"object({a = bool, b = any})": cty.Object(map[string]cty.Type{"a": cty.Bool, "b": cty.DynamicPseudoType}),
		"tuple([string, number])":     cty.Tuple([]cty.Type{cty.String, cty.Number}),
	} {
		got, diags := parseTypeExpr(src)
		if diags.HasErrors() || !got.Equals(want) {
			t.Errorf("%s: got %#v %v", src, got, diags)
		}
	}
	for _, bad := range []string{"", "optional(string)", "strng", "list(string, number)"} {
		if _, diags := parseTypeExpr(bad); !diags.HasErrors() {
			t.Errorf("%q accepted", bad)
		}
	}
}
