/* settings.c: the pobox configuration table: one row per setting gives its
 * type, default, bounds and help; config.c does the rest. Read by poboxd
 * (as root at startup and on SIGHUP) and by the pobox admin command. */
#include "lib/settings.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "lib/tls.h"
#include "lib/util.h"

#define EXPIRE_MAX_DAYS 36500
/* A CAPA response line is at most 512 octets with CRLF (RFC 2449 §4). */
#define IMPLEMENTATION_MAX 200

static const char *const cleartext_choices[] = {
	"loopback", "always", "never", NULL,
};
static const char *const log_level_choices[] = {
	"debug", "info", "warn", "error", NULL,
};
/* RFC 8996: nothing older than TLS 1.2. Order as enum tls_min. */
static const char *const tls_version_choices[] = {
	"TLSv1.2", "TLSv1.3", NULL,
};

/* "never" -> -1, days otherwise; -2 when malformed. */
static int
expire_parse(const char *s)
{
	uint32_t v;

	if (strcmp(s, "never") == 0)
		return -1;
	if (str_to_u32(s, &v) < 0 || v > EXPIRE_MAX_DAYS)
		return -2;
	return (int)v;
}

static int
check_expire(const char *value, char **error_r)
{
	if (expire_parse(value) != -2)
		return 0;
	*error_r = xstrdup("'expire' must be 'never' or 0..36500 days");
	return -1;
}

static int
check_path(const char *value, char **error_r)
{
	if (value[0] == '/')
		return 0;
	*error_r = xasprintf("'%s' is not an absolute path", value);
	return -1;
}

/* A key or certificate: empty, or an absolute path to a file that exists
 * (whether it parses is poboxd's check, tls.c, as the serving user). */
static int
check_tls_file(const char *value, char **error_r)
{
	struct stat st;

	if (value[0] == '\0')
		return 0;
	if (check_path(value, error_r) < 0)
		return -1;
	/* Only a sure mistake: the admin tool and the MDA read this file
	 * too, and may not be allowed to look into a key directory. */
	if (stat(value, &st) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			return 0;
		*error_r = xasprintf("%s: %s", value, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = xasprintf("%s: not a regular file", value);
		return -1;
	}
	return 0;
}

/* "NAME CERTFILE [KEYFILE]", the files checked like tls_cert's. */
static int
check_tls_sni(const char *value, char **error_r)
{
	char *name, *cert, *key;
	int ret;

	if (tls_sni_spec_parse(value, &name, &cert, &key, error_r) < 0)
		return -1;
	ret = check_tls_file(cert, error_r);
	if (ret == 0 && key != NULL)
		ret = check_tls_file(key, error_r);
	free(name);
	free(cert);
	free(key);
	return ret;
}

static int
check_implementation(const char *value, char **error_r)
{
	if (strlen(value) <= IMPLEMENTATION_MAX)
		return 0;
	*error_r = xstrdup("'implementation' is longer than 200 octets");
	return -1;
}

/* "A.B.C.D:PORT", "[V6]:PORT" or "*:PORT", numeric, as poboxd binds. */
static int
check_listen(const char *value, char **error_r)
{
	const char *colon = strrchr(value, ':');
	char host[64];
	unsigned char addr[16];
	uint32_t port;
	size_t n;
	bool ok = false;

	if (colon != NULL && str_to_u32(colon + 1, &port) == 0 && port >= 1 &&
	    port <= 65535 && (n = (size_t)(colon - value)) < sizeof(host)) {
		memcpy(host, value, n);
		host[n] = '\0';
		if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
			host[n - 1] = '\0';
			ok = inet_pton(AF_INET6, host + 1, addr) == 1;
		} else {
			ok = strcmp(host, "*") == 0 ||
			    inet_pton(AF_INET, host, addr) == 1;
		}
	}
	if (ok)
		return 0;
	*error_r = xasprintf("'listen' must be IPV4:PORT, [IPV6]:PORT or "
	    "*:PORT, not '%s'", value);
	return -1;
}

