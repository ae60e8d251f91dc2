/* fetch_config.c: the accounts of pobox fetch (run by the user). One
 * settings table (lib/config.c rows) for an account; the file
 * (~/.config/pobox/fetch.conf or -C) holds shared defaults first, then
 * "[NAME]" sections, one per account; command-line options are applied
 * last, as the same rows. Errors are "file:line: what". */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/util.h"
#include "pobox/fetch.h"

#define FCONF_FILE_MAX (1u << 20)
#define FCONF_LINE_MAX 4096
#define FCONF_ACCOUNTS_MAX 1000

struct fetch_conf {
	char *host, *port, *user;
	unsigned tls;
	bool allow_cleartext;
	char *cafile, *fingerprint, *auth;
	char *password_command, *password_file, *oauth_command;
	char *maildir, *mbox, *mda;
	unsigned mda_parallel;
	bool keep;
	char *delete_after;
	unsigned max_size;
	unsigned oversize;
	unsigned timeout;
	unsigned session_timeout;
	unsigned pipeline;
	char *state_dir;
	char *device, *devices_dir;
	struct config_list devices;
};

static const char *const tls_choices[] = { "implicit", "stls", "none", NULL };
static const char *const oversize_choices[] = { "skip", "headers", NULL };

static int
check_days(const char *v, char **error_r)
{
	uint32_t d;

	if (strcmp(v, "never") == 0 || (str_to_u32(v, &d) == 0 && d <= 100000))
		return 0;
	*error_r = xasprintf("delete_after: never or days (0 to 100000)");
	return -1;
}

/* A command of blanks only would be sh -c " ": exit 0, nothing stored,
 * every message deleted. */
static int
check_mda(const char *v, char **error_r)
{
	if (v[0] == '\0' || v[strspn(v, " \t\n")] != '\0')
		return 0;
	*error_r = xasprintf("mda: a command, not only blanks");
	return -1;
}

static int
check_device(const char *v, char **error_r)
{
	for (const char *p = v; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("._-", *p) != NULL)) {
			*error_r = xasprintf("device names are A-Z a-z 0-9 . _ -");
			return -1;
		}
	return 0;
}

