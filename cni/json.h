/* A strict JSON scanner for the NovaNet CNI client: validates a document and finds members in it.
 *
 * Why not a JSON library: the client never builds or changes a document. It validates the
 * runtime's config, reads a handful of members, and forwards the config *as the runtime wrote
 * it* (whitespace removed, so it fits the agent's one-line framing) for the agent's Python json
 * to interpret. A DOM library would re-serialise numbers (1e400, 2**70, 0.1) and strings on the
 * way, so what the agent sees would differ from what the runtime sent; Debian's json-c and
 * jansson both do, and jansson refuses integers beyond 64 bits that Python accepts. What this
 * needs is only a validator with spans, kept identical in what it accepts to Python's
 * ``json.loads`` (strict strings, NaN/Infinity, UTF-8): tests/unit/test_cni_json.py fuzzes it
 * against Python's json with hypothesis.
 */
#ifndef NOVANET_CNI_JSON_H
#define NOVANET_CNI_JSON_H

#include <stddef.h>

/* Deeper nesting is refused. Python's json stops at its recursion limit (1000 frames, less the
 * caller's), so the two clients differ only for documents nested 900 to ~990 deep. */
#define JSON_MAX_DEPTH 900

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

/* A value inside a validated document: its type and its text (strings include the quotes). */
struct json_val {
	enum json_type type;
	const char *p;
	size_t n;
};

/* Validates s[0..n) as one JSON document (UTF-8, surrounding whitespace allowed).
 * Returns 0 and sets *root, or -1 with *err_at (byte offset) and *err (a static message). */
int json_parse(const char *s, size_t n, struct json_val *root, size_t *err_at, const char **err);

/* Member `key` of an object (the last one when repeated, as Python's dict keeps it); 0 if found. */
int json_get(const struct json_val *obj, const char *key, struct json_val *out);

/* Iterate an array: *it starts at NULL; returns 1 and sets *out while there are elements. */
int json_next(const struct json_val *arr, const char **it, struct json_val *out);

/* Decodes a string value into out (UTF-8, NUL-terminated; \u escapes of lone surrogates are
 * written as their 3-byte form). Returns the decoded length, or -1 if cap is too small. */
long json_str(const struct json_val *v, char *out, size_t cap);

/* Whether a number is an integer in Python's sense (no fraction, no exponent, not NaN/Infinity). */
int json_is_int(const struct json_val *v);

/* Writes v's text without the whitespace between tokens into out (cap >= v->n); returns length. */
size_t json_compact(const struct json_val *v, char *out);

#endif
