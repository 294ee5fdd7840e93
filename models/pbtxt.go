package models

import (
	"fmt"
	"strconv"
	"strings"
)

// textField is one field of a protobuf text-format message: Triton's
// config.pbtxt is one. Its value is a scalar token (a string's contents,
// or a number, enum or bool as written), a nested message, or for the
// list form a []any of either.
type textField struct {
	name  string
	value any // string | textMsg | []any
	quote bool
	line  int
}

type textMsg []textField

// parseText parses protobuf's text format without a schema: which fields
// exist and what they mean is left to the caller, who can then say which
// were used and which were not.
func parseText(b []byte) (textMsg, error) {
	p := &textParser{src: strings.TrimPrefix(string(b), "\ufeff"), line: 1} // a Windows editor's byte-order mark
	m, err := p.message(0)
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", p.line, err)
	}
	return m, nil
}

type textParser struct {
	src  string
	pos  int
	line int
}

// skip passes blanks and # comments.
func (p *textParser) skip() {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func (p *textParser) peek() byte {
	p.skip()
	if p.pos >= len(p.src) {
		return 0
	}
	return p.src[p.pos]
}

// message reads fields up to end ('}', '>', or 0 for the end of input).
func (p *textParser) message(end byte) (textMsg, error) {
	var m textMsg
	for {
		c := p.peek()
		if c == end {
			if end != 0 {
				p.pos++
			}
			return m, nil
		}
		if c == 0 {
			return nil, fmt.Errorf("missing %q", end)
		}
		line := p.line
		name := p.ident()
		if name == "" {
			return nil, fmt.Errorf("want a field name, got %q", p.src[p.pos:min(p.pos+20, len(p.src))])
		}
		colon := p.peek() == ':'
		if colon {
			p.pos++
		}
		f := textField{name: name, line: line}
		switch c := p.peek(); {
		case c == '{' || c == '<':
			p.pos++
			sub, err := p.message(closer(c))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			f.value = sub
		case c == '[': // a list; messages' lists may omit the colon
			p.pos++
			var list []any
			for p.peek() != ']' {
				if len(list) > 0 {
					if p.peek() != ',' {
						return nil, fmt.Errorf("%s: want , or ] in the list", name)
					}
					p.pos++
				}
				v, _, err := p.value(name)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			p.pos++
			f.value = list
		case colon:
			v, q, err := p.value(name)
			if err != nil {
				return nil, err
			}
			f.value, f.quote = v, q
		default:
			return nil, fmt.Errorf("%s: want : or { after the field name", name)
		}
		m = append(m, f)
		if c := p.peek(); c == ',' || c == ';' {
			p.pos++
		}
	}
}

func closer(open byte) byte {
	if open == '<' {
		return '>'
	}
	return '}'
}

// value reads a scalar or a message, for a field named name.
func (p *textParser) value(name string) (any, bool, error) {
	switch c := p.peek(); {
	case c == '{' || c == '<':
		p.pos++
		sub, err := p.message(closer(c))
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", name, err)
		}
		return sub, false, nil
	case c == '"' || c == '\'':
		// Adjacent strings join, as in C.
		var sb strings.Builder
		for c := p.peek(); c == '"' || c == '\''; c = p.peek() {
			s, err := p.str()
			if err != nil {
				return nil, false, fmt.Errorf("%s: %w", name, err)
			}
			sb.WriteString(s)
		}
		return sb.String(), true, nil
	}
	if p.pos >= len(p.src) {
		return nil, false, fmt.Errorf("%s: want a value", name)
	}
	start := p.pos
	if c := p.src[p.pos]; c == '-' || c == '+' {
		p.pos++
		p.skip() // "- 5" is a number too
	}
	body := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		// A sign belongs to an exponent: 1e-5.
		exp := (c == '-' || c == '+') && p.pos > body && (p.src[p.pos-1] == 'e' || p.src[p.pos-1] == 'E') &&
			(p.src[body] >= '0' && p.src[body] <= '9' || p.src[body] == '.')
		if !isTokenByte(c) && !exp {
			break
		}
		p.pos++
	}
	tok := strings.Join(strings.Fields(p.src[start:p.pos]), "")
	if p.pos == body {
		return nil, false, fmt.Errorf("%s: want a value", name)
	}
	return tok, false, nil
}

// str reads one quoted string, unescaping it as Go (and protobuf) do.
func (p *textParser) str() (string, error) {
	q := p.src[p.pos]
	i := p.pos + 1
	for i < len(p.src) && p.src[i] != q {
		if p.src[i] == '\n' {
			return "", fmt.Errorf("newline in a string")
		}
		if p.src[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(p.src) {
		return "", fmt.Errorf("unterminated string")
	}
	raw := p.src[p.pos+1 : i]
	p.pos = i + 1
	if q == '\'' {
		raw = strings.ReplaceAll(strings.ReplaceAll(raw, `\'`, `'`), `"`, `\"`)
	}
	s, err := strconv.Unquote(`"` + raw + `"`)
	if err != nil {
		return "", fmt.Errorf("bad escape in %q", raw)
	}
	return s, nil
}

func (p *textParser) ident() string {
	p.skip()
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		letter := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (p.pos == start || !(c >= '0' && c <= '9')) {
			break
		}
		p.pos++
	}
	return p.src[start:p.pos]
}

func isTokenByte(c byte) bool {
	return c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
