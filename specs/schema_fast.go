package specs

import (
	"encoding/json"
	"math"
	"unicode/utf8"
)

// This file holds a fast checker for the simple JSON schemas that task specs
// almost always use: objects of typed properties, required names, closed or
// open, arrays of such values and string enums. It only ever answers "valid"
// when the full validator (jsonschema) would accept the value too; on any
// doubt, and on every invalid value, it answers "not valid" and the caller
// runs the full validator, which also words the errors. So a schema with a
// fast checker gives the very same results and messages as one without.

// typeSet is a set of JSON Schema types, as named by the "type" keyword.
type typeSet uint8

const (
	typeNull typeSet = 1 << iota
	typeBoolean
	typeNumber
	typeInteger
	typeString
	typeArray
	typeObject

	// typeAny is the set of a schema without a "type" keyword.
	typeAny = typeNull | typeBoolean | typeNumber | typeInteger | typeString | typeArray | typeObject
)

// typeNames maps the names the "type" keyword takes to their types.
var typeNames = map[string]typeSet{
	"null": typeNull, "boolean": typeBoolean, "number": typeNumber, "integer": typeInteger,
	"string": typeString, "array": typeArray, "object": typeObject,
}

// fastMaxDepth bounds how deeply fast schemas nest and how deeply the raw
// checker skips values a schema leaves unconstrained.
const fastMaxDepth = 32

// fastMaxProperties bounds the properties of one fast object schema, so the
// raw checker can track the properties it saw in one uint64.
const fastMaxProperties = 64

// maxExactFloat is 2^53: every float64 below it in magnitude that equals its
// integer part is a whole number the full validator calls an integer.
const maxExactFloat = 1 << 53

// maxFastFraction and maxFastExponent bound the fraction and exponent
// digits of a number literal the fast checker judges an integer or not.
const (
	maxFastFraction = 1000
	maxFastExponent = 4
)

// fastSchema is one node of a schema the fast checker understands. The
// keywords of a node apply as in JSON Schema: properties, required and
// additionalProperties only to objects, items only to arrays.
type fastSchema struct {
	// types are the types allowed; typeAny when there is no "type".
	types typeSet
	// enum holds the allowed strings when hasEnum is set.
	enum    []string
	hasEnum bool
	// props are the declared properties, in no particular order.
	props []fastProperty
	// propIndex finds a property by name for the raw checker.
	propIndex map[string]int
	// requiredMask has bit i set when props[i] is required.
	requiredMask uint64
	// closed is additionalProperties: false.
	closed bool
	// items checks every element of an array; nil leaves them free.
	items *fastSchema
}

// fastProperty is one declared property of a fast object schema.
type fastProperty struct {
	name     string
	schema   *fastSchema
	required bool
}

// annotationKeywords are keywords that never change whether a value is valid.
var annotationKeywords = map[string]bool{
	"title": true, "description": true, "$comment": true, "default": true, "examples": true,
}

// compileFast builds a fast checker from a decoded JSON schema that already
// compiled with jsonschema. It returns nil, meaning "always use the full
// validator", for anything outside the supported subset.
func compileFast(doc any) *fastSchema {
	f, ok := buildFast(doc, 1)
	if !ok {
		return nil
	}
	return f
}

// buildFast builds the node for one schema object, depth levels deep.
func buildFast(doc any, depth int) (*fastSchema, bool) {
	obj, ok := doc.(map[string]any)
	if !ok || depth > fastMaxDepth {
		return nil, false
	}
	f := &fastSchema{types: typeAny}
	var required []string
	for key, val := range obj {
		switch {
		case key == "type":
			f.types, ok = buildTypes(val)
		case key == "enum":
			f.enum, ok = stringList(val)
			f.hasEnum = true
		case key == "properties":
			ok = f.buildProperties(val, depth)
		case key == "required":
			required, ok = stringList(val)
		case key == "additionalProperties":
			var allowed bool
			allowed, ok = val.(bool)
			f.closed = !allowed
		case key == "items":
			f.items, ok = buildFast(val, depth+1)
		case annotationKeywords[key]:
		default:
			return nil, false
		}
		if !ok {
			return nil, false
		}
	}

	// Mark the required properties; a required name that is not declared
	// is left to the full validator.
	for _, name := range required {
		i, ok := f.propIndex[name]
		if !ok {
			return nil, false
		}
		f.props[i].required = true
		f.requiredMask |= 1 << i
	}
	return f, true
}

