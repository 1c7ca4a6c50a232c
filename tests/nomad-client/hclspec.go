package main

// Conversion of the plugin's hclspec.Spec protobuf tree into an hcldec.Spec, following the
// rules of Nomad's helper/pluginutils/hclspecutils (dec.go: Convert / decodeSpecBlock and the
// decode*Spec functions; type_expr.go: evalTypeExpr; spec_funcs.go: the Literal functions).
// Written for this project from reading those files; no Nomad code is copied.
//
// The rule that issue 13 is about: an Object passes each of its keys down as the *implied name*
// of its direct child only. Default (primary and default) and Array children, and the nested
// spec of a block, get no implied name, so an Attr without a name there fails with
// "Missing name in attribute spec" and the agent refuses the plugin.

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"nomad-driver-systemd/tests/nomad-client/pb/hclspec"
)

// nomadFuncs is the function table Nomad offers to Literal values (spec_funcs.go) and to task
// configs (hclutils/util.go, GetStdlibFuncs): the same fifteen cty stdlib functions.
func nomadFuncs() map[string]function.Function {
	return map[string]function.Function{
		"abs":        stdlib.AbsoluteFunc,
		"coalesce":   stdlib.CoalesceFunc,
		"concat":     stdlib.ConcatFunc,
		"hasindex":   stdlib.HasIndexFunc,
		"int":        stdlib.IntFunc,
		"jsondecode": stdlib.JSONDecodeFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"length":     stdlib.LengthFunc,
		"lower":      stdlib.LowerFunc,
		"max":        stdlib.MaxFunc,
		"min":        stdlib.MinFunc,
		"reverse":    stdlib.ReverseFunc,
		"strlen":     stdlib.StrlenFunc,
		"substr":     stdlib.SubstrFunc,
		"upper":      stdlib.UpperFunc,
	}
}

func diagErr(summary, detail string) hcl.Diagnostics {
	return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: summary, Detail: detail}}
}

// ConvertSpec mirrors hclspecutils.Convert: the root gets no implied name.
func ConvertSpec(s *hclspec.Spec) (hcldec.Spec, hcl.Diagnostics) {
	if s == nil {
		return nil, diagErr("nil spec given", "a nil spec cannot be converted")
	}
	return convertNode(s, "")
}

// convertNode mirrors decodeSpecBlock: only the name-carrying kinds see impliedName.
func convertNode(s *hclspec.Spec, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	if s == nil {
		// Nomad would dereference a nil child (a panic in the agent); report it instead.
		return nil, diagErr("Missing spec block", "a child spec is nil")
	}
	switch b := s.Block.(type) {
	case *hclspec.Spec_Object:
		return convertObject(b.Object)
	case *hclspec.Spec_Array:
		return convertArray(b.Array)
	case *hclspec.Spec_Attr:
		return convertAttr(b.Attr, impliedName)
	case *hclspec.Spec_BlockValue:
		return convertBlock(b.BlockValue, impliedName)
	case *hclspec.Spec_BlockAttrs:
		return convertBlockAttrs(b.BlockAttrs, impliedName)
	case *hclspec.Spec_BlockList:
		return convertBlockList(b.BlockList, impliedName)
	case *hclspec.Spec_BlockSet:
		return convertBlockSet(b.BlockSet, impliedName)
	case *hclspec.Spec_BlockMap:
		return convertBlockMap(b.BlockMap, impliedName)
	case *hclspec.Spec_Default:
		return convertDefault(b.Default)
	case *hclspec.Spec_Literal:
		return convertLiteral(b.Literal)
	default:
		return nil, diagErr("Invalid spec block", fmt.Sprintf("Blocks of type %T are not expected here.", s.Block))
	}
}

// convertObject: every key is the implied name of its own direct child (decodeObjectSpec).
func convertObject(o *hclspec.Object) (hcldec.Spec, hcl.Diagnostics) {
	out := hcldec.ObjectSpec{}
	var diags hcl.Diagnostics
	for key, child := range o.GetAttributes() {
		c, d := convertNode(child, key)
		diags = append(diags, d...)
		out[key] = c
	}
	return out, diags
}

// convertArray: elements get no implied name (decodeArraySpec).
func convertArray(a *hclspec.Array) (hcldec.Spec, hcl.Diagnostics) {
	out := hcldec.TupleSpec{}
	var diags hcl.Diagnostics
	for _, child := range a.GetValues() {
		c, d := convertNode(child, "")
		diags = append(diags, d...)
		out = append(out, c)
	}
	return out, diags
}

func pick(explicit, implied string) string {
	if explicit != "" {
		return explicit
	}
	return implied
}

