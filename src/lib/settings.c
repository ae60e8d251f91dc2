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
static bool
listen_ok(const char *value)
{
	const char *colon = strrchr(value, ':');
	char host[64];
	unsigned char addr[16];
	uint32_t port;
	size_t n;

	if (colon == NULL || str_to_u32(colon + 1, &port) < 0 || port < 1 ||
	    port > 65535 || (n = (size_t)(colon - value)) >= sizeof(host))
		return false;
	memcpy(host, value, n);
	host[n] = '\0';
	if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
		host[n - 1] = '\0';
		return inet_pton(AF_INET6, host + 1, addr) == 1;
	}
	return strcmp(host, "*") == 0 || inet_pton(AF_INET, host, addr) == 1;
}

/* The check callbacks get no setting name: one wrapper per address list. */
static int
check_listen_named(const char *name, const char *value, char **error_r)
{
	if (listen_ok(value))
		return 0;
	*error_r = xasprintf("'%s' must be IPV4:PORT, [IPV6]:PORT or *:PORT, "
	    "not '%s'", name, value);
	return -1;
}

static int
check_listen(const char *value, char **error_r)
{
	return check_listen_named("listen", value, error_r);
}

static int
check_tls_listen(const char *value, char **error_r)
{
	return check_listen_named("tls_listen", value, error_r);
}

/* Space-separated mechanism names (which exist is poboxd's check, as
 * this layer knows no SASL), or "default", or "none". */
static int
check_sasl_mechanisms(const char *value, char **error_r)
{
	size_t n = strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_ ");

	if (value[n] == '\0' && strspn(value, " ") != n)
		return 0;
	*error_r = xstrdup("'sasl_mechanisms' must be 'default', 'none' or "
	    "mechanism names separated by spaces");
	return -1;
}

int
settings_parse_size(const char *s, uint64_t *r)
{
	static const char suffixes[] = "kMGT";
	size_t n = strlen(s);
	const char *p;
	char digits[32];
	uint64_t v;
	unsigned shift = 0;

	if (n == 0 || n >= sizeof(digits))
		return -1;
	if ((p = strchr(suffixes, s[n - 1])) != NULL) {
		shift = 10 * (unsigned)(p - suffixes + 1);
		n--;
	} else if (s[n - 1] == 'K') {
		shift = 10;
		n--;
	}
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (str_to_u64(digits, &v) < 0 || (shift > 0 && v > (UINT64_MAX >> shift)))
		return -1;
	*r = v << shift;
	return 0;
}

static int
check_size(const char *value, char **error_r)
{
	uint64_t v;

	if (settings_parse_size(value, &v) == 0)
		return 0;
	*error_r = xasprintf("'%s' is not a size (bytes, or with k, M, G, T)", value);
	return -1;
}

/* RFC 1870 SIZE is a decimal of at most 20 digits; anything over 1 TiB
 * is a typo, and 0 (no limit) is not a secure default. */
static int
check_message_size(const char *value, char **error_r)
{
	uint64_t v;

	if (check_size(value, error_r) < 0)
		return -1;
	(void)settings_parse_size(value, &v);
	if (v >= 1024 && v <= (UINT64_C(1) << 40))
		return 0;
	*error_r = xstrdup("'max_message_size' must be 1k..1T");
	return -1;
}

/* An address for lmtp_listen: as listen, or an absolute UNIX socket path. */
static int
check_lmtp_listen(const char *value, char **error_r)
{
	if (value[0] == '/') {
		if (strlen(value) < 108)  /* sizeof(sun_path) */
			return 0;
		*error_r = xasprintf("UNIX socket path '%s' is too long", value);
		return -1;
	}
	if (listen_ok(value))
		return 0;
	*error_r = xasprintf("'lmtp_listen' must be IPV4:PORT, [IPV6]:PORT, "
	    "*:PORT or an absolute socket path, not '%s'", value);
	return -1;
}

static int
check_smtp_listen(const char *value, char **error_r)
{
	return check_listen_named("smtp_listen", value, error_r);
}