// buildProperties adds the schemas of a "properties" keyword to f.
func (f *fastSchema) buildProperties(val any, depth int) bool {
	props, ok := val.(map[string]any)
	if !ok || len(props) > fastMaxProperties {
		return false
	}
	f.propIndex = make(map[string]int, len(props))
	for name, doc := range props {
		sub, ok := buildFast(doc, depth+1)
		if !ok {
			return false
		}
		f.propIndex[name] = len(f.props)
		f.props = append(f.props, fastProperty{name: name, schema: sub})
	}
	return true
}

// buildTypes reads a "type" keyword: one name or a list of names.
func buildTypes(val any) (typeSet, bool) {
	if name, ok := val.(string); ok {
		t, ok := typeNames[name]
		return t, ok
	}
	names, ok := stringList(val)
	if !ok {
		return 0, false
	}
	var types typeSet
	for _, name := range names {
		t, ok := typeNames[name]
		if !ok {
			return 0, false
		}
		types |= t
	}
	return types, true
}

// stringList reads a JSON array whose items are all strings.
func stringList(val any) ([]string, bool) {
	items, ok := val.([]any)
	if !ok {
		return nil, false
	}
	list := make([]string, 0, len(items))
	for _, item := range items {
		s, ok := item.(string)
		if !ok {
			return nil, false
		}
		list = append(list, s)
	}
	return list, true
}

// validValue reports whether a decoded JSON value surely matches f. It
// knows the types encoding/json and go-json decode to: nil, bool, float64,
// json.Number, string, []any and map[string]any.
func (f *fastSchema) validValue(v any) bool {
	switch v := v.(type) {
	case nil:
		return f.types&typeNull != 0 && !f.hasEnum
	case bool:
		return f.types&typeBoolean != 0 && !f.hasEnum
	case float64:
		return !f.hasEnum && f.numberAllowed(float64IsNumber(v), float64IsInteger(v))
	case json.Number:
		isNumber, isInteger := numberLiteral(v)
		return !f.hasEnum && f.numberAllowed(isNumber, isInteger)
	case string:
		return f.types&typeString != 0 && f.enumHas(v)
	case []any:
		if f.types&typeArray == 0 || f.hasEnum {
			return false
		}
		if f.items != nil {
			for _, item := range v {
				if !f.items.validValue(item) {
					return false
				}
			}
		}
		return true
	case map[string]any:
		return f.types&typeObject != 0 && !f.hasEnum && f.validObject(v)
	default:
		return false
	}
}

// validObject checks the properties of an object value.
func (f *fastSchema) validObject(obj map[string]any) bool {
	found := 0
	for i := range f.props {
		p := &f.props[i]
		val, ok := obj[p.name]
		if !ok {
			if p.required {
				return false
			}
			continue
		}
		found++
		if !p.schema.validValue(val) {
			return false
		}
	}
	// Map keys are unique, so a closed object has no other key exactly
	// when every key was a declared property.
	return !f.closed || found == len(obj)
}

// numberAllowed reports whether a number passes the type check of f, given
// whether it is a valid number and surely a whole one.
func (f *fastSchema) numberAllowed(isNumber, isInteger bool) bool {
	if !isNumber {
		return false
	}
	return f.types&typeNumber != 0 || (f.types&typeInteger != 0 && isInteger)
}

// enumHas reports whether s is allowed by the enum of f, if it has one.
func (f *fastSchema) enumHas(s string) bool {
	if !f.hasEnum {
		return true
	}
	for _, e := range f.enum {
		if e == s {
			return true
		}
	}
	return false
}

// float64IsNumber reports whether the full validator takes v as a number:
// NaN and infinities are not JSON values.
func float64IsNumber(v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0)
}

// float64IsInteger reports whether v is surely an integer. Whole numbers of
// 2^53 and more are left to the full validator.
func float64IsInteger(v float64) bool {
	return v == math.Trunc(v) && math.Abs(v) < maxExactFloat
}