#define F(x) offsetof(struct fetch_conf, x)
static const struct config_setting fetch_table[] = {
	{ "host", CONFIG_STRING, F(host), "", 0, 0, NULL, "POP3 server name or address", NULL },
	{ "port", CONFIG_STRING, F(port), "", 0, 0, NULL, "port; empty: 995 (implicit) or 110", NULL },
	{ "user", CONFIG_STRING, F(user), "", 0, 0, NULL, "login name", NULL },
	{ "tls", CONFIG_ENUM, F(tls), "implicit", 0, 0, tls_choices,
	  "implicit (POP3S), stls (RFC 2595) or none", NULL },
	{ "allow_cleartext", CONFIG_BOOL, F(allow_cleartext), "no", 0, 0, NULL,
	  "may a password cross the network without TLS", NULL },
	{ "cafile", CONFIG_STRING, F(cafile), "", 0, 0, NULL,
	  "CA certificates (PEM); empty: the system store", NULL },
	{ "fingerprint", CONFIG_STRING, F(fingerprint), "", 0, 0, NULL,
	  "pinned SHA-256 of the server certificate (instead of the CA check)", NULL },
	{ "auth", CONFIG_STRING, F(auth), "", 0, 0, NULL,
	  "mechanism; empty: the strongest offered", NULL },
	{ "password_command", CONFIG_STRING, F(password_command), "", 0, 0, NULL,
	  "command printing the password", NULL },
	{ "password_file", CONFIG_STRING, F(password_file), "", 0, 0, NULL,
	  "file holding the password (mode 600)", NULL },
	{ "oauth_command", CONFIG_STRING, F(oauth_command), "", 0, 0, NULL,
	  "command printing an OAuth 2.0 access token", NULL },
	{ "maildir", CONFIG_STRING, F(maildir), "", 0, 0, NULL, "deliver into this Maildir", NULL },
	{ "mbox", CONFIG_STRING, F(mbox), "", 0, 0, NULL, "deliver into this mbox (mboxrd)", NULL },
	{ "mda", CONFIG_STRING, F(mda), "", 0, 0, NULL,
	  "deliver by this command (message on stdin; sh -c when it has "
	  "shell syntax)", check_mda },
	{ "mda_parallel", CONFIG_UINT, F(mda_parallel), "1", 1, FETCH_MDA_PARALLEL_MAX, NULL,
	  "MDA commands run at once; above 1 only for an MDA whose deliveries "
	  "are independent (messages may then arrive out of order)", NULL },
	{ "keep", CONFIG_BOOL, F(keep), "no", 0, 0, NULL, "leave messages on the server", NULL },
	{ "delete_after", CONFIG_STRING, F(delete_after), "never", 0, 0, NULL,
	  "with keep: delete N days after first download", check_days },
	{ "max_size", CONFIG_UINT, F(max_size), "0", 0, 0, NULL,
	  "larger messages are skipped (or their headers fetched); 0: no limit", NULL },
	{ "oversize", CONFIG_ENUM, F(oversize), "skip", 0, 0, oversize_choices,
	  "skip or headers (TOP n 0)", NULL },
	{ "timeout", CONFIG_DURATION, F(timeout), "60", 1, 3600, NULL,
	  "seconds of network silence before giving up", NULL },
	{ "session_timeout", CONFIG_DURATION, F(session_timeout), "1h", 1, 7 * 86400, NULL,
	  "the longest one run may talk to the server (a server that trickles "
	  "octets cannot hold a run forever; what was stored is kept)", NULL },
	{ "pipeline", CONFIG_UINT, F(pipeline), "16", 1, 256, NULL,
	  "commands in flight when the server offers PIPELINING", NULL },
	{ "state_dir", CONFIG_STRING, F(state_dir), "", 0, 0, NULL,
	  "UIDL journals; empty: $XDG_STATE_HOME/pobox", NULL },
	{ "devices_dir", CONFIG_STRING, F(devices_dir), "", 0, 0, NULL,
	  "a directory every device reads and writes (synced or shared)", NULL },
	{ "devices", CONFIG_LIST, F(devices), "", 0, 0, NULL,
	  "with devices_dir: delete a message once all these devices have it", check_device },
	{ "device", CONFIG_STRING, F(device), "", 0, 0, NULL,
	  "this device's name in devices; empty: the host name", NULL },
};
#undef F

struct fline {
	unsigned lineno;
	char *name, *value;
};

struct fsection {
	char *name;
	unsigned lineno;
	struct fline *l;
	size_t n;
};

static void
sec_add(struct fsection *s, unsigned lineno, const char *name, const char *value)
{
	s->l = xrealloc(s->l, (s->n + 1) * sizeof(*s->l));
	s->l[s->n].lineno = lineno;
	s->l[s->n].name = xstrdup(name);
	s->l[s->n].value = xstrdup(value);
	s->n++;
}

static void
sec_free(struct fsection *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->l[i].name);
		free(s->l[i].value);
	}
	free(s->l);
	free(s->name);
}

static bool
name_ok(const char *s)
{
	if (*s == '\0' || strlen(s) > 64)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || strchr("._@-", *s) != NULL))
			return false;
	return true;
}

