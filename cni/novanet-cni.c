/* novanet-cni: the CNI plugin a node's container runtime executes, a thin client of the agent.
 *
 * Why C and not Python: the runtime (kubelet's containerd/CRI-O, podman) executes this file on
 * the host, outside every container. Many node OSes have no Python at all (Flatcar, Bottlerocket,
 * Talos, COS), and a Python launcher would need the interpreter and site-packages of the image
 * that installed it, which do not exist on the host. A static binary needs nothing but the
 * kernel: no interpreter, no shared libraries, no file of the NovaNet image.
 *
 * It does exactly what the reference client novanet_core/cni/client.py does (same checks, same
 * messages, same error codes; tests/integration/test_cni_conformance.py runs the whole suite
 * against both): validate the CNI_* environment and the config on stdin, send one request to the
 * agent's CNI socket (the local API: one JSON object per line), print what the agent answers.
 * It changes nothing on the node itself; results are already rendered by the agent at the
 * config's cniVersion (novanet_core/cni/versions.py). When the agent is down, DEL leaves a
 * tombstone in <socket dir>/pending-del/ that the agent carries out when it starts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "json.h"

#define SPEC_VERSION "1.1.0"
#define DEFAULT_AGENT_SOCKET "/run/novanet/cni.sock"
#define DEFAULT_AGENT_TIMEOUT 60.0
#define MAX_BYTES (16 * 1024 * 1024) /* the agent's line limit */
#define API_VERSION 1

enum {
	ERR_INCOMPATIBLE_VERSION = 1,
	ERR_INVALID_ENV = 4,
	ERR_IO = 5,
	ERR_DECODE = 6,
	ERR_INVALID_CONFIG = 7,
	ERR_TRY_AGAIN_LATER = 11,
	ERR_NOT_AVAILABLE = 50,
	ERR_INTERNAL = 100,
};

static const char *const VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", NULL};
static const char *const COMMANDS[] = {"ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", NULL};

/* ------------------------------------------------------------------ growable buffer */

struct buf {
	char *p;
	size_t n, cap;
};

static void need(struct buf *b, size_t extra)
{
	if (b->n + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->n + extra + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		fputs("novanet-cni: out of memory\n", stderr);
		exit(1);
	}
	b->p = p;
	b->cap = cap;
}

static void put(struct buf *b, const char *s, size_t n)
{
	need(b, n);
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void printf_(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	need(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)n;
}

/* ------------------------------------------------------------------ text, as Python renders it */

/* Decode the UTF-8 code point at s (valid UTF-8 assumed: see sanitize()); returns its length. */
static size_t codepoint(const unsigned char *s, unsigned *cp)
{
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] < 0xE0) {
		*cp = (unsigned)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
		return 2;
	}
	if (s[0] < 0xF0) {
		*cp = (unsigned)(s[0] & 0x0F) << 12 | (unsigned)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
		return 3;
	}
	*cp = (unsigned)(s[0] & 0x07) << 18 | (unsigned)(s[1] & 0x3F) << 12 | (unsigned)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
	return 4;
}

/* Environment strings decoded the way Python decodes them with errors="replace": each maximal
 * invalid subsequence becomes one U+FFFD. */
static char *sanitize(const char *in)
{
	struct buf b = {0};
	const unsigned char *s = (const unsigned char *)in;
	puts_(&b, "");
	while (*s) {
		unsigned char c = *s;
		size_t len = 0, got = 1;
		unsigned char lo = 0x80, hi = 0xBF;
		if (c < 0x80)
			len = 1;
		else if (c >= 0xC2 && c <= 0xDF)
			len = 2;
		else if (c >= 0xE0 && c <= 0xEF) {
			len = 3;
			lo = c == 0xE0 ? 0xA0 : 0x80;
			hi = c == 0xED ? 0x9F : 0xBF;
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4;
			lo = c == 0xF0 ? 0x90 : 0x80;
			hi = c == 0xF4 ? 0x8F : 0xBF;
		}
		if (len > 1) {
			if (s[1] >= lo && s[1] <= hi) {
				got = 2;
				while (got < len && s[got] >= 0x80 && s[got] <= 0xBF)
					got++;
			}
		}
		if (len && got == len)
			put(&b, (const char *)s, len);
		else
			puts_(&b, "\xEF\xBF\xBD");
		s += got;
	}
	return b.p;
}

