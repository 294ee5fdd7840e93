package models

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestVersionPolicy(t *testing.T) {
	vs := []Version{{Number: 1}, {Number: 2}, {Number: 5}, {Number: 7}}
	tests := []struct {
		yaml string
		want []int
		err  bool
	}{
		{"", []int{7}, false},
		{"version_policy: {latest: 2}", []int{5, 7}, false},
		{"version_policy: {latest: 9}", []int{1, 2, 5, 7}, false},
		{"version_policy: all", []int{1, 2, 5, 7}, false},
		{"version_policy: {all: true}", []int{1, 2, 5, 7}, false},
		{"version_policy: {specific: [2, 7, 9]}", []int{2, 7}, false},
		{"version_policy: {latest: 0}", nil, true},
		{"version_policy: {specific: []}", nil, true},
		{"version_policy: {specific: [0]}", nil, true},
		{"version_policy: {latest: 1, all: true}", nil, true},
		{"version_policy: newest", nil, true},
		{"version_policy: {lastest: 1}", nil, true},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(tt.yaml))
		if (err != nil) != tt.err {
			t.Errorf("%q: err = %v, want error %v", tt.yaml, err, tt.err)
			continue
		}
		if tt.err {
			continue
		}
		var got []int
		for _, v := range c.VersionPolicy.Select(vs) {
			got = append(got, v.Number)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%q selects %v, want %v", tt.yaml, got, tt.want)
		}
	}
}

func TestVersionReadyAndFingerprint(t *testing.T) {
	dir := t.TempDir()
	v := Version{Number: 1, Dir: dir, Path: filepath.Join(dir, ModelFile)}
	os.WriteFile(v.Path, []byte("half"), 0o644)
	f1, err := v.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	if f2, _ := v.Fingerprint(); f2 != f1 {
		t.Fatal("fingerprint of an unchanged folder changed")
	}
	if v.Ready() {
		t.Fatal("ready without the marker")
	}
	// Growing the file (a copy in progress) changes the fingerprint, as
	// does a new file.
	os.WriteFile(v.Path, []byte("half and the rest"), 0o644)
	f3, _ := v.Fingerprint()
	if f3 == f1 {
		t.Fatal("fingerprint did not see the file grow")
	}
	os.WriteFile(filepath.Join(dir, ReadyFile), nil, 0o644)
	os.Chtimes(filepath.Join(dir, ReadyFile), time.Unix(1, 0), time.Unix(1, 0))
	if f4, _ := v.Fingerprint(); f4 == f3 {
		t.Fatal("fingerprint did not see a new file")
	}
	if !v.Ready() {
		t.Fatal("marker not seen")
	}
}