/* Reads path into sections: [0] the defaults, then one per account. */
static int
read_file(const char *path, struct fsection **secs_r, size_t *n_r, char **error_r)
{
	struct fsection *secs = xcalloc(1, sizeof(*secs));
	size_t nsec = 1, cap = 0;
	char *line = NULL, *name, *value;
	const char *err = NULL;
	unsigned lineno = 0;
	ssize_t len;
	FILE *f;
	long size;

	if ((f = fopen(path, "re")) == NULL) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		free(secs);
		return -1;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > (long)FCONF_FILE_MAX) {
		*error_r = xasprintf("%s: larger than 1 MiB", path);
		goto fail;
	}
	rewind(f);
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len > FCONF_LINE_MAX || memchr(line, '\0', (size_t)len) != NULL) {
			*error_r = xasprintf("%s:%u: line too long or NUL octet", path, lineno);
			goto fail;
		}
		char *p = line + strspn(line, " \t");
		if (*p == '[') {
			char *end = strchr(p, ']');

			if (end == NULL || end[1 + strspn(end + 1, " \t")] != '\0') {
				*error_r = xasprintf("%s:%u: expected [ACCOUNT]", path, lineno);
				goto fail;
			}
			*end = '\0';
			if (!name_ok(p + 1)) {
				*error_r = xasprintf("%s:%u: account names are 1..64 of "
				    "A-Z a-z 0-9 . _ @ -", path, lineno);
				goto fail;
			}
			for (size_t i = 1; i < nsec; i++)
				if (strcmp(secs[i].name, p + 1) == 0) {
					*error_r = xasprintf("%s:%u: account [%s] again, "
					    "first at line %u", path, lineno, p + 1,
					    secs[i].lineno);
					goto fail;
				}
			if (nsec == FCONF_ACCOUNTS_MAX) {
				*error_r = xasprintf("%s:%u: too many accounts", path, lineno);
				goto fail;
			}
			secs = xrealloc(secs, (nsec + 1) * sizeof(*secs));
			memset(&secs[nsec], 0, sizeof(secs[0]));
			secs[nsec].name = xstrdup(p + 1);
			secs[nsec].lineno = lineno;
			nsec++;
			continue;
		}
		int r = config_parse_line(line, &name, &value, &err);
		if (r < 0) {
			*error_r = xasprintf("%s:%u: %s", path, lineno, err);
			goto fail;
		}
		if (r > 0)
			sec_add(&secs[nsec - 1], lineno, name, value);
	}
	free(line);
	fclose(f);
	*secs_r = secs;
	*n_r = nsec;
	return 0;
fail:
	free(line);
	fclose(f);
	for (size_t i = 0; i < nsec; i++)
		sec_free(&secs[i]);
	free(secs);
	return -1;
}

/* Applies lines to conf; in a file, a setting twice in one section is an
 * error; on the command line (path NULL) the last one wins. */
static int
apply(struct fetch_conf *c, const char *path, const struct fsection *s, char **error_r)
{
	char *msg = NULL;

	for (size_t i = 0; i < s->n; i++) {
		for (size_t j = 0; path != NULL && j < i; j++)
			if (strcmp(s->l[j].name, s->l[i].name) == 0) {
				*error_r = xasprintf("%s:%u: '%s' set twice, first at "
				    "line %u", path, s->l[i].lineno, s->l[i].name,
				    s->l[j].lineno);
				return -1;
			}
		if (config_set(fetch_table, ARRAY_SIZE(fetch_table), c, s->l[i].name,
		    s->l[i].value, &msg) < 0) {
			*error_r = path != NULL ?
			    xasprintf("%s:%u: %s", path, s->l[i].lineno, msg) :
			    xasprintf("--%s: %s", s->l[i].name, msg);
			free(msg);
			return -1;
		}
	}
	return 0;
}

/* "~/x" -> "$HOME/x"; NULL for an empty value. */
static char *
path_value(const char *v)
{
	const char *home = getenv("HOME");

	if (v == NULL || *v == '\0')
		return NULL;
	if (v[0] == '~' && v[1] == '/' && home != NULL)
		return xasprintf("%s%s", home, v + 1);
	return xstrdup(v);
}

static char *
str_value(const char *v)
{
	return v == NULL || *v == '\0' ? NULL : xstrdup(v);
}

static int
parse_fingerprint(const char *in, char **out_r)
{
	char hex[65];
	size_t j = 0;

	for (size_t i = 0; in[i] != '\0'; i++) {
		char c = in[i];

		if (c == ':')
			continue;
		if (j == 64 || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		    (c >= 'A' && c <= 'F')))
			return -1;
		hex[j++] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
	}
	if (j != 64)
		return -1;
	hex[64] = '\0';
	*out_r = xstrdup(hex);
	return 0;
}