/* A JSON string literal as Python's json.dumps writes it (ensure_ascii). */
static void put_json_str(struct buf *b, const char *s)
{
	puts_(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		unsigned cp;
		p += codepoint(p, &cp);
		switch (cp) {
		case '"': puts_(b, "\\\""); break;
		case '\\': puts_(b, "\\\\"); break;
		case '\n': puts_(b, "\\n"); break;
		case '\r': puts_(b, "\\r"); break;
		case '\t': puts_(b, "\\t"); break;
		case '\b': puts_(b, "\\b"); break;
		case '\f': puts_(b, "\\f"); break;
		default:
			if (cp < 0x20 || (cp > 0x7E && cp != 0x7F)) {
				if (cp >= 0x10000) {
					cp -= 0x10000;
					printf_(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
				} else
					printf_(b, "\\u%04x", cp);
			} else {
				char c = (char)cp;
				put(b, &c, 1);
			}
		}
	}
	puts_(b, "\"");
}

/* Python's ascii() of a str, for the messages that quote the input (the reference client uses
 * ascii(), not repr(): repr's "printable" depends on the Unicode tables of the interpreter). */
static void put_repr_n(struct buf *b, const char *s, size_t n)
{
	char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
	put(b, &q, 1);
	for (const unsigned char *p = (const unsigned char *)s; p < (const unsigned char *)s + n;) {
		unsigned cp;
		size_t l = codepoint(p, &cp);
		if (cp == '\\')
			puts_(b, "\\\\");
		else if (cp == (unsigned)q)
			printf_(b, "\\%c", q);
		else if (cp == '\n')
			puts_(b, "\\n");
		else if (cp == '\r')
			puts_(b, "\\r");
		else if (cp == '\t')
			puts_(b, "\\t");
		else if (cp < 0x20 || (cp >= 0x7F && cp < 0x100))
			printf_(b, "\\x%02x", cp);
		else if (cp >= 0x100 && cp < 0x10000)
			printf_(b, "\\u%04x", cp);
		else if (cp >= 0x10000)
			printf_(b, "\\U%08x", cp);
		else
			put(b, (const char *)p, l);
		p += l;
	}
	put(b, &q, 1);
}

static void put_repr(struct buf *b, const char *s)
{
	put_repr_n(b, s, strlen(s));
}

/* ------------------------------------------------------------------ errors and output */

static const char *version = SPEC_VERSION; /* the config's version once known: errors carry it */

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void emit(struct buf *b)
{
	puts_(b, "\n");
	write_all(1, b->p, b->n);
}

__attribute__((noreturn)) static void cni_fail(int code, const char *msg, const char *details)
{
	struct buf b = {0};
	puts_(&b, "{\"cniVersion\":");
	put_json_str(&b, version);
	printf_(&b, ",\"code\":%d,\"msg\":", code);
	put_json_str(&b, msg);
	if (details && *details) {
		puts_(&b, ",\"details\":");
		put_json_str(&b, details);
	}
	puts_(&b, "}");
	emit(&b);
	exit(1);
}

/* ------------------------------------------------------------------ environment */

struct request {
	const char *cmd;
	char *cid, *ifname, *netns;
	struct buf args; /* JSON object text */
	int has_attachment;
};

static int is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static size_t n_chars(const char *s)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p & 0xC0) != 0x80;
	return n;
}

static char *env(const char *name)
{
	const char *v = getenv(name);
	return sanitize(v ? v : "");
}