// convertAttr mirrors decodeAttrSpec: type first, then the name check.
func convertAttr(a *hclspec.Attr, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	ty, diags := parseTypeExpr(a.GetType())
	if diags.HasErrors() {
		return nil, diags
	}
	name := pick(a.GetName(), impliedName)
	if name == "" {
		return nil, append(diags, diagErr("Missing name in attribute spec",
			"The name attribute is required, to specify the attribute name that is expected in an input HCL file.")...)
	}
	return &hcldec.AttrSpec{Name: name, Type: ty, Required: a.GetRequired()}, diags
}

// convertBlock mirrors decodeBlockSpec (which, unlike the others, has no empty-name check).
func convertBlock(b *hclspec.Block, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	nested, diags := convertNested(b.GetNested())
	return &hcldec.BlockSpec{TypeName: pick(b.GetName(), impliedName), Required: b.GetRequired(), Nested: nested}, diags
}

func convertBlockAttrs(b *hclspec.BlockAttrs, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	ty, diags := parseTypeExpr(b.GetType())
	if diags.HasErrors() {
		return nil, diags
	}
	name := pick(b.GetName(), impliedName)
	if name == "" {
		return nil, append(diags, diagErr("Missing name in block_attrs spec",
			"The name attribute is required, to specify the block attr name that is expected in an input HCL file.")...)
	}
	return &hcldec.BlockAttrsSpec{TypeName: name, ElementType: ty, Required: b.GetRequired()}, diags
}

func convertBlockList(b *hclspec.BlockList, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	nested, diags := convertNested(b.GetNested())
	name := pick(b.GetName(), impliedName)
	if name == "" {
		return nil, append(diags, diagErr("Missing name in block_list spec", "a block type name is required")...)
	}
	return &hcldec.BlockListSpec{TypeName: name, Nested: nested, MinItems: int(b.GetMinItems()), MaxItems: int(b.GetMaxItems())}, diags
}

func convertBlockSet(b *hclspec.BlockSet, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	nested, diags := convertNested(b.GetNested())
	name := pick(b.GetName(), impliedName)
	if name == "" {
		return nil, append(diags, diagErr("Missing name in block_set spec", "a block type name is required")...)
	}
	return &hcldec.BlockSetSpec{TypeName: name, Nested: nested, MinItems: int(b.GetMinItems()), MaxItems: int(b.GetMaxItems())}, diags
}

func convertBlockMap(b *hclspec.BlockMap, impliedName string) (hcldec.Spec, hcl.Diagnostics) {
	nested, diags := convertNested(b.GetNested())
	name := pick(b.GetName(), impliedName)
	if name == "" {
		return nil, append(diags, diagErr("Missing name in block_map spec", "a block type name is required")...)
	}
	if len(b.GetLabels()) == 0 {
		return nil, append(diags, diagErr("Invalid block label name list", "A block_map must have at least one label specified.")...)
	}
	return &hcldec.BlockMapSpec{TypeName: name, LabelNames: b.GetLabels(), Nested: nested}, diags
}

// convertNested mirrors decodeBlockNestedSpec: required, and no implied name below a block.
func convertNested(s *hclspec.Spec) (hcldec.Spec, hcl.Diagnostics) {
	if s == nil {
		return nil, diagErr("Missing spec block", "A block spec must have exactly one child spec specifying how to decode block contents.")
	}
	return convertNode(s, "")
}

// convertDefault mirrors decodeDefaultSpec: neither side gets an implied name.
func convertDefault(d *hclspec.Default) (hcldec.Spec, hcl.Diagnostics) {
	primary, diags := convertNode(d.GetPrimary(), "")
	if diags.HasErrors() {
		return nil, diags
	}
	def, more := convertNode(d.GetDefault(), "")
	diags = append(diags, more...)
	if diags.HasErrors() {
		return nil, diags
	}
	return &hcldec.DefaultSpec{Primary: primary, Default: def}, diags
}

// convertLiteral mirrors decodeLiteralSpec: an HCL expression evaluated with the functions only.
func convertLiteral(l *hclspec.Literal) (hcldec.Spec, hcl.Diagnostics) {
	expr, diags := hclsyntax.ParseExpression([]byte(l.GetValue()), "proto", hcl.Pos{})
	if diags.HasErrors() {
		return nil, diags
	}
	v, more := expr.Value(&hcl.EvalContext{Functions: nomadFuncs()})
	diags = append(diags, more...)
	if diags.HasErrors() {
		return nil, diags
	}
	return &hcldec.LiteralSpec{Value: v}, diags
}

// parseTypeExpr accepts what Nomad's type_expr.go accepts: the keywords string, number, bool,
// any, and the constructors list(T), set(T), map(T), tuple([T, ...]), object({k = T, ...}).
// Nomad evaluates the expression with capsule-typed variables and functions; this walks the
// syntax tree instead, with the same accepted language. An empty string is a parse error.
func parseTypeExpr(src string) (cty.Type, hcl.Diagnostics) {
	expr, diags := hclsyntax.ParseExpression([]byte(src), "proto", hcl.Pos{})
	if diags.HasErrors() {
		return cty.DynamicPseudoType, diags
	}
	return typeOf(expr)
}