/* A domain name (RFC 5321 §4.1.2 Domain), compared without case. */
static int
check_domain(const char *value, char **error_r)
{
	size_t n = strlen(value);
	bool ok = n > 0 && n <= 255 && value[0] != '.' && value[0] != '-' &&
	    value[n - 1] != '.';

	for (size_t i = 0; ok && i < n; i++) {
		unsigned char c = (unsigned char)value[i];
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' || c >= 0x80;
	}
	if (ok)
		return 0;
	*error_r = xasprintf("'%s' is not a domain name", value);
	return -1;
}

static int
check_hostname(const char *value, char **error_r)
{
	return value[0] == '\0' ? 0 : check_domain(value, error_r);
}

static int
check_optional_path(const char *value, char **error_r)
{
	return value[0] == '\0' ? 0 : check_path(value, error_r);
}

#define S(f) offsetof(struct pobox_settings, f)
const struct config_setting pobox_settings_table[] = {
	{ "listen", CONFIG_LIST, S(listen), "127.0.0.1:110, [::1]:110", 0, 0,
	  NULL, "Addresses to listen on: IPV4:PORT, [IPV6]:PORT or *:PORT; "
	  "repeat for more", check_listen },
	{ "user", CONFIG_STRING, S(user), "pobox", 0, 0, NULL,
	  "Started as root, poboxd serves as this user (it owns the maildirs)",
	  NULL },
	{ "auth_user", CONFIG_STRING, S(auth_user), "pobox-auth", 0, 0, NULL,
	  "Started as root, the auth process runs as this user: the only one "
	  "that reads passwd_file (make it readable by this user alone)", NULL },
	{ "login_user", CONFIG_STRING, S(login_user), "pobox-login", 0, 0, NULL,
	  "Started as root, the login processes (pre-login POP3 and TLS) run "
	  "as this user, chrooted; must differ from user and auth_user", NULL },
	{ "login_chroot", CONFIG_STRING, S(login_chroot), "/run/pobox/login", 0, 0,
	  NULL, "The empty, root-owned directory the login processes are "
	  "chrooted into (made if missing)", check_path },
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
	{ "smtp_listen", CONFIG_LIST, S(smtp_listen), "", 0, 0, NULL,
	  "SMTP final delivery addresses, e.g. *:25; empty: no SMTP", check_smtp_listen },
	{ "lmtp_listen", CONFIG_LIST, S(lmtp_listen), "", 0, 0, NULL,
	  "LMTP addresses or absolute UNIX socket paths (made 0660, owned by "
	  "user); empty: no LMTP", check_lmtp_listen },
	{ "hostname", CONFIG_STRING, S(hostname), "", 0, 0, NULL,
	  "Name in SMTP/LMTP greetings and Received headers; empty: the host name",
	  check_hostname },
	{ "local_domains", CONFIG_LIST, S(local_domains), "", 0, 0, NULL,
	  "Domains whose users receive mail; any other gets 550 5.7.1 (never "
	  "a relay); empty: every recipient refused", check_domain },
	{ "aliases_file", CONFIG_STRING, S(aliases_file), "", 0, 0, NULL,
	  "Aliases: 'alias@domain: user, user', '@domain: user' (catch-all), "
	  "'postmaster: user'; empty: none", check_optional_path },
	{ "max_message_size", CONFIG_STRING, S(max_message_size), "50M", 0, 0,
	  NULL, "Largest message accepted (RFC 1870 SIZE), k/M/G suffixes",
	  check_message_size },
	{ "max_rcpts", CONFIG_UINT, S(max_rcpts), "100", 1, 10000, NULL,
	  "Recipients per SMTP/LMTP transaction (RFC 5321 4.5.3.1.8 asks for "
	  "at least 100)", NULL },
	{ "quota_bytes", CONFIG_STRING, S(quota_bytes), "0", 0, 0, NULL,
	  "Octets a Maildir may hold for delivery, k/M/G/T suffixes; 0: no "
	  "limit; passwd quota_bytes= overrides", check_size },
	{ "quota_messages", CONFIG_UINT, S(quota_messages), "0", 0, 0, NULL,
	  "Messages a Maildir may hold for delivery; 0: no limit; passwd "
	  "quota_messages= overrides", NULL },
	{ "smtp_timeout", CONFIG_DURATION, S(smtp_timeout), "300", 10, 3600,
	  NULL, "Idle time before an SMTP/LMTP session is closed (RFC 5321 "
	  "4.5.3.2.7: 5 minutes)", NULL },
	{ "smtp_min_data_rate", CONFIG_UINT, S(smtp_min_data_rate), "500", 0, 100000000,
	  NULL, "Octets/s a message's data must average: each octet received "
	  "extends its deadline by 1/rate s, up to smtp_timeout ahead (a client "
	  "dripping octets cannot hold a session); 0: each read restarts "
	  "smtp_timeout", NULL },
	{ "smtp_rate_limit", CONFIG_UINT, S(smtp_rate_limit), "120", 0, 1000000,
	  NULL, "Messages per minute accepted over SMTP from one address "
	  "(loopback and LMTP exempt); 0: no limit", NULL },
	{ "sasl_mechanisms", CONFIG_STRING, S(sasl_mechanisms), "default", 0, 0,
	  NULL, "SASL AUTH mechanisms offered (RFC 5034): 'default' (PLAIN LOGIN "
	  "SCRAM-SHA-256 SCRAM-SHA-256-PLUS, plus EXTERNAL and OAUTHBEARER "
	  "XOAUTH2 when configured), 'none', or names", check_sasl_mechanisms },
	{ "tls_client_ca", CONFIG_STRING, S(tls_client_ca), "", 0, 0, NULL,
	  "CA certificates (PEM) that sign client certificates for SASL "
	  "EXTERNAL; empty: no client certificates", check_tls_file },
	{ "oauth_verify_command", CONFIG_STRING, S(oauth_verify_command), "", 0, 0,
	  NULL, "Program that checks an OAuth bearer token for OAUTHBEARER and "
	  "XOAUTH2 (token on stdin; exit 0 and the user name on stdout); empty: off",
	  check_optional_path },
	{ "oauth_verify_timeout", CONFIG_DURATION, S(oauth_verify_timeout), "10",
	  1, 60, NULL, "Time the OAuth verifier may take before it is killed and "
	  "the login fails temporarily", NULL },
	{ "oauth_jwks_file", CONFIG_STRING, S(oauth_jwks_file), "", 0, 0, NULL,
	  "JWKS file (RFC 7517) whose RS256/ES256 keys sign JWT bearer tokens, "
	  "instead of oauth_verify_command; empty: off", check_tls_file },
	{ "oauth_issuer", CONFIG_STRING, S(oauth_issuer), "", 0, 0, NULL,
	  "With oauth_jwks_file: the \"iss\" a token must carry", NULL },
	{ "oauth_audience", CONFIG_STRING, S(oauth_audience), "", 0, 0, NULL,
	  "With oauth_jwks_file: the \"aud\" a token must carry", NULL },
	{ "oauth_user_claim", CONFIG_STRING, S(oauth_user_claim), "sub", 0, 0, NULL,
	  "With oauth_jwks_file: the claim that names the user", NULL },
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
	if (set->oauth_jwks_file[0] != '\0' && (set->oauth_verify_command[0] != '\0' ||
	    set->oauth_issuer[0] == '\0' || set->oauth_audience[0] == '\0' ||
	    set->oauth_user_claim[0] == '\0')) {
		*error_r = xasprintf("%s: oauth_jwks_file needs oauth_issuer, "
		    "oauth_audience and oauth_user_claim, and excludes "
		    "oauth_verify_command", path);
		settings_free(set);
		return -1;
	}
	if (set->tls_client_ca[0] != '\0' && set->tls_cert[0] == '\0') {
		*error_r = xasprintf("%s: tls_client_ca without tls_cert", path);
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

uint64_t
settings_max_message_size(const struct pobox_settings *set)
{
	uint64_t v = 0;

	(void)settings_parse_size(set->max_message_size, &v);
	return v;
}

uint64_t
settings_quota_bytes(const struct pobox_settings *set)
{
	uint64_t v = 0;

	(void)settings_parse_size(set->quota_bytes, &v);
	return v;
}

int
settings_expire_days(const struct pobox_settings *set)
{
	int days = expire_parse(set->expire);

	return days < 0 ? -1 : days;
}
