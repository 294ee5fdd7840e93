package predlog

import (
	"encoding/json"
	"math"
	"strings"
	"unicode/utf8"
)

// columns are the predictions table's data columns, in the order both
// stores write and read them.
var columns = []string{
	"time", "request_id", "model", "version", "topk",
	"preprocess_ms", "queue_ms", "infer_ms", "total_ms",
	"width", "height", "brightness", "contrast", "image",
}

// jsonClass is a Class in the topk column; Score is null when not finite.
type jsonClass struct {
	Index int      `json:"index"`
	Label string   `json:"label"`
	Score *float64 `json:"score"`
}

func encodeTopK(top []Class) ([]byte, error) {
	js := make([]jsonClass, len(top))
	for i, c := range top {
		js[i] = jsonClass{Index: c.Index, Label: cleanString(c.Label)}
		if !math.IsNaN(c.Score) && !math.IsInf(c.Score, 0) {
			s := c.Score
			js[i].Score = &s
		}
	}
	return json.Marshal(js)
}

func decodeTopK(b []byte) ([]Class, error) {
	var js []jsonClass
	if err := json.Unmarshal(b, &js); err != nil {
		return nil, err
	}
	if len(js) == 0 {
		return nil, nil
	}
	top := make([]Class, len(js))
	for i, c := range js {
		top[i] = Class{Index: c.Index, Label: c.Label, Score: math.NaN()}
		if c.Score != nil {
			top[i].Score = *c.Score
		}
	}
	return top, nil
}

// nullFloat maps NaN to NULL (nil).
func nullFloat(f float64) any {
	if math.IsNaN(f) {
		return nil
	}
	return f
}

// floatOrNaN maps NULL (nil) back to NaN.
func floatOrNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// nullBytes maps an empty image to NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// cleanString makes s valid UTF-8 without NUL bytes, which PostgreSQL's
// text and jsonb refuse (and would fail the whole batch).
func cleanString(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