func typeErr(detail string) hcl.Diagnostics {
	return diagErr("Invalid type expression", detail)
}

func typeOf(expr hclsyntax.Expression) (cty.Type, hcl.Diagnostics) {
	switch e := expr.(type) {
	case *hclsyntax.ScopeTraversalExpr:
		if len(e.Traversal) != 1 {
			return cty.DynamicPseudoType, typeErr("a type keyword is a single name")
		}
		switch e.Traversal.RootName() {
		case "string":
			return cty.String, nil
		case "number":
			return cty.Number, nil
		case "bool":
			return cty.Bool, nil
		case "any":
			return cty.DynamicPseudoType, nil
		}
		return cty.DynamicPseudoType, diagErr("Unknown variable", fmt.Sprintf("There is no variable named %q.", e.Traversal.RootName()))
	case *hclsyntax.FunctionCallExpr:
		if len(e.Args) != 1 {
			return cty.DynamicPseudoType, typeErr(fmt.Sprintf("%s() takes exactly one argument", e.Name))
		}
		switch e.Name {
		case "list", "set", "map":
			et, d := typeOf(e.Args[0])
			if d.HasErrors() {
				return cty.DynamicPseudoType, d
			}
			switch e.Name {
			case "list":
				return cty.List(et), nil
			case "set":
				return cty.Set(et), nil
			}
			return cty.Map(et), nil
		case "tuple":
			tup, ok := e.Args[0].(*hclsyntax.TupleConsExpr)
			if !ok {
				return cty.DynamicPseudoType, typeErr("tuple() takes a list of types")
			}
			var ets []cty.Type
			for _, x := range tup.Exprs {
				et, d := typeOf(x)
				if d.HasErrors() {
					return cty.DynamicPseudoType, d
				}
				ets = append(ets, et)
			}
			return cty.Tuple(ets), nil
		case "object":
			obj, ok := e.Args[0].(*hclsyntax.ObjectConsExpr)
			if !ok {
				return cty.DynamicPseudoType, typeErr("object() takes a map of types")
			}
			ats := map[string]cty.Type{}
			for _, item := range obj.Items {
				k, d := item.KeyExpr.Value(nil)
				if d.HasErrors() || k.Type() != cty.String {
					return cty.DynamicPseudoType, typeErr("object() attribute names must be strings")
				}
				at, d := typeOf(item.ValueExpr)
				if d.HasErrors() {
					return cty.DynamicPseudoType, d
				}
				ats[k.AsString()] = at
			}
			return cty.Object(ats), nil
		}
		return cty.DynamicPseudoType, diagErr("Call to unknown function", fmt.Sprintf("There is no function named %q.", e.Name))
	}
	return cty.DynamicPseudoType, typeErr("A type is required.")
}

// UnnamedPaths lists where a name-carrying spec has no name of its own and gets none implied
// (for error messages: Nomad's diagnostics do not say where).
func UnnamedPaths(s *hclspec.Spec) []string {
	var out []string
	var walk func(s *hclspec.Spec, path string, implied bool)
	walk = func(s *hclspec.Spec, path string, implied bool) {
		if s == nil {
			return
		}
		switch b := s.Block.(type) {
		case *hclspec.Spec_Object:
			for k, c := range b.Object.GetAttributes() {
				walk(c, path+"."+k, true)
			}
		case *hclspec.Spec_Array:
			for i, c := range b.Array.GetValues() {
				walk(c, fmt.Sprintf("%s[%d]", path, i), false)
			}
		case *hclspec.Spec_Default:
			walk(b.Default.GetPrimary(), path+"(default.primary)", false)
			walk(b.Default.GetDefault(), path+"(default.default)", false)
		case *hclspec.Spec_Attr:
			if b.Attr.GetName() == "" && !implied {
				out = append(out, path)
			}
		case *hclspec.Spec_BlockAttrs:
			if b.BlockAttrs.GetName() == "" && !implied {
				out = append(out, path)
			}
		case *hclspec.Spec_BlockValue:
			walk(b.BlockValue.GetNested(), path+"(block)", false)
		case *hclspec.Spec_BlockList:
			walk(b.BlockList.GetNested(), path+"(block_list)", false)
		case *hclspec.Spec_BlockSet:
			walk(b.BlockSet.GetNested(), path+"(block_set)", false)
		case *hclspec.Spec_BlockMap:
			walk(b.BlockMap.GetNested(), path+"(block_map)", false)
		}
	}
	walk(s, "", false)
	sort.Strings(out)
	return out
}
