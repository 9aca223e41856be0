package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder walks the YAML tree against the Go types, so that every unknown
// key, duplicate key and bad value is reported with its file and line.
type decoder struct {
	w     Walker
	lines map[string]int // dotted key -> line it was set on
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// shorthand is a mapping that may also be written as a single value (a
// blocklist zone as its name alone); check validates the mapping form.
type shorthand interface {
	fromScalar(n *yaml.Node) error
	check() error
}

func (d *decoder) decode(n *yaml.Node, out any, path string) error {
	return d.value(n, reflect.ValueOf(out).Elem(), path)
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) error {
	n = deref(n)
	if v.Addr().Type().Implements(unmarshalerType) {
		if IsNull(n) {
			return d.w.Errorf(n, "%s: has no value", path) // an empty value is a mistake
		}
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			return d.wrap(n, path, err)
		}
		return nil
	}
	if sh, ok := v.Addr().Interface().(shorthand); ok {
		if n.Kind == yaml.ScalarNode && !IsNull(n) {
			if err := sh.fromScalar(n); err != nil {
				return d.wrap(n, path, err)
			}
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return d.w.Errorf(n, "%s: want a name or a mapping, got %s", path, KindOf(n))
		}
		if err := d.mapping(n, v, path); err != nil {
			return err
		}
		if err := sh.check(); err != nil {
			return d.w.Errorf(n, "%s: %v", path, err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.mapping(n, v, path)
	case reflect.Slice:
		if IsNull(n) {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0)) // an empty list is fine
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return d.w.Errorf(n, "%s: want a list, got %s", path, KindOf(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.value(item, s.Index(i), path); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if _, err := d.w.Scalar(n, path); err != nil {
		return err
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return d.w.Errorf(n, "%s: %q is not a valid %s", path, n.Value, typeName(v.Type()))
	}
	return nil
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) error {
	if IsNull(n) {
		return nil // an empty section keeps its defaults
	}
	fields := map[string]int{}
	var names []string
	for i := 0; i < v.NumField(); i++ {
		tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			fields[tag] = i
			names = append(names, tag)
		}
	}
	return d.w.Fields(n, path, names, func(name string, k, val *yaml.Node) error {
		key := d.w.Key(path, name)
		d.lines[key] = k.Line
		return d.value(val, v.Field(fields[name]), key)
	})
}

func (d *decoder) wrap(n *yaml.Node, path string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s: %s", d.w.File, le.line, path, le.msg)
	}
	return d.w.Errorf(n, "%s: %v", path, err)
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int64:
		return "whole number"
	case reflect.Uint16:
		return "number from 0 to 65535"
	case reflect.String:
		return "string"
	}
	return t.String()
}
