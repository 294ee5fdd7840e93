package predlog

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// columns are the data columns of PostgreSQL's predictions table (and of
// SQLite's before batches), in the order they are written and read.
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

// appendTopK appends top as the topk column's JSON,
// [{"index":3,"label":"cat","score":0.91}], written by hand: it runs for
// every logged prediction, and encoding/json's reflection cost more than
// the rest of the record's encoding.
func appendTopK(dst []byte, top []Class) []byte {
	dst = append(dst, '[')
	for i, c := range top {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"index":`...)
		dst = strconv.AppendInt(dst, int64(c.Index), 10)
		dst = append(dst, `,"label":`...)
		dst = appendJSONString(dst, cleanString(c.Label))
		dst = append(dst, `,"score":`...)
		dst = appendFloat32(dst, c.Score)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendFloat32 writes a score, brightness or contrast to float32
// precision, that of the tensors they come from: the float64 arithmetic
// after them adds digits nobody computed, and the shortest float32 form
// is half as long and quicker to write. Values beyond float32's range,
// like non-finite ones, are null.
func appendFloat32(dst []byte, f float64) []byte {
	f32 := float32(f)
	if f != f || math.IsInf(float64(f32), 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, float64(f32), 'g', -1, 32)
}

// float32OrNaN is a stored score, brightness or contrast as it reads
// back: float32 precision, NaN for null.
func float32OrNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return float64(float32(*p))
}

// appendJSONString quotes s, valid UTF-8 (cleanString), as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func decodeTopK(b []byte) ([]Class, error) {
	var js []jsonClass
	if err := json.Unmarshal(b, &js); err != nil {
		return nil, err
	}
	return classes(js), nil
}

func classes(js []jsonClass) []Class {
	if len(js) == 0 {
		return nil
	}
	top := make([]Class, len(js))
	for i, c := range js {
		top[i] = Class{Index: c.Index, Label: c.Label, Score: float32OrNaN(c.Score)}
	}
	return top
}

// appendRecord appends r as one element of a SQLite batch in format 2:
// an array of the columns in order, except that time is microseconds
// after the batch's first and model and version are the batch row's
// (see sqliteSchema); without an image it ends after contrast. Written by
// hand for the same reason as appendTopK.
func appendRecord(dst []byte, r Record, first int64) []byte {
	dst = append(dst, '[')
	dst = strconv.AppendInt(dst, r.Time.UnixMicro()-first, 10)
	dst = append(dst, ',')
	dst = appendJSONString(dst, cleanString(r.RequestID))
	dst = append(dst, ",["...)
	for i, c := range r.TopK {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = strconv.AppendInt(dst, int64(c.Index), 10)
		dst = append(dst, ',')
		dst = appendJSONString(dst, cleanString(c.Label))
		dst = append(dst, ',')
		dst = appendFloat32(dst, c.Score)
		dst = append(dst, ']')
	}
	dst = append(dst, "],"...)
	dst = appendMs(dst, r.Latency.PreprocessMs)
	dst = append(dst, ',')
	dst = appendMs(dst, r.Latency.QueueMs)
	dst = append(dst, ',')
	dst = appendMs(dst, r.Latency.InferMs)
	dst = append(dst, ',')
	dst = appendMs(dst, r.Latency.TotalMs)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(r.Width), 10)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(r.Height), 10)
	dst = append(dst, ',')
	dst = appendFloat32(dst, r.Brightness)
	dst = append(dst, ',')
	dst = appendFloat32(dst, r.Contrast)
	if len(r.Image) > 0 {
		dst = append(dst, ",\""...)
		dst = base64.StdEncoding.AppendEncode(dst, r.Image)
		dst = append(dst, '"')
	}
	return append(dst, ']')
}

// appendMs writes a latency. The server's are whole microseconds in
// milliseconds, written with integer arithmetic (the shortest float
// form gives the same digits at several times the cost); any other value
// takes the general path, so every float64 still reads back exactly.
func appendMs(dst []byte, f float64) []byte {
	if n := math.Round(f * 1000); n >= 0 && n < 1e15 && n/1000 == f {
		u := int64(n)
		dst = strconv.AppendInt(dst, u/1000, 10)
		if frac := u % 1000; frac != 0 {
			dst = append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
		}
		return dst
	}
	return appendJSONFloat(dst, f)
}

// appendJSONFloat writes f, or null when it is not finite (JSON has no NaN).
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// null32 maps NaN to NULL (nil) and rounds the rest to float32 (see
// appendFloat32).
func null32(f float64) any {
	if math.IsNaN(f) {
		return nil
	}
	return float64(float32(f))
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

// rowScanner is a *sql.Rows or a pgx.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// scanRecord reads one row of columns. The time column is scanned into tm
// (Unix microseconds in SQLite's first schema, a time.Time in PostgreSQL)
// and turned into the record's time by when.
func scanRecord(rs rowScanner, tm any, when func() time.Time) (Record, error) {
	var (
		r                        Record
		version, w, h            int64
		top                      string
		pre, queue, infer, total *float64
		brightness, contrast     *float64
		image                    []byte
	)
	if err := rs.Scan(tm, &r.RequestID, &r.Model, &version, &top,
		&pre, &queue, &infer, &total, &w, &h, &brightness, &contrast, &image); err != nil {
		return r, err
	}
	r.Time = when().UTC()
	r.Version, r.Width, r.Height = int(version), int(w), int(h)
	var err error
	if r.TopK, err = decodeTopK([]byte(top)); err != nil {
		return r, fmt.Errorf("predlog: topk of a %s record: %w", r.Model, err)
	}
	r.Latency = Latency{floatOrNaN(pre), floatOrNaN(queue), floatOrNaN(infer), floatOrNaN(total)}
	r.Brightness, r.Contrast = float32OrNaN(brightness), float32OrNaN(contrast)
	if len(image) > 0 {
		r.Image = image
	}
	return r, nil
}