// numberLiteral checks that s is a JSON number literal and reports whether
// it is surely an integer: "3", "-0", "3.0", "1e2" and "150e-1" are. The
// full validator reads the literal with big.Rat, which gives up on exponents
// past a million; so a literal with more than maxFastFraction fraction
// digits or maxFastExponent exponent digits is "not surely an integer".
func numberLiteral[T ~string | ~[]byte](s T) (isNumber, isInteger bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}

	// The integer part: 0, or digits not starting with 0.
	start := i
	if i < len(s) && s[i] == '0' {
		i++
	} else {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i == start {
		return false, false
	}
	intPart := s[start:i]

	// The fraction.
	var frac T
	if i < len(s) && s[i] == '.' {
		i++
		fs := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == fs {
			return false, false
		}
		frac = s[fs:i]
	}

	// The exponent.
	exp, expDigits, negExp := 0, 0, false
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			negExp = s[i] == '-'
			i++
		}
		es := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if expDigits < maxFastExponent {
				exp = exp*10 + int(s[i]-'0')
			}
			expDigits++
			i++
		}
		if i == es {
			return false, false
		}
	}
	if i != len(s) {
		return false, false
	}
	if len(frac) == 0 && expDigits == 0 {
		return true, true
	}
	if expDigits > maxFastExponent || len(frac) > maxFastFraction {
		return true, false
	}
	if negExp {
		exp = -exp
	}
	return true, wholeDecimal(intPart, frac, exp)
}

// wholeDecimal reports whether intPart.frac × 10^exp is a whole number:
// whether the exponent, less the fraction's length, plus the trailing zeros
// of all the digits is not negative, or the number is zero.
func wholeDecimal[T ~string | ~[]byte](intPart, frac T, exp int) bool {
	zeros := trailingZeros(frac)
	if zeros == len(frac) {
		zeros += trailingZeros(intPart)
	}
	if zeros == len(intPart)+len(frac) {
		return true // zero
	}
	return exp-len(frac)+zeros >= 0
}

// trailingZeros counts the '0' digits at the end of digits.
func trailingZeros[T ~string | ~[]byte](digits T) int {
	n := 0
	for n < len(digits) && digits[len(digits)-1-n] == '0' {
		n++
	}
	return n
}

// rawChecker reads one JSON document and checks it against a fast schema
// as it goes, without building values. It accepts a subset of what
// decodeJSON accepts: strict JSON, one document, surrounded by whitespace.
type rawChecker struct {
	b   []byte
	pos int
}

// validJSON reports whether raw surely decodes and matches f.
func (f *fastSchema) validJSON(raw []byte) bool {
	c := rawChecker{b: raw}
	c.skipSpace()
	if !c.value(f, 0) {
		return false
	}
	c.skipSpace()
	return c.pos == len(c.b)
}

// value checks the value at the cursor against f and moves past it; a nil
// f accepts any JSON value.
func (c *rawChecker) value(f *fastSchema, depth int) bool {
	if depth > fastMaxDepth || c.pos >= len(c.b) {
		return false
	}
	types, hasEnum := typeAny, false
	if f != nil {
		types, hasEnum = f.types, f.hasEnum
	}
	switch ch := c.b[c.pos]; {
	case ch == '{':
		return types&typeObject != 0 && !hasEnum && c.object(f, depth)
	case ch == '[':
		if types&typeArray == 0 || hasEnum {
			return false
		}
		var items *fastSchema
		if f != nil {
			items = f.items
		}
		return c.array(items, depth)
	case ch == '"':
		s, plain, ok := c.str()
		if !ok || types&typeString == 0 {
			return false
		}
		// An enum compares decoded strings, which equal the raw bytes
		// only without escapes and invalid UTF-8.
		return !hasEnum || (plain && utf8.Valid(s) && f.enumHas(string(s)))
	case ch == 't':
		return types&typeBoolean != 0 && !hasEnum && c.literal("true")
	case ch == 'f':
		return types&typeBoolean != 0 && !hasEnum && c.literal("false")
	case ch == 'n':
		return types&typeNull != 0 && !hasEnum && c.literal("null")
	case ch == '-' || (ch >= '0' && ch <= '9'):
		start := c.pos
		for c.pos < len(c.b) && isNumberByte(c.b[c.pos]) {
			c.pos++
		}
		isNumber, isInteger := numberLiteral(c.b[start:c.pos])
		if !isNumber || hasEnum {
			return false
		}
		return types&typeNumber != 0 || (types&typeInteger != 0 && isInteger)
	default:
		return false
	}
}

