package main

// Turning the hclspec a plugin returns into an hcldec spec, and a config written in HCL
// into the go-cty msgpack Nomad sends: what a Nomad agent does with a plugin's
// ConfigSchema and TaskConfigSchema (written here from the wire contract, not taken from
// Nomad).

import (
	"fmt"

	"execdriver.invalid/gen/hclspec"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/msgpack"
)

func convertSpec(s *hclspec.Spec) (hcldec.Spec, error) {
	switch b := s.GetBlock().(type) {
	case *hclspec.Spec_Object:
		object := hcldec.ObjectSpec{}
		for name, attr := range b.Object.GetAttributes() {
			converted, err := convertSpec(attr)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", name, err)
			}
			object[name] = converted
		}
		return object, nil
	case *hclspec.Spec_Attr:
		ty, err := parseType(b.Attr.GetType())
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %v", b.Attr.GetName(), err)
		}
		return &hcldec.AttrSpec{Name: b.Attr.GetName(), Type: ty, Required: b.Attr.GetRequired()}, nil
	case *hclspec.Spec_Default:
		primary, err := convertSpec(b.Default.GetPrimary())
		if err != nil {
			return nil, err
		}
		def, err := convertSpec(b.Default.GetDefault())
		if err != nil {
			return nil, err
		}
		return &hcldec.DefaultSpec{Primary: primary, Default: def}, nil
	case *hclspec.Spec_Literal:
		expr, diags := hclsyntax.ParseExpression([]byte(b.Literal.GetValue()), "literal", hcl.InitialPos)
		if diags.HasErrors() {
			return nil, fmt.Errorf("literal %q: %s", b.Literal.GetValue(), diags.Error())
		}
		value, diags := expr.Value(nil)
		if diags.HasErrors() {
			return nil, fmt.Errorf("literal %q: %s", b.Literal.GetValue(), diags.Error())
		}
		return &hcldec.LiteralSpec{Value: value}, nil
	default:
		return nil, fmt.Errorf("spec block %T is not used by execdriver's schemas", b)
	}
}

func parseType(text string) (cty.Type, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(text), "type", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilType, fmt.Errorf("type %q: %s", text, diags.Error())
	}
	ty, diags := typeexpr.TypeConstraint(expr)
	if diags.HasErrors() {
		return cty.NilType, fmt.Errorf("type %q: %s", text, diags.Error())
	}
	return ty, nil
}

// encodeHCL decodes config (HCL) against spec and encodes it as go-cty msgpack of the
// spec's implied type.
func encodeHCL(spec *hclspec.Spec, config string) ([]byte, cty.Value, error) {
	converted, err := convertSpec(spec)
	if err != nil {
		return nil, cty.NilVal, err
	}
	file, diags := hclsyntax.ParseConfig([]byte(config), "config.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, cty.NilVal, fmt.Errorf("parsing: %s", diags.Error())
	}
	value, diags := hcldec.Decode(file.Body, converted, nil)
	if diags.HasErrors() {
		return nil, cty.NilVal, fmt.Errorf("decoding: %s", diags.Error())
	}
	encoded, err := msgpack.Marshal(value, hcldec.ImpliedType(converted))
	if err != nil {
		return nil, cty.NilVal, err
	}
	return encoded, value, nil
}

// encodeValue encodes a hand-made value with its own type (for configs Nomad itself would
// refuse before sending, to check the plugin's own errors).
func encodeValue(value cty.Value) []byte {
	encoded, err := msgpack.Marshal(value, value.Type())
	if err != nil {
		panic(err)
	}
	return encoded
}
