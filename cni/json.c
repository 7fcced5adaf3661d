/* Strict JSON scanner with spans (see json.h for why the client has its own). */
#include "json.h"

#include <string.h>

struct parser {
	const char *s, *end, *p;
	const char *err;
};

static int fail(struct parser *ps, const char *at, const char *msg)
{
	if (!ps->err) {
		ps->err = msg;
		ps->p = at;
	}
	return -1;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Length of the valid UTF-8 sequence at p (strict: no overlongs, no surrogates, <= U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	size_t need;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 1;
	else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;
		if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if ((size_t)(end - p) <= need)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i <= need; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return need + 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_string(struct parser *ps)
{
	const char *p = ps->p + 1; /* after the opening quote */
	while (p < ps->end) {
		unsigned char c = (unsigned char)*p;
		if (c == '"') {
			ps->p = p + 1;
			return 0;
		}
		if (c < 0x20)
			return fail(ps, p, "Invalid control character in string");
		if (c == '\\') {
			if (p + 1 >= ps->end)
				break;
			char e = p[1];
			if (e == 'u') {
				if (ps->end - p < 6)
					return fail(ps, p, "Invalid \\uXXXX escape");
				for (int i = 2; i < 6; i++)
					if (hexval(p[i]) < 0)
						return fail(ps, p, "Invalid \\uXXXX escape");
				p += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", e) || e == 0)
				return fail(ps, p, "Invalid \\escape");
			p += 2;
			continue;
		}
		p++; /* UTF-8 was checked for the whole document up front */
	}
	return fail(ps, ps->p, "Unterminated string");
}

static int match(struct parser *ps, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
		ps->p += n;
		return 1;
	}
	return 0;
}

static int is_digit(const char *p, const char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

/* Python's NUMBER_RE: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? ; an incomplete fraction or
 * exponent is not part of the number (and so is the next token, which is then an error). */
static int parse_number(struct parser *ps)
{
	const char *p = ps->p, *end = ps->end;
	if (p < end && *p == '-')
		p++;
	if (!is_digit(p, end))
		return fail(ps, ps->p, "Expecting value");
	if (*p == '0')
		p++;
	else
		while (is_digit(p, end))
			p++;
	if (p < end && *p == '.' && is_digit(p + 1, end)) {
		p++;
		while (is_digit(p, end))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		const char *q = p + 1;
		if (q < end && (*q == '+' || *q == '-'))
			q++;
		if (is_digit(q, end)) {
			p = q;
			while (is_digit(p, end))
				p++;
		}
	}
	ps->p = p;
	return 0;
}

static int parse_value(struct parser *ps, int depth, struct json_val *out);

static int parse_container(struct parser *ps, int depth, char close)
{
	ps->p++;
	ps->p = skip_ws(ps->p, ps->end);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return 0;
	}
	for (;;) {
		if (close == '}') {
			if (ps->p >= ps->end || *ps->p != '"')
				return fail(ps, ps->p, "Expecting property name enclosed in double quotes");
			if (parse_string(ps))
				return -1;
			ps->p = skip_ws(ps->p, ps->end);
			if (ps->p >= ps->end || *ps->p != ':')
				return fail(ps, ps->p, "Expecting ':' delimiter");
			ps->p = skip_ws(ps->p + 1, ps->end);
		}
		if (parse_value(ps, depth + 1, NULL))
			return -1;
		ps->p = skip_ws(ps->p, ps->end);
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			return 0;
		}
		if (ps->p >= ps->end || *ps->p != ',')
			return fail(ps, ps->p, "Expecting ',' delimiter");
		ps->p = skip_ws(ps->p + 1, ps->end);
	}
}

static int parse_value(struct parser *ps, int depth, struct json_val *out)
{
	const char *start = ps->p;
	enum json_type t;
	if (depth > JSON_MAX_DEPTH)
		return fail(ps, ps->p, "Nesting too deep");
	if (ps->p >= ps->end)
		return fail(ps, ps->p, "Expecting value");
	switch (*ps->p) {
	case '"':
		t = JSON_STRING;
		if (parse_string(ps))
			return -1;
		break;
	case '{':
		t = JSON_OBJECT;
		if (parse_container(ps, depth, '}'))
			return -1;
		break;
	case '[':
		t = JSON_ARRAY;
		if (parse_container(ps, depth, ']'))
			return -1;
		break;
	default:
		if (match(ps, "null"))
			t = JSON_NULL;
		else if (match(ps, "true") || match(ps, "false"))
			t = JSON_BOOL;
		else if (match(ps, "NaN") || match(ps, "Infinity") || match(ps, "-Infinity"))
			t = JSON_NUMBER;
		else {
			t = JSON_NUMBER;
			if (parse_number(ps))
				return -1;
		}
	}
	if (out) {
		out->type = t;
		out->p = start;
		out->n = (size_t)(ps->p - start);
	}
	return 0;
}

int json_parse(const char *s, size_t n, struct json_val *root, size_t *err_at, const char **err)
{
	struct parser ps = {s, s + n, s, NULL};
	for (const char *p = s; p < s + n;) {
		size_t l = utf8_len((const unsigned char *)p, (const unsigned char *)s + n);
		if (!l) {
			*err_at = (size_t)(p - s);
			*err = "Invalid UTF-8";
			return -1;
		}
		p += l;
	}
	ps.p = skip_ws(s, ps.end);
	if (parse_value(&ps, 0, root) == 0) {
		ps.p = skip_ws(ps.p, ps.end);
		if (ps.p == ps.end)
			return 0;
		fail(&ps, ps.p, "Extra data");
	}
	*err_at = (size_t)(ps.p - s);
	*err = ps.err;
	return -1;
}

/* On a validated document: the end of the value starting at p. */
static const char *skip_value(const char *p, const char *end)
{
	struct parser ps = {p, end, p, NULL};
	parse_value(&ps, 0, NULL);
	return ps.p;
}

/* Walks a validated container: sets *key (objects) and *val for the element after *it. */
static int next_item(const struct json_val *c, const char **it, struct json_val *key, struct json_val *val)
{
	const char *end = c->p + c->n - 1; /* the closing bracket */
	const char *p = *it ? *it : c->p + 1;
	p = skip_ws(p, end);
	if (*p == ',')
		p = skip_ws(p + 1, end);
	if (p >= end)
		return 0;
	if (c->type == JSON_OBJECT) {
		const char *k = p;
		p = skip_value(p, end);
		key->type = JSON_STRING;
		key->p = k;
		key->n = (size_t)(p - k);
		p = skip_ws(p, end);
		p = skip_ws(p + 1, end); /* the ':' */
	}
	struct parser ps = {p, end, p, NULL};
	parse_value(&ps, 0, val);
	*it = ps.p;
	return 1;
}

int json_next(const struct json_val *arr, const char **it, struct json_val *out)
{
	struct json_val key;
	if (arr->type != JSON_ARRAY)
		return 0;
	return next_item(arr, it, &key, out);
}

static int str_eq(const struct json_val *s, const char *key)
{
	char buf[256];
	size_t kn = strlen(key);
	if (kn >= sizeof buf)
		return 0;
	long n = json_str(s, buf, sizeof buf);
	return n == (long)kn && memcmp(buf, key, kn) == 0;
}

int json_get(const struct json_val *obj, const char *key, struct json_val *out)
{
	const char *it = NULL;
	struct json_val k, v;
	int found = 0;
	if (obj->type != JSON_OBJECT)
		return -1;
	while (next_item(obj, &it, &k, &v))
		if (str_eq(&k, key)) {
			*out = v;
			found = 1;
		}
	return found ? 0 : -1;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

static unsigned hex4(const char *p)
{
	return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

long json_str(const struct json_val *v, char *out, size_t cap)
{
	size_t o = 0;
	const char *p = v->p + 1, *end = v->p + v->n - 1;
	if (v->type != JSON_STRING)
		return -1;
	while (p < end) {
		char tmp[4];
		size_t l;
		if (*p != '\\') {
			tmp[0] = *p++;
			l = 1;
		} else if (p[1] == 'u') {
			unsigned cp = hex4(p + 2);
			p += 6;
			/* A surrogate pair is one code point, as Python decodes it. */
			if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
				unsigned lo = hex4(p + 2);
				if (lo >= 0xDC00 && lo <= 0xDFFF) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					p += 6;
				}
			}
			l = put_utf8(tmp, cp);
		} else {
			const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
			tmp[0] = to[strchr(from, p[1]) - from];
			l = 1;
			p += 2;
		}
		if (o + l >= cap)
			return -1;
		memcpy(out + o, tmp, l);
		o += l;
	}
	out[o] = 0;
	return (long)o;
}

int json_is_int(const struct json_val *v)
{
	if (v->type != JSON_NUMBER)
		return 0;
	for (size_t i = 0; i < v->n; i++)
		if (strchr(".eENI", v->p[i]))
			return 0;
	return 1;
}

size_t json_compact(const struct json_val *v, char *out)
{
	size_t o = 0;
	int in_str = 0;
	for (size_t i = 0; i < v->n; i++) {
		char c = v->p[i];
		if (in_str) {
			if (c == '\\') {
				out[o++] = c;
				c = v->p[++i];
			} else if (c == '"')
				in_str = 0;
		} else if (c == '"')
			in_str = 1;
		else if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		out[o++] = c;
	}
	return o;
}
