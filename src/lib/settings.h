/* settings.h: the pobox configuration (one table, src/lib/settings.c),
 * shared by poboxd and the pobox admin command. */
#ifndef POBOX_SETTINGS_H
#define POBOX_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/config.h"

#define POBOX_DEFAULT_CONFIG "/etc/pobox/poboxd.conf"

enum cleartext_auth { CLEARTEXT_LOOPBACK, CLEARTEXT_ALWAYS, CLEARTEXT_NEVER };
enum log_level_setting { LOGLVL_DEBUG, LOGLVL_INFO, LOGLVL_WARN, LOGLVL_ERROR };

struct pobox_settings {
	struct config_list listen; /* "127.0.0.1:110", "[::1]:110", "*:110" */
	char *user;                /* drop to this user when started as root */
	char *auth_user;           /* the auth process (privsep) */
	char *login_user;          /* the login processes (privsep) */
	char *login_chroot;        /* ...chrooted here */
	char *passwd_file;
	char *mail_root;           /* maildir of NAME: mail_root/NAME */
	unsigned cleartext_auth;   /* enum cleartext_auth */
	bool apop;                 /* APOP timestamp in the greeting */
	char *implementation;      /* CAPA IMPLEMENTATION; "" = not sent */
	unsigned login_delay;      /* seconds between logins; 0 = none */
	char *expire;              /* "never" or days */
	unsigned idle_timeout;     /* TRANSACTION, >= 600 (RFC 1939 §3) */
	unsigned login_timeout;    /* before login */
	unsigned max_bad_commands;
	unsigned max_sessions;
	unsigned max_sessions_per_ip;
	unsigned auth_failure_delay; /* seconds, doubled per recent failure */
	unsigned workers;          /* serving processes; 0 = one per CPU */
	unsigned auth_workers;     /* 0 = one per CPU */
	unsigned auth_cache_ttl;   /* seconds a verified password is cached; 0 off */
	unsigned log_level;        /* enum log_level_setting */
	char *tls_cert;            /* PEM chain; "" = no TLS */
	char *tls_key;             /* PEM; "" = in tls_cert */
	struct config_list tls_sni; /* "NAME CERT [KEY]": more certs by SNI */
	unsigned tls_min_version;  /* enum tls_min (lib/tls.h) */
	char *tls_ciphers;         /* TLS 1.2 list (1.3 suites are all good) */
	struct config_list tls_listen; /* implicit TLS (POP3S) addresses */
	/* SMTP/LMTP receiving (src/poboxd/smtp_session.c) */
	struct config_list smtp_listen; /* SMTP addresses; empty = off */
	struct config_list lmtp_listen; /* LMTP addresses or UNIX socket paths */
	char *hostname;            /* greeting and Received; "" = gethostname */
	struct config_list local_domains; /* empty = every RCPT refused */
	char *aliases_file;        /* "" = none */
	char *max_message_size;    /* size (settings_parse_size) */
	unsigned max_rcpts;
	char *quota_bytes;         /* size; 0 = none (passwd quota_bytes=) */
	unsigned quota_messages;   /* 0 = none (passwd quota_messages=) */
	unsigned smtp_timeout;     /* seconds idle, RFC 5321 §4.5.3.2.7 */
	unsigned smtp_min_data_rate; /* message octets/s that keep a request alive */
	unsigned smtp_rate_limit;  /* messages per minute per address; 0 off */
	char *sasl_mechanisms;     /* "default", "none" or names (poboxd checks them) */
	char *tls_client_ca;       /* EXTERNAL: CA of client certificates; "" off */
	char *oauth_verify_command; /* OAUTHBEARER/XOAUTH2 verifier; "" off */
	unsigned oauth_verify_timeout; /* seconds the verifier may take */
	char *oauth_jwks_file;     /* JWT tokens checked against these keys; "" off */
	char *oauth_issuer;        /* ... "iss" */
	char *oauth_audience;      /* ... "aud" */
	char *oauth_user_claim;    /* ... the claim naming the user */
};

extern const struct config_setting pobox_settings_table[];
extern const size_t pobox_settings_count;

/* Loads path (defaults first), then checks cross-field rules. 0 / -1 with
 * a malloc'ed "file:line: what" or "file: what" in *error_r. */
int settings_load(struct pobox_settings *set, const char *path, char **error_r);
void settings_free(struct pobox_settings *set);
/* "123", "10k", "50M", "2G", "1T" (powers of 1024) into *r: 0 / -1. */
int settings_parse_size(const char *s, uint64_t *r);
/* max_message_size and quota_bytes in octets. */
uint64_t settings_max_message_size(const struct pobox_settings *set);
uint64_t settings_quota_bytes(const struct pobox_settings *set);
/* expire as days, or -1 for never. */
int settings_expire_days(const struct pobox_settings *set);

#endif