static char *
default_state_dir(void)
{
	const char *x = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (x != NULL && x[0] == '/')
		return xasprintf("%s/pobox", x);
	return xasprintf("%s/.local/state/pobox", home != NULL ? home : ".");
}

/* conf -> account; checks what a run needs. */
static int
to_account(const struct fetch_conf *c, const char *name, bool info_only,
    struct fetch_account *a, char **error_r)
{
	const char *who = name != NULL ? name : "the command line";
	int targets = (c->maildir[0] != '\0') + (c->mbox[0] != '\0') + (c->mda[0] != '\0');

	memset(a, 0, sizeof(*a));
	if (c->host[0] == '\0' || c->user[0] == '\0') {
		*error_r = xasprintf("%s: host and user are needed", who);
		return -1;
	}
	if (targets > 1 || (targets == 0 && !info_only)) {
		*error_r = xasprintf("%s: set one of maildir, mbox, mda", who);
		return -1;
	}
	if (c->fingerprint[0] != '\0' &&
	    parse_fingerprint(c->fingerprint, &a->fingerprint) < 0) {
		*error_r = xasprintf("%s: fingerprint: 64 hex digits (colons "
		    "allowed)", who);
		return -1;
	}
	a->name = str_value(name);
	a->host = xstrdup(c->host);
	a->user = xstrdup(c->user);
	a->tls = (enum fetch_tls)c->tls;
	a->port = c->port[0] != '\0' ? xstrdup(c->port) :
	    xstrdup(a->tls == FETCH_TLS_IMPLICIT ? "995" : "110");
	a->allow_cleartext = c->allow_cleartext;
	a->cafile = path_value(c->cafile);
	a->auth = str_value(c->auth);
	a->password_command = str_value(c->password_command);
	a->password_file = path_value(c->password_file);
	a->oauth_command = str_value(c->oauth_command);
	if (c->mbox[0] != '\0') {
		a->target = FETCH_MBOX;
		a->target_arg = path_value(c->mbox);
	} else if (c->mda[0] != '\0') {
		a->target = FETCH_MDA;
		a->target_arg = xstrdup(c->mda);
	} else if (c->maildir[0] != '\0') {
		a->target = FETCH_MAILDIR;
		a->target_arg = path_value(c->maildir);
	} else {
		a->target = FETCH_MDA;     /* --serverinfo stores nothing */
		a->target_arg = xstrdup("cat >/dev/null");
	}
	a->keep = c->keep;
	a->delete_after = strcmp(c->delete_after, "never") == 0 ? -1 :
	    atoi(c->delete_after);
	/* Deleting N days after the first download means keeping till then. */
	if (a->delete_after > 0)
		a->keep = true;
	a->max_size = c->max_size;
	a->oversize_headers = c->oversize == 1;
	a->timeout = c->timeout;
	a->session_timeout = c->session_timeout;
	a->window = c->pipeline;
	a->mda_parallel = c->mda_parallel;
	a->state_dir = c->state_dir[0] != '\0' ? path_value(c->state_dir) :
	    default_state_dir();
	if (c->devices.count > 0) {
		char host[256];

		if (c->devices_dir[0] == '\0') {
			*error_r = xasprintf("%s: devices needs devices_dir", who);
			return -1;
		}
		if (c->device[0] != '\0') {
			a->device = xstrdup(c->device);
		} else {
			if (gethostname(host, sizeof(host) - 1) < 0)
				strcpy(host, "localhost");
			host[sizeof(host) - 1] = '\0';
			host[strcspn(host, ".")] = '\0';
			a->device = xstrdup(host);
		}
		a->devices = xcalloc(c->devices.count, sizeof(char *));
		bool self = false;
		for (unsigned i = 0; i < c->devices.count; i++) {
			a->devices[i] = xstrdup(c->devices.items[i]);
			self |= strcmp(a->devices[i], a->device) == 0;
		}
		a->ndevices = c->devices.count;
		a->devices_dir = path_value(c->devices_dir);
		if (!self) {
			*error_r = xasprintf("%s: device %s is not in devices", who,
			    a->device);
			return -1;
		}
		/* Deleting is up to the devices: keep until all have it. */
		a->keep = true;
	}
	return 0;
}