static int
check_tls_listen(const char *value, char **error_r)
{
	if (check_listen(value, error_r) == 0)
		return 0;
	free(*error_r);
	*error_r = xasprintf("'tls_listen' must be IPV4:PORT, [IPV6]:PORT or "
	    "*:PORT, not '%s'", value);
	return -1;
}

#define S(f) offsetof(struct pobox_settings, f)
const struct config_setting pobox_settings_table[] = {
	{ "listen", CONFIG_LIST, S(listen), "127.0.0.1:110, [::1]:110", 0, 0,
	  NULL, "Addresses to listen on: IPV4:PORT, [IPV6]:PORT or *:PORT; "
	  "repeat for more", check_listen },
	{ "user", CONFIG_STRING, S(user), "pobox", 0, 0, NULL,
	  "Started as root, poboxd serves as this user (it owns the maildirs)",
	  NULL },
	{ "passwd_file", CONFIG_STRING, S(passwd_file), "/etc/pobox/passwd",
	  0, 0, NULL, "Users, hashes and maildirs (docs/passwd.md)",
	  check_path },
	{ "mail_root", CONFIG_STRING, S(mail_root), "/var/lib/pobox/mail",
	  0, 0, NULL, "Maildir of a user without one in the passwd file: "
	  "mail_root/NAME", check_path },
	{ "cleartext_auth", CONFIG_ENUM, S(cleartext_auth), "loopback", 0, 0,
	  cleartext_choices, "USER/PASS without TLS: loopback, always or never",
	  NULL },
	{ "apop", CONFIG_BOOL, S(apop), "no", 0, 0, NULL,
	  "Offer APOP (RFC 1939 §7) to users with an apop= secret", NULL },
	{ "implementation", CONFIG_STRING, S(implementation), "pobox", 0, 0,
	  NULL, "CAPA IMPLEMENTATION text (RFC 2449 §6.9); empty: not sent",
	  check_implementation },
	{ "login_delay", CONFIG_DURATION, S(login_delay), "0", 0, 86400, NULL,
	  "Least time between logins of a user (RFC 2449 LOGIN-DELAY); 0: none",
	  NULL },
	{ "expire", CONFIG_STRING, S(expire), "never", 0, 0, NULL,
	  "Days mail is kept (RFC 2449 EXPIRE): N (older goes at QUIT), 0 (retrieved goes at QUIT), never",
	  check_expire },
	{ "idle_timeout", CONFIG_DURATION, S(idle_timeout), "600", 600, 86400,
	  NULL, "Idle time before a logged-in session is closed; at least 10m "
	  "(RFC 1939 §3)", NULL },
	{ "login_timeout", CONFIG_DURATION, S(login_timeout), "60", 10, 600,
	  NULL, "Idle time before a session that has not logged in is closed",
	  NULL },
	{ "max_bad_commands", CONFIG_UINT, S(max_bad_commands), "10", 1, 1000,
	  NULL, "Bad commands before a session is closed", NULL },
	{ "max_sessions", CONFIG_UINT, S(max_sessions), "10000", 1, 1000000,
	  NULL, "Sessions at once over all workers; more get -ERR [SYS/TEMP]", NULL },
	{ "max_sessions_per_ip", CONFIG_UINT, S(max_sessions_per_ip), "100",
	  1, 1000000, NULL, "Sessions at once from one address, over all workers", NULL },
	{ "auth_failure_delay", CONFIG_DURATION, S(auth_failure_delay), "2",
	  0, 60, NULL, "Delay of a failed login's reply, doubled per recent "
	  "failure from the address (RFC 1939 §13)", NULL },
	{ "workers", CONFIG_UINT, S(workers), "0", 0, 64, NULL,
	  "Serving processes, each an event loop for many sessions; 0: one per CPU", NULL },
	{ "auth_workers", CONFIG_UINT, S(auth_workers), "0", 0, 64, NULL,
	  "Password hashing threads; 0: one per CPU", NULL },
	{ "auth_cache_ttl", CONFIG_DURATION, S(auth_cache_ttl), "1h", 0, 86400,
	  NULL, "How long a verified password is remembered, so a repeated "
	  "login costs no hash; 0: off", NULL },
	{ "log_level", CONFIG_ENUM, S(log_level), "info", 0, 0,
	  log_level_choices, "Least important events logged: debug, info, "
	  "warn or error", NULL },
	{ "tls_cert", CONFIG_STRING, S(tls_cert), "", 0, 0, NULL,
	  "TLS certificate (PEM, the chain after it); empty: no STLS, no POP3S",
	  check_tls_file },
	{ "tls_key", CONFIG_STRING, S(tls_key), "", 0, 0, NULL,
	  "TLS private key (PEM); empty: in tls_cert. Re-read on SIGHUP",
	  check_tls_file },
	{ "tls_sni", CONFIG_LIST, S(tls_sni), "", 0, 0, NULL,
	  "Another certificate for clients asking for NAME by SNI: NAME CERT "
	  "[KEY]; NAME may be *.DOMAIN; repeat for more; others get tls_cert",
	  check_tls_sni },
	{ "tls_min_version", CONFIG_ENUM, S(tls_min_version), "TLSv1.2", 0, 0,
	  tls_version_choices, "Oldest TLS accepted: TLSv1.2 or TLSv1.3", NULL },
	{ "tls_ciphers", CONFIG_STRING, S(tls_ciphers),
	  "ECDHE+AESGCM:ECDHE+CHACHA20", 0, 0, NULL,
	  "TLS 1.2 cipher list (OpenSSL syntax); TLS 1.3 uses its own suites",
	  NULL },
	{ "tls_listen", CONFIG_LIST, S(tls_listen), "", 0, 0, NULL,
	  "Implicit TLS (POP3S, RFC 8314) addresses, e.g. *:995; repeat for "
	  "more; needs tls_cert", check_tls_listen },
};
const size_t pobox_settings_count = ARRAY_SIZE(pobox_settings_table);