static void validate_env(struct request *r)
{
	char *cmd = env("CNI_COMMAND");
	struct buf m = {0};
	r->cmd = NULL;
	for (int i = 0; COMMANDS[i]; i++)
		if (!strcmp(cmd, COMMANDS[i]))
			r->cmd = COMMANDS[i];
	if (!r->cmd) {
		puts_(&m, "CNI_COMMAND must be one of ADD, DEL, CHECK, VERSION, STATUS, GC, got ");
		put_repr(&m, cmd);
		cni_fail(ERR_INVALID_ENV, m.p, NULL);
	}
	r->has_attachment = !strcmp(cmd, "ADD") || !strcmp(cmd, "DEL") || !strcmp(cmd, "CHECK");
	if (!r->has_attachment)
		return;
	r->cid = env("CNI_CONTAINERID");
	r->ifname = env("CNI_IFNAME");
	r->netns = env("CNI_NETNS");
	const char *names[] = {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"};
	const char *vals[] = {r->cid, r->ifname, r->netns};
	int missing = 0;
	for (int i = 0; i < (strcmp(cmd, "DEL") ? 3 : 2); i++)
		if (!*vals[i]) {
			if (!missing++)
				printf_(&m, "required environment variable(s) missing for %s: ", cmd);
			else
				puts_(&m, ", ");
			puts_(&m, names[i]);
		}
	if (missing)
		cni_fail(ERR_INVALID_ENV, m.p, NULL);
	int ok = is_alnum((unsigned char)r->cid[0]);
	for (const char *p = r->cid; ok && *p; p++)
		ok = is_alnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-';
	if (!ok) {
		puts_(&m, "CNI_CONTAINERID ");
		put_repr(&m, r->cid);
		puts_(&m, " must start with a letter or digit and contain only letters, digits, '_', '.', '-'");
		cni_fail(ERR_INVALID_ENV, m.p, NULL);
	}
	if (n_chars(r->ifname) > 15 || !strcmp(r->ifname, ".") || !strcmp(r->ifname, "..") ||
	    strpbrk(r->ifname, "/: \t\n")) {
		puts_(&m, "CNI_IFNAME ");
		put_repr(&m, r->ifname);
		puts_(&m, " is not a valid interface name");
		cni_fail(ERR_INVALID_ENV, m.p, NULL);
	}
	/* CNI_ARGS "K=V;K2=V2" as a JSON object (a repeated key: the agent's json keeps the last). */
	char *raw = env("CNI_ARGS");
	puts_(&r->args, "{");
	int first = 1;
	for (char *part = raw, *next; part; part = next) {
		next = strchr(part, ';');
		if (next)
			*next++ = 0;
		if (!*part)
			continue;
		char *eq = strchr(part, '=');
		if (!eq) {
			puts_(&m, "CNI_ARGS entry ");
			put_repr(&m, part);
			puts_(&m, " is not KEY=VALUE");
			cni_fail(ERR_INVALID_ENV, m.p, NULL);
		}
		*eq = 0;
		if (!first)
			puts_(&r->args, ",");
		first = 0;
		put_json_str(&r->args, part);
		puts_(&r->args, ":");
		put_json_str(&r->args, eq + 1);
	}
	puts_(&r->args, "}");
}

/* ------------------------------------------------------------------ config */

struct config {
	struct json_val root;
	char socket[65536];
	double timeout;
};

static const char *supported(const char *v)
{
	for (int i = 0; VERSIONS[i]; i++)
		if (!strcmp(v, VERSIONS[i]))
			return VERSIONS[i];
	return NULL;
}

static int version_lt(const char *v, int a, int b, int c)
{
	int x = 0, y = 0, z = 0;
	sscanf(v, "%d.%d.%d", &x, &y, &z);
	return x != a ? x < a : y != b ? y < b : z < c;
}

/* A string member decoded (never longer than its JSON text); *len counts an embedded NUL too. */
static char *str_dup_n(const struct json_val *v, size_t *len)
{
	char *s = malloc(v->n + 1);
	long n = s ? json_str(v, s, v->n + 1) : -1;
	if (n < 0) {
		fputs("novanet-cni: out of memory\n", stderr);
		exit(1);
	}
	if (len)
		*len = (size_t)n;
	return s;
}

static char *str_dup(const struct json_val *v)
{
	return str_dup_n(v, NULL);
}

/* A string member, decoded, and its length; NULL when absent or not a string. */
static const char *member_str(const struct json_val *obj, const char *key, size_t *len)
{
	struct json_val v;
	return json_get(obj, key, &v) == 0 && v.type == JSON_STRING ? str_dup_n(&v, len) : NULL;
}

static double number(const struct json_val *v)
{
	char tmp[512];
	if (v->n >= sizeof tmp)
		return v->p[0] == '-' ? -1e308 * 10 : 1e308 * 10; /* beyond any range checked here */
	memcpy(tmp, v->p, v->n);
	tmp[v->n] = 0;
	if (!strcmp(tmp, "NaN"))
		return 0.0 / 0.0;
	return strtod(tmp, NULL); /* "Infinity" / "-Infinity" included */
}

static void validate_config(const char *cmd, struct config *c)
{
	struct json_val v;
	struct buf m = {0};
	const char *s;
	size_t n;
	const struct json_val *o = &c->root;
	if (o->type != JSON_OBJECT)
		cni_fail(ERR_INVALID_CONFIG, "network configuration must be a JSON object", NULL);
	if (!(s = member_str(o, "cniVersion", &n)) || !n)
		cni_fail(ERR_INVALID_CONFIG, "cniVersion: required string missing", NULL);
	if (!supported(s) || n != strlen(s)) {
		puts_(&m, "cniVersion ");
		put_repr_n(&m, s, n);
		puts_(&m, " is not supported");
		cni_fail(ERR_INCOMPATIBLE_VERSION, m.p, "supported versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
	}
	if ((!strcmp(cmd, "CHECK") && version_lt(s, 0, 4, 0)) ||
	    ((!strcmp(cmd, "STATUS") || !strcmp(cmd, "GC")) && version_lt(s, 1, 1, 0))) {
		printf_(&m, "config version %s does not allow %s", s, cmd);
		cni_fail(ERR_INCOMPATIBLE_VERSION, m.p, NULL);
	}
	if (!(s = member_str(o, "name", &n)) || !n)
		cni_fail(ERR_INVALID_CONFIG, "name: required string missing", NULL);
	if (!(s = member_str(o, "type", &n)) || !n)
		cni_fail(ERR_INVALID_CONFIG, "type: required string missing", NULL);
	strcpy(c->socket, DEFAULT_AGENT_SOCKET);
	if (json_get(o, "agentSocket", &v) == 0) {
		long n = v.type == JSON_STRING ? json_str(&v, c->socket, sizeof c->socket) : -1;
		if (n < 0 || c->socket[0] != '/' || (size_t)n != strlen(c->socket)) /* no NUL inside */
			cni_fail(ERR_INVALID_CONFIG, "agentSocket: must be an absolute path to the agent's CNI socket", NULL);
	}
	if (json_get(o, "mtu", &v) == 0) {
		double mtu = number(&v);
		if (!json_is_int(&v) || !(mtu >= 576 && mtu <= 9000))
			cni_fail(ERR_INVALID_CONFIG, "mtu: must be an integer 576..9000", NULL);
	}
	c->timeout = DEFAULT_AGENT_TIMEOUT;
	if (json_get(o, "agentTimeout", &v) == 0) {
		c->timeout = v.type == JSON_NUMBER ? number(&v) : 0.0 / 0.0;
		if (!(c->timeout > 0 && c->timeout <= 3600))
			cni_fail(ERR_INVALID_CONFIG, "agentTimeout: must be a number of seconds, 0 < agentTimeout <= 3600", NULL);
	}
	if (!strcmp(cmd, "CHECK") && (json_get(o, "prevResult", &v) || v.type != JSON_OBJECT))
		cni_fail(ERR_INVALID_CONFIG, "prevResult: CHECK needs the result of the ADD", NULL);
	if (!strcmp(cmd, "GC") && json_get(o, "cni.dev/valid-attachments", &v) == 0) {
		const char *it = NULL;
		struct json_val a, id;
		int ok = v.type == JSON_ARRAY;
		while (ok && json_next(&v, &it, &a))
			ok = a.type == JSON_OBJECT && json_get(&a, "containerID", &id) == 0 && id.type == JSON_STRING;
		if (!ok)
			cni_fail(ERR_INVALID_CONFIG, "cni.dev/valid-attachments: must be a list of {containerID, ifname}", NULL);
	}
}

/* ------------------------------------------------------------------ the agent */

struct reply {
	int ok; /* 0: could not reach the agent (why holds the reason) */
	struct buf why;
	struct buf line;
};

static void unreachable(struct reply *r, const char *fmt, const char *path, const char *what)
{
	printf_(&r->why, fmt, path, what);
	r->ok = 0;
}

static const char *why_errno(void)
{
	/* A timeout: the reference client reports Python's "timed out" */
	return errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno);
}

static void call_agent(const char *path, double timeout, const struct buf *req, struct reply *r)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = (time_t)timeout, .tv_usec = (suseconds_t)((timeout - (time_t)timeout) * 1e6)};
	size_t plen = strlen(path);
	r->ok = 1;
	if (plen > sizeof sa.sun_path) {
		unreachable(r, "cannot connect to %s: %s", path, "AF_UNIX path too long");
		return;
	}
	memcpy(sa.sun_path, path, plen);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		unreachable(r, "cannot connect to %s: %s", path, strerror(errno));
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen)) < 0) {
		unreachable(r, "cannot connect to %s: %s", path, why_errno());
		close(fd);
		return;
	}
	for (size_t off = 0; off < req->n;) {
		ssize_t w = send(fd, req->p + off, req->n - off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			unreachable(r, "%s: %s", path, why_errno());
			close(fd);
			return;
		}
		off += (size_t)w;
	}
	for (;;) {
		need(&r->line, 65536);
		ssize_t n = recv(fd, r->line.p + r->line.n, 65536, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			unreachable(r, "%s: %s", path, why_errno());
			break;
		}
		if (n == 0) {
			unreachable(r, "%s: %s", path, "connection closed by the agent");
			break;
		}
		char *nl = memchr(r->line.p + r->line.n, '\n', (size_t)n);
		r->line.n += (size_t)n;
		if (nl) {
			r->line.n = (size_t)(nl - r->line.p);
			break;
		}
		if (r->line.n > MAX_BYTES) {
			printf_(&r->why, "%s: answer longer than %d bytes", path, MAX_BYTES);
			r->ok = 0;
			break;
		}
	}
	close(fd);
}