void
fetch_accounts_free(struct fetch_account *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(a[i].name);
		free(a[i].host);
		free(a[i].port);
		free(a[i].user);
		free(a[i].cafile);
		free(a[i].fingerprint);
		free(a[i].auth);
		free(a[i].password_command);
		free(a[i].password_file);
		free(a[i].oauth_command);
		free(a[i].target_arg);
		free(a[i].state_dir);
		free(a[i].device);
		free(a[i].devices_dir);
		for (unsigned j = 0; j < a[i].ndevices; j++)
			free(a[i].devices[j]);
		free(a[i].devices);
	}
	free(a);
}

int
fetch_accounts(const char *path, char *const *select, size_t nselect,
    const struct fetch_opt *cli, size_t ncli, const char *cli_name, bool info_only,
    struct fetch_account **accts_r, size_t *n_r, char **error_r)
{
	struct fsection *secs = NULL, clisec;
	size_t nsec = 0, n = 0;
	struct fetch_account *accts = NULL;
	struct fetch_conf c;
	int ret = -1;

	memset(&clisec, 0, sizeof(clisec));
	for (size_t i = 0; i < ncli; i++)
		sec_add(&clisec, 0, cli[i].name, cli[i].value);
	if (path != NULL && read_file(path, &secs, &nsec, error_r) < 0)
		goto out;
	for (size_t i = 0; i < nselect; i++) {
		size_t j;

		for (j = 1; j < nsec && strcmp(secs[j].name, select[i]) != 0; j++)
			;
		if (j >= nsec) {
			*error_r = xasprintf("no account [%s]%s%s", select[i],
			    path != NULL ? " in " : "", path != NULL ? path : "");
			goto out;
		}
	}
	/* No sections: the defaults part (or the command line alone) is
	 * one account. */
	size_t first = nsec > 1 ? 1 : 0, last = nsec > 1 ? nsec : 1;
	accts = xcalloc(last - first, sizeof(*accts));
	for (size_t j = first; j < last; j++) {
		bool chosen = nselect == 0;

		for (size_t i = 0; i < nselect && j > 0; i++)
			chosen |= strcmp(secs[j].name, select[i]) == 0;
		if (!chosen)
			continue;
		config_defaults(fetch_table, ARRAY_SIZE(fetch_table), &c);
		if ((nsec > 0 && apply(&c, path, &secs[0], error_r) < 0) ||
		    (j > 0 && apply(&c, path, &secs[j], error_r) < 0) ||
		    apply(&c, NULL, &clisec, error_r) < 0 ||
		    to_account(&c, j > 0 ? secs[j].name : cli_name, info_only,
		    &accts[n], error_r) < 0) {
			config_free(fetch_table, ARRAY_SIZE(fetch_table), &c);
			goto out;
		}
		config_free(fetch_table, ARRAY_SIZE(fetch_table), &c);
		n++;
	}
	*accts_r = accts;
	*n_r = n;
	accts = NULL;
	ret = 0;
out:
	if (accts != NULL)
		fetch_accounts_free(accts, n);
	for (size_t i = 0; i < nsec; i++)
		sec_free(&secs[i]);
	free(secs);
	sec_free(&clisec);
	return ret;
}

void
fetch_config_print(FILE *out)
{
	struct fetch_conf c;

	config_defaults(fetch_table, ARRAY_SIZE(fetch_table), &c);
	config_print(fetch_table, ARRAY_SIZE(fetch_table), &c, out);
	config_free(fetch_table, ARRAY_SIZE(fetch_table), &c);
}