// object checks the object at the cursor against f (nil: any object).
func (c *rawChecker) object(f *fastSchema, depth int) bool {
	c.pos++ // {
	c.skipSpace()
	var seen uint64
	if c.peek('}') {
		c.pos++
		return f == nil || f.requiredMask == 0
	}
	for {
		// The key; keys with escapes or invalid UTF-8 are left to the full
		// validator, since their decoded form differs from their bytes.
		if !c.peek('"') {
			return false
		}
		key, plain, ok := c.str()
		if !ok || !plain || !utf8.Valid(key) {
			return false
		}
		c.skipSpace()
		if !c.peek(':') {
			return false
		}
		c.pos++
		c.skipSpace()

		// The value, checked against its property. A repeated key is
		// checked each time, so whichever copy a decoder keeps is valid.
		var sub *fastSchema
		if f != nil {
			i, declared := f.propIndex[string(key)]
			switch {
			case declared:
				sub = f.props[i].schema
				seen |= 1 << i
			case f.closed:
				return false
			}
		}
		if !c.value(sub, depth+1) {
			return false
		}

		// A comma and the next key, or the end.
		more, ok := c.listNext('}')
		if !ok {
			return false
		}
		if !more {
			return f == nil || seen&f.requiredMask == f.requiredMask
		}
	}
}

// array checks the array at the cursor, each item against items (nil: any).
func (c *rawChecker) array(items *fastSchema, depth int) bool {
	c.pos++ // [
	c.skipSpace()
	if c.peek(']') {
		c.pos++
		return true
	}
	for {
		if !c.value(items, depth+1) {
			return false
		}
		if more, ok := c.listNext(']'); !ok || !more {
			return ok
		}
	}
}

// listNext consumes what follows an object member or array item: a comma
// and the space after it (more: another one follows) or the closing end
// byte; ok is false when it is neither.
func (c *rawChecker) listNext(end byte) (more, ok bool) {
	c.skipSpace()
	switch {
	case c.peek(','):
		c.pos++
		c.skipSpace()
		return true, true
	case c.peek(end):
		c.pos++
		return false, true
	}
	return false, false
}

// str moves past the string at the cursor and returns its raw content,
// whether it has no escapes, and whether it is a well-formed JSON string.
func (c *rawChecker) str() (s []byte, plain, ok bool) {
	c.pos++ // "
	start, plain := c.pos, true
	for c.pos < len(c.b) {
		ch := c.b[c.pos]
		switch {
		case ch == '"':
			s = c.b[start:c.pos]
			c.pos++
			return s, plain, true
		case ch < 0x20:
			return nil, false, false
		case ch == '\\':
			plain = false
			if !c.escape() {
				return nil, false, false
			}
			continue
		}
		c.pos++
	}
	return nil, false, false
}

// escape moves past one well-formed escape sequence at the cursor.
func (c *rawChecker) escape() bool {
	c.pos++ // backslash
	if c.pos >= len(c.b) {
		return false
	}
	switch c.b[c.pos] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		c.pos++
		return true
	case 'u':
		if c.pos+5 > len(c.b) {
			return false
		}
		for _, h := range c.b[c.pos+1 : c.pos+5] {
			if !isHexDigit(h) {
				return false
			}
		}
		c.pos += 5
		return true
	}
	return false
}

// literal moves past word (true, false or null) at the cursor.
func (c *rawChecker) literal(word string) bool {
	if len(c.b)-c.pos < len(word) || string(c.b[c.pos:c.pos+len(word)]) != word {
		return false
	}
	c.pos += len(word)
	return true
}

// peek reports whether the byte at the cursor is ch.
func (c *rawChecker) peek(ch byte) bool {
	return c.pos < len(c.b) && c.b[c.pos] == ch
}

// skipSpace moves past JSON whitespace.
func (c *rawChecker) skipSpace() {
	for c.pos < len(c.b) {
		switch c.b[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

// isNumberByte reports whether ch may appear in a JSON number literal.
func isNumberByte(ch byte) bool {
	return (ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' || ch == 'E'
}

// isHexDigit reports whether ch is a hexadecimal digit.
func isHexDigit(ch byte) bool {
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')
}