/* The first tls_sni NAME given twice (any case), or NULL. Malloc'ed. */
static char *
tls_sni_duplicate(const struct config_list *l)
{
	char **names = xcalloc(l->count ? l->count : 1, sizeof(*names));
	char *cert, *key, *dup = NULL;
	unsigned n = 0;

	for (unsigned i = 0; i < l->count; i++) {
		char *error = NULL;

		/* Each item passed check_tls_sni already. */
		if (tls_sni_spec_parse(l->items[i], &names[n], &cert, &key, &error) < 0) {
			free(error);
			continue;
		}
		free(cert);
		free(key);
		for (unsigned j = 0; j < n && dup == NULL; j++)
			if (strcasecmp(names[j], names[n]) == 0)
				dup = xstrdup(names[n]);
		n++;
	}
	for (unsigned i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return dup;
}

/* Every rule is a row's check, so errors carry their line. */
int
settings_load(struct pobox_settings *set, const char *path, char **error_r)
{
	char *dup;

	if (config_load(pobox_settings_table, pobox_settings_count, set, path,
	    error_r) < 0)
		return -1;
	if (set->tls_listen.count > 0 && set->tls_cert[0] == '\0') {
		*error_r = xasprintf("%s: tls_listen needs tls_cert (and tls_key)", path);
		settings_free(set);
		return -1;
	}
	if (set->tls_sni.count > 0 && set->tls_cert[0] == '\0') {
		*error_r = xasprintf("%s: tls_sni needs tls_cert (the default)", path);
		settings_free(set);
		return -1;
	}
	if ((dup = tls_sni_duplicate(&set->tls_sni)) != NULL) {
		*error_r = xasprintf("%s: tls_sni %s given twice", path, dup);
		free(dup);
		settings_free(set);
		return -1;
	}
	if (set->tls_key[0] != '\0' && set->tls_cert[0] == '\0') {
		*error_r = xasprintf("%s: tls_key without tls_cert", path);
		settings_free(set);
		return -1;
	}
	return 0;
}

void
settings_free(struct pobox_settings *set)
{
	config_free(pobox_settings_table, pobox_settings_count, set);
}

int
settings_expire_days(const struct pobox_settings *set)
{
	int days = expire_parse(set->expire);

	return days < 0 ? -1 : days;
}
