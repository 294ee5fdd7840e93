package models

import (
	"fmt"
	"slices"

	"gopkg.in/yaml.v3"
)

// VersionPolicy chooses which version folders are served, as Triton's
// version_policy does. In config.yaml:
//
//	version_policy: {latest: 2}        # the two highest (default: latest 1)
//	version_policy: all                # every version
//	version_policy: {specific: [1, 3]} # exactly these
type VersionPolicy struct {
	Latest   int   `json:"latest,omitempty"`
	All      bool  `json:"all,omitempty"`
	Specific []int `json:"specific,omitempty"`
}

// UnmarshalYAML accepts the three forms above and nothing else.
func (p *VersionPolicy) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value == "all" {
			*p = VersionPolicy{All: true}
			return nil
		}
		return fmt.Errorf("line %d: version_policy %q: want all, {latest: N} or {specific: [..]}", n.Line, n.Value)
	}
	var raw struct {
		Latest   *int  `yaml:"latest"`
		Specific []int `yaml:"specific"`
		All      *bool `yaml:"all"`
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	set := 0
	if raw.Latest != nil {
		set++
		if *raw.Latest < 1 {
			return fmt.Errorf("line %d: version_policy.latest must be at least 1", n.Line)
		}
		p.Latest = *raw.Latest
	}
	if raw.Specific != nil {
		set++
		if len(raw.Specific) == 0 {
			return fmt.Errorf("line %d: version_policy.specific lists no version", n.Line)
		}
		for _, v := range raw.Specific {
			if v < 1 {
				return fmt.Errorf("line %d: version_policy.specific: %d is not a version", n.Line, v)
			}
		}
		p.Specific = raw.Specific
	}
	if raw.All != nil {
		set++
		p.All = *raw.All
	}
	if set != 1 {
		return fmt.Errorf("line %d: version_policy takes exactly one of latest, specific or all", n.Line)
	}
	return nil
}

// Select returns the versions the policy serves, ascending; versions is
// ascending.
func (p VersionPolicy) Select(versions []Version) []Version {
	switch {
	case p.All:
		return versions
	case len(p.Specific) > 0:
		var out []Version
		for _, v := range versions {
			if slices.Contains(p.Specific, v.Number) {
				out = append(out, v)
			}
		}
		return out
	}
	n := max(p.Latest, 1)
	return versions[max(len(versions)-n, 0):]
}