/* The tombstone the agent processes when it starts: the request it could not take now. */
static void pending_del(const char *sock, const struct request *rq, const struct buf *params)
{
	struct buf dir = {0}, file = {0}, m = {0};
	const char *slash = strrchr(sock, '/');
	put(&dir, sock, (size_t)(slash - sock));
	puts_(&dir, "/pending-del");
	printf_(&file, "%s/%s_%s.json", dir.p, rq->cid, rq->ifname);
	int fd = -1;
	if ((mkdir(dir.p, 0700) == 0 || errno == EEXIST) &&
	    (fd = open(file.p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0) {
		write_all(fd, params->p, params->n);
		if (close(fd) == 0)
			return;
	}
	/* Without the tombstone the DEL would be lost: fail it, so that the runtime retries. */
	printf_(&m, "agent not reachable and the deferred DEL could not be recorded in %s: %s", dir.p, strerror(errno));
	cni_fail(ERR_IO, m.p, NULL);
}

/* ------------------------------------------------------------------ main */

static void read_stdin(struct buf *in, int *too_big)
{
	*too_big = 0;
	puts_(in, "");
	if (isatty(0))
		return;
	for (;;) {
		need(in, 65536);
		ssize_t n = read(0, in->p + in->n, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		in->n += (size_t)n;
		if (in->n > MAX_BYTES) {
			*too_big = 1;
			break;
		}
	}
	in->p[in->n] = 0;
}

/* The config's cniVersion when it is one NovaNet speaks, else NULL. */
static const char *version_of(const struct json_val *root)
{
	struct json_val v;
	char s[64];
	long n;
	if (root->type != JSON_OBJECT || json_get(root, "cniVersion", &v) || v.type != JSON_STRING)
		return NULL;
	n = json_str(&v, s, sizeof s);
	return n >= 0 && (size_t)n == strlen(s) ? supported(s) : NULL;
}

static void cmd_version(const struct buf *in, int too_big)
{
	struct json_val root;
	size_t at;
	const char *err, *ver = NULL;
	if (!too_big && json_parse(in->p, in->n, &root, &at, &err) == 0)
		ver = version_of(&root);
	struct buf o = {0};
	puts_(&o, "{\"cniVersion\":");
	put_json_str(&o, ver ? ver : SPEC_VERSION);
	puts_(&o, ",\"supportedVersions\":[");
	for (int i = 0; VERSIONS[i]; i++)
		printf_(&o, "%s\"%s\"", i ? "," : "", VERSIONS[i]);
	puts_(&o, "]}");
	emit(&o);
}

int main(void)
{
	struct request rq = {0};
	struct buf in = {0}, params = {0}, req = {0}, m = {0};
	struct config conf;
	int too_big;
	size_t at;
	const char *err;

	signal(SIGPIPE, SIG_IGN);
	read_stdin(&in, &too_big);
	validate_env(&rq);
	if (!strcmp(rq.cmd, "VERSION")) {
		cmd_version(&in, too_big);
		return 0;
	}
	if (too_big) {
		printf_(&m, "network configuration on stdin is larger than %d bytes", MAX_BYTES);
		cni_fail(ERR_INVALID_CONFIG, m.p, NULL);
	}
	if (json_parse(in.p, in.n, &conf.root, &at, &err)) {
		printf_(&m, "network configuration on stdin is not valid JSON: %s: char %zu", err, at);
		cni_fail(ERR_DECODE, m.p, NULL);
	}
	if (version_of(&conf.root))
		version = version_of(&conf.root);
	validate_config(rq.cmd, &conf);

	/* params: the request as the reference client builds it, with the config as the runtime wrote it */
	puts_(&params, "{\"command\":");
	put_json_str(&params, rq.cmd);
	if (rq.has_attachment) {
		puts_(&params, ",\"containerID\":");
		put_json_str(&params, rq.cid);
		puts_(&params, ",\"ifname\":");
		put_json_str(&params, rq.ifname);
		puts_(&params, ",\"netns\":");
		put_json_str(&params, rq.netns);
		puts_(&params, ",\"args\":");
		put(&params, rq.args.p, rq.args.n);
	}
	puts_(&params, ",\"config\":");
	need(&params, conf.root.n);
	params.n += json_compact(&conf.root, params.p + params.n);
	puts_(&params, "}");

	char method[16];
	snprintf(method, sizeof method, "cni.%s", rq.cmd);
	for (char *p = method; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	printf_(&req, "{\"v\":%d,\"id\":1,\"method\":\"%s\",\"params\":", API_VERSION, method);
	put(&req, params.p, params.n);
	puts_(&req, "}\n");

	struct reply r = {0};
	call_agent(conf.socket, conf.timeout, &req, &r);
	if (!r.ok) {
		if (!strcmp(rq.cmd, "DEL")) {
			/* Deferred delete ("Pod deletion: Deferred (cleanup on reconcile)"): the agent does
			 * it when it starts; the runtime moves on. */
			pending_del(conf.socket, &rq, &params);
			return 0;
		}
		if (!strcmp(rq.cmd, "STATUS")) {
			printf_(&m, "NovaNet agent not reachable: %s", r.why.p);
			cni_fail(ERR_NOT_AVAILABLE, m.p, NULL);
		}
		printf_(&m, "NovaNet agent not reachable, try again later: %s", r.why.p);
		cni_fail(ERR_TRY_AGAIN_LATER, m.p, NULL);
	}

	struct json_val resp, e, v;
	if (json_parse(r.line.p, r.line.n, &resp, &at, &err) || resp.type != JSON_OBJECT)
		cni_fail(ERR_INTERNAL, "the agent's answer is not a JSON object", NULL);
	if (json_get(&resp, "error", &e) == 0) {
		const char *msg = "", *detail = "";
		int code = ERR_INTERNAL;
		struct json_val d;
		if (json_get(&e, "message", &v) == 0 && v.type == JSON_STRING)
			msg = str_dup(&v);
		if (json_get(&e, "details", &d) == 0 && d.type == JSON_OBJECT) {
			if (json_get(&d, "cniCode", &v) == 0 && json_is_int(&v))
				code = atoi(v.p);
			if (json_get(&d, "detail", &v) == 0)
				/* not a string: its JSON text, as the reference client renders it */
				detail = v.type == JSON_STRING ? str_dup(&v) : strndup(v.p, v.n);
		}
		cni_fail(code, msg, detail);
	}
	if (!strcmp(rq.cmd, "ADD")) {
		if (json_get(&resp, "result", &v) || v.type != JSON_OBJECT)
			cni_fail(ERR_INTERNAL, "the agent's ADD answer has no result object", NULL);
		struct buf o = {0};
		need(&o, v.n);
		o.n = json_compact(&v, o.p);
		emit(&o);
	}
	return 0;
}
