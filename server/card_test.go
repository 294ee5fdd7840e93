package server

import (
	"encoding/json"
	"strings"
	"testing"
)

// A model's card appears in GET /v1/models and /v1/models/{m} as "card",
// compacted; versions without one, or with a malformed one, show none.
func TestModelCard(t *testing.T) {
	carded := fakeModel("toy", 2)
	carded.Card = json.RawMessage(`{
  "model": "toy",
  "version": 2,
  "accuracy": {"train": 0.99, "validation": 0.9, "test": 0.875},
  "confusion_matrix": [[7, 1], [0, 8]],
  "classes": ["cat", "dog \"quoted\""],
  "notes": "<b>not HTML</b>"
}`)
	broken := fakeModel("broken", 1)
	broken.Card = json.RawMessage(`{"model": "broken",`)
	array := fakeModel("array", 1)
	array.Card = json.RawMessage(`[1, 2]`)
	ts := newTestServer(t, Options{}, fakeModel("toy", 1), carded, broken, array)

	for _, tt := range []struct{ name, path string }{
		{"models_card", "/v1/models"},
		{"model_card", "/v1/models/toy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.do(t, "GET", tt.path, "", nil)
			golden(t, tt.name+".golden", r)
		})
	}

	for _, path := range []string{"/v1/models/toy/versions/1", "/v1/models/broken", "/v1/models/array"} {
		if r := ts.do(t, "GET", path, "", nil); r.status != 200 || strings.Contains(r.body, `"card"`) {
			t.Errorf("GET %s = %d %s, want 200 without a card", path, r.status, r.body)
		}
	}
	r := ts.do(t, "GET", "/v1/models/toy/versions/2", "", nil)
	var got struct {
		Card struct {
			Version  int `json:"version"`
			Accuracy struct {
				Test float64 `json:"test"`
			} `json:"accuracy"`
		} `json:"card"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || got.Card.Version != 2 || got.Card.Accuracy.Test != 0.875 {
		t.Errorf("GET /v1/models/toy/versions/2 card = %+v, %v\n%s", got.Card, err, r.body)
	}
}
