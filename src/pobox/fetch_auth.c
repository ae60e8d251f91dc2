/* fetch_auth.c: how pobox fetch logs in (run by the user). SASL (RFC
 * 5034) PLAIN, LOGIN, CRAM-MD5, OAUTHBEARER (RFC 7628), XOAUTH2; APOP and
 * USER/PASS (RFC 1939), SCRAM-SHA-256/SHA-1 with and without channel
 * binding (RFC 5802, 7677). The strongest offered wins; a mechanism that
 * shows the password (or a token) is used without TLS only when the
 * account allows cleartext. Secrets are wiped after use. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <termios.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

#include "auth/scram_client.h"
#include "lib/tls.h"
#include "lib/util.h"
#include "pobox/fetch.h"

#define SECRET_MAX 4096   /* a password or an OAuth token */

enum mech {
	M_SCRAM_256_PLUS, M_SCRAM_256, M_SCRAM_1_PLUS, M_SCRAM_1, M_CRAM_MD5, M_PLAIN,
	M_LOGIN, M_OAUTHBEARER, M_XOAUTH2, M_APOP, M_USER
};

static const struct mech_def {
	const char *name;
	unsigned capa_bit;      /* POP3C_SASL_*, 0 for APOP/USER */
	bool shows_secret;      /* the secret crosses the wire as is */
	bool oauth;
	bool plus;              /* channel binding: only under TLS */
} mechs[] = {
	/* Strongest first: a challenge-response beats a password sent even
	 * under TLS (a false server learns nothing); SCRAM also proves the
	 * server knows the key, and -PLUS ties the login to this TLS
	 * channel (a man in the middle with a trusted certificate fails). */
	[M_SCRAM_256_PLUS] = { "SCRAM-SHA-256-PLUS", POP3C_SASL_SCRAM_SHA_256_PLUS,
	    false, false, true },
	[M_SCRAM_256] = { "SCRAM-SHA-256", POP3C_SASL_SCRAM_SHA_256, false, false, false },
	[M_SCRAM_1_PLUS] = { "SCRAM-SHA-1-PLUS", POP3C_SASL_SCRAM_SHA_1_PLUS,
	    false, false, true },
	[M_SCRAM_1] = { "SCRAM-SHA-1", POP3C_SASL_SCRAM_SHA_1, false, false, false },
	[M_CRAM_MD5] = { "CRAM-MD5", POP3C_SASL_CRAM_MD5, false, false },
	[M_PLAIN] = { "PLAIN", POP3C_SASL_PLAIN, true, false },
	[M_LOGIN] = { "LOGIN", POP3C_SASL_LOGIN, true, false },
	[M_OAUTHBEARER] = { "OAUTHBEARER", POP3C_SASL_OAUTHBEARER, true, true },
	[M_XOAUTH2] = { "XOAUTH2", POP3C_SASL_XOAUTH2, true, true },
	[M_APOP] = { "APOP", 0, false, false },
	[M_USER] = { "USER", 0, true, false },
};

char *
fauth_command_line(const char *cmd, const char **error_r)
{
	char buf[SECRET_MAX + 2];
	size_t len = 0;
	ssize_t r;
	int fds[2], status;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		*error_r = "pipe failed";
		return NULL;
	}
	if ((pid = fork()) < 0) {
		close(fds[0]);
		close(fds[1]);
		*error_r = "fork failed";
		return NULL;
	}
	if (pid == 0) {
		dup2(fds[1], 1);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		r = read(fds[0], buf + len, sizeof(buf) - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == sizeof(buf) - 1)
			break;
	}
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	buf[len] = '\0';
	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		secret_wipe(buf, sizeof(buf));
		*error_r = "the command failed";
		return NULL;
	}
	if (len == 0 || len > SECRET_MAX) {
		secret_wipe(buf, sizeof(buf));
		*error_r = "the command printed no line (or one too long)";
		return NULL;
	}
	char *s = xstrdup(buf);
	secret_wipe(buf, sizeof(buf));
	return s;
}

/* A password file: the first line; refused when others may read it. */
static char *
password_from_file(const char *path, const char **error_r)
{
	char buf[SECRET_MAX + 2];
	struct stat st;
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0 ||
	    fstat(fd, &st) < 0) {
		*error_r = "cannot open the password file";
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
		close(fd);
		*error_r = "the password file must be yours and not readable by "
		    "others (chmod 600)";
		return NULL;
	}
	r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0) {
		*error_r = "the password file is empty";
		return NULL;
	}
	buf[r] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	char *s = xstrdup(buf);
	secret_wipe(buf, sizeof(buf));
	return s;
}

static char *
password_prompt(const struct fetch_account *a, const char **error_r)
{
	char buf[SECRET_MAX + 2], prompt[512];
	struct termios old, noecho;
	size_t len = 0;
	ssize_t r;
	int fd;
	char c;

	if ((fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)) < 0 ||
	    tcgetattr(fd, &old) < 0) {
		if (fd >= 0)
			close(fd);
		*error_r = "no password: give --password-command or "
		    "--password-file (no terminal to ask on)";
		return NULL;
	}
	snprintf(prompt, sizeof(prompt), "Password for %s@%s: ", a->user, a->host);
	(void)!write(fd, prompt, strlen(prompt));
	noecho = old;
	noecho.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(fd, TCSAFLUSH, &noecho);
	while ((r = read(fd, &c, 1)) == 1 && c != '\n' && len < SECRET_MAX)
		buf[len++] = c;
	tcsetattr(fd, TCSAFLUSH, &old);
	(void)!write(fd, "\n", 1);
	close(fd);
	buf[len] = '\0';
	char *s = xstrdup(buf);
	secret_wipe(buf, sizeof(buf));
	return s;
}

static char *
get_secret(const struct fetch_account *a, bool oauth, const char **error_r)
{
	if (oauth)
		return fauth_command_line(a->oauth_command, error_r);
	if (a->password_command != NULL)
		return fauth_command_line(a->password_command, error_r);
	if (a->password_file != NULL)
		return password_from_file(a->password_file, error_r);
	return password_prompt(a, error_r);
}

static char *
b64(const void *p, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* Decodes base64 text (a SASL challenge); NULL when malformed. */
static unsigned char *
unb64(const char *s, size_t *len_r)
{
	size_t n = strlen(s);
	unsigned char *out;
	int r;

	if (n % 4 != 0)
		return NULL;
	out = xmalloc(n / 4 * 3 + 1);
	if ((r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n)) < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the '=' padding as zero octets. */
	if (n > 0 && s[n - 1] == '=')
		r--;
	if (n > 1 && s[n - 2] == '=')
		r--;
	out[r] = '\0';
	*len_r = (size_t)r;
	return out;
}

/* Sends a line (a secret: the buffer is wiped) and reads the status. */
static enum pop3c_event
send_secret_line(struct fnet *n, char *line)
{
	int r = fnet_write(n, line, strlen(line));

	secret_wipe(line, strlen(line));
	if (r < 0)
		return POP3C_ERROR;
	return fnet_reply(n, false, 0);
}

static int
hex_hmac_md5(const char *key, const void *data, size_t len, char out[33])
{
	unsigned char md[16];
	size_t mdlen = 0;

	if (EVP_Q_mac(NULL, "HMAC", NULL, "MD5", NULL, key, strlen(key), data, len,
	    md, sizeof(md), &mdlen) == NULL || mdlen != 16)
		return -1;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static int
hex_md5(const char *a, const char *b, char out[33])
{
	unsigned char md[16];
	unsigned len = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = c != NULL && EVP_DigestInit_ex(c, EVP_md5(), NULL) &&
	    EVP_DigestUpdate(c, a, strlen(a)) && EVP_DigestUpdate(c, b, strlen(b)) &&
	    EVP_DigestFinal_ex(c, md, &len) && len == 16;

	EVP_MD_CTX_free(c);
	if (!ok)
		return -1;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* Gives up an exchange the client refuses (RFC 5034 §4: "*"). */
static enum pop3c_event
scram_abort(struct fnet *n, int *code_r, int code, const char *why)
{
	snprintf(n->error, sizeof(n->error), "%s: %s", n->acct->host, why);
	(void)fnet_printf(n, "*\r\n");
	*code_r = code;
	return POP3C_ERROR;
}

/* Logged in, but the server never showed it knows the key: anyone could
 * have said +OK. */
static enum pop3c_event
scram_unproven(struct fnet *n, const struct fetch_account *a, enum mech m,
    int *code_r)
{
	snprintf(n->error, sizeof(n->error), "%s accepted the %s login without "
	    "proving it knows the password: refused", a->host, mechs[m].name);
	*code_r = FX_NOPERM;
	return POP3C_ERROR;
}

/* SCRAM over POP3 (RFC 5034 §4): the client-first message as the initial
 * response, the client-final as the answer to the server-first challenge;
 * the server-final comes as one more challenge, answered with an empty
 * line once its signature checks. The server must send it: +OK without
 * proof is refused (mutual authentication). */
static enum pop3c_event
run_scram(struct fnet *n, const struct fetch_account *a, enum mech m, bool tls,
    const char *secret, int *code_r, const char **cb_r)
{
	enum sasl_hash h = m == M_SCRAM_256 || m == M_SCRAM_256_PLUS ? SASL_SHA256 :
	    SASL_SHA1;
	unsigned char cb[TLS_CB_MAX], *chal;
	const char *cb_name = NULL, *error = NULL;
	struct scram_client *c;
	enum pop3c_event ev;
	char *enc, *final = NULL;
	size_t cb_len = 0, clen;

	if (tls) {
		/* RFC 9266: tls-exporter is the default; tls-server-end-point
		 * where the exporter is not unique (TLS 1.2 without EMS). */
		cb_name = "tls-exporter";
		if ((cb_len = tls_channel_binding(n->ssl, TLS_CB_EXPORTER, cb)) == 0) {
			cb_name = "tls-server-end-point";
			cb_len = tls_channel_binding(n->ssl, TLS_CB_SERVER_END_POINT, cb);
		}
	}
	if (mechs[m].plus && cb_len == 0) {
		snprintf(n->error, sizeof(n->error), "%s needs TLS with channel "
		    "binding data", mechs[m].name);
		*code_r = FX_USAGE;
		return POP3C_ERROR;
	}
	/* Without -PLUS but able to bind: gs2 "y", so a server that did
	 * offer -PLUS sees that someone removed it from CAPA. */
	c = scram_client_new(h, a->user, secret, mechs[m].plus ? cb_name : NULL, cb,
	    cb_len, cb_len > 0, NULL);
	*cb_r = mechs[m].plus ? cb_name : NULL;
	secret_wipe(cb, sizeof(cb));
	if (c == NULL) {
		snprintf(n->error, sizeof(n->error), "%s: the user name or password "
		    "holds control characters", mechs[m].name);
		*code_r = FX_CONFIG;
		return POP3C_ERROR;
	}
	enc = b64(scram_client_first(c), strlen(scram_client_first(c)));
	ev = fnet_printf(n, "AUTH %s %s\r\n", mechs[m].name, enc) < 0 ? POP3C_ERROR :
	    fnet_reply(n, false, 0);
	free(enc);
	if (ev != POP3C_STATUS || n->pc.status == POP3C_ERR)
		goto out;
	if (n->pc.status == POP3C_OK) {
		ev = scram_unproven(n, a, m, code_r);
		goto out;
	}
	if ((chal = unb64(n->pc.text, &clen)) == NULL ||
	    scram_client_final(c, (const char *)chal, clen, &final, &error) < 0) {
		free(chal);
		ev = scram_abort(n, code_r, FX_DATAERR, error != NULL ? error :
		    "malformed SCRAM challenge");
		goto out;
	}
	free(chal);
	enc = b64(final, strlen(final));
	secret_free(&final);
	ev = fnet_printf(n, "%s\r\n", enc) < 0 ? POP3C_ERROR : fnet_reply(n, false, 0);
	secret_free(&enc);
	if (ev != POP3C_STATUS || n->pc.status == POP3C_ERR)
		goto out;
	if (n->pc.status == POP3C_OK) {
		ev = scram_unproven(n, a, m, code_r);
		goto out;
	}
	if ((chal = unb64(n->pc.text, &clen)) == NULL ||
	    scram_client_verify(c, (const char *)chal, clen, &error) < 0) {
		free(chal);
		ev = scram_abort(n, code_r, FX_NOPERM, error != NULL ? error :
		    "malformed SCRAM server-final message");
		goto out;
	}
	free(chal);
	ev = fnet_printf(n, "\r\n") < 0 ? POP3C_ERROR : fnet_reply(n, false, 0);
out:
	scram_client_free(&c);
	return ev;
}

/* The whole exchange of one mechanism; returns the final event (STATUS
 * with n->pc.status) or ERROR (with *code_r when not a network failure). */
static enum pop3c_event
run_mech(struct fnet *n, const struct fetch_account *a, enum mech m,
    const struct fauth_in *in, char *secret, int *code_r, const char **cb_r)
{
	const char *apop_ts = in->apop_ts;
	char *line = NULL, *enc, *raw;
	enum pop3c_event ev;
	unsigned char *chal;
	size_t len, clen;
	char hex[33];

	switch (m) {
	case M_SCRAM_256_PLUS:
	case M_SCRAM_256:
	case M_SCRAM_1_PLUS:
	case M_SCRAM_1:
		return run_scram(n, a, m, in->tls, secret, code_r, cb_r);
	case M_USER:
		if (fnet_printf(n, "USER %s\r\n", a->user) < 0)
			return POP3C_ERROR;
		if ((ev = fnet_reply(n, false, 0)) != POP3C_STATUS ||
		    n->pc.status != POP3C_OK)
			return ev;
		line = xasprintf("PASS %s\r\n", secret);
		ev = send_secret_line(n, line);
		free(line);
		return ev;
	case M_APOP:
		if (hex_md5(apop_ts, secret, hex) < 0)
			return POP3C_ERROR;
		if (fnet_printf(n, "APOP %s %s\r\n", a->user, hex) < 0)
			return POP3C_ERROR;
		return fnet_reply(n, false, 0);
	case M_PLAIN:
		/* RFC 4616: authzid NUL authcid NUL passwd, as an initial
		 * response (RFC 5034 §4). */
		len = strlen(a->user) * 1 + strlen(secret) + 2;
		raw = xmalloc(len + 1);
		raw[0] = '\0';
		memcpy(raw + 1, a->user, strlen(a->user));
		raw[1 + strlen(a->user)] = '\0';
		memcpy(raw + 2 + strlen(a->user), secret, strlen(secret));
		enc = b64(raw, len);
		secret_wipe(raw, len);
		free(raw);
		line = xasprintf("AUTH PLAIN %s\r\n", enc);
		secret_free(&enc);
		ev = send_secret_line(n, line);
		free(line);
		return ev;
	case M_LOGIN:
		if (fnet_printf(n, "AUTH LOGIN\r\n") < 0)
			return POP3C_ERROR;
		for (int step = 0; step < 2; step++) {
			if ((ev = fnet_reply(n, false, 0)) != POP3C_STATUS ||
			    n->pc.status != POP3C_CONT)
				return ev;
			enc = b64(step == 0 ? a->user : secret,
			    strlen(step == 0 ? a->user : secret));
			line = xasprintf("%s\r\n", enc);
			secret_free(&enc);
			if (fnet_write(n, line, strlen(line)) < 0) {
				secret_free(&line);
				return POP3C_ERROR;
			}
			secret_free(&line);
		}
		return fnet_reply(n, false, 0);
	case M_CRAM_MD5:
		if (fnet_printf(n, "AUTH CRAM-MD5\r\n") < 0)
			return POP3C_ERROR;
		if ((ev = fnet_reply(n, false, 0)) != POP3C_STATUS ||
		    n->pc.status != POP3C_CONT)
			return ev;
		if ((chal = unb64(n->pc.text, &clen)) == NULL) {
			fnet_printf(n, "*\r\n");
			snprintf(n->error, sizeof(n->error), "malformed CRAM-MD5 challenge");
			return POP3C_ERROR;
		}
		if (hex_hmac_md5(secret, chal, clen, hex) < 0) {
			free(chal);
			return POP3C_ERROR;
		}
		free(chal);
		raw = xasprintf("%s %s", a->user, hex);
		enc = b64(raw, strlen(raw));
		free(raw);
		line = xasprintf("%s\r\n", enc);
		free(enc);
		ev = send_secret_line(n, line);
		free(line);
		return ev;
	case M_OAUTHBEARER:
	case M_XOAUTH2:
		/* RFC 7628 §3.1 gs2 header + auth=Bearer; XOAUTH2 is Google's
		 * older form of the same. */
		raw = m == M_OAUTHBEARER ?
		    xasprintf("n,a=%s,\001auth=Bearer %s\001\001", a->user, secret) :
		    xasprintf("user=%s\001auth=Bearer %s\001\001", a->user, secret);
		enc = b64(raw, strlen(raw));
		secret_free(&raw);
		line = xasprintf("AUTH %s %s\r\n", mechs[m].name, enc);
		secret_free(&enc);
		ev = send_secret_line(n, line);
		free(line);
		/* A failure comes as a challenge with the error JSON first
		 * (RFC 7628 §3.2.2): answer with the dummy response. */
		if (ev == POP3C_STATUS && n->pc.status == POP3C_CONT) {
			if (fnet_printf(n, "AQ==\r\n") < 0)
				return POP3C_ERROR;
			ev = fnet_reply(n, false, 0);
		}
		return ev;
	}
	return POP3C_ERROR;
}

int
fauth_login(struct fnet *n, const struct fetch_account *a,
    const struct fauth_in *in, const char **mech_r, int *code_r)
{
	const struct pop3c_capa *capa = in->capa;
	enum pop3c_event ev;
	static char shown[64];
	const char *error = NULL, *cb = NULL;
	char *secret;
	int m, pick = -1;

	for (m = 0; m < (int)ARRAY_SIZE(mechs); m++) {
		const struct mech_def *d = &mechs[m];
		bool offered = d->capa_bit != 0 ? (capa->sasl & d->capa_bit) != 0 :
		    m == M_APOP ? in->apop_ts != NULL :
		    (capa->user || !capa->seen);

		if (a->auth != NULL) {
			if (strcasecmp(a->auth, d->name) == 0 ||
			    (m == M_USER && strcasecmp(a->auth, "PASS") == 0)) {
				pick = m;
				break;
			}
			continue;
		}
		if (!offered || d->oauth != (a->oauth_command != NULL) ||
		    (d->plus && !in->tls))
			continue;
		if (d->shows_secret && !in->tls && !a->allow_cleartext)
			continue;
		pick = m;
		break;
	}
	*code_r = FX_NOPERM;
	if (pick < 0) {
		if (a->auth != NULL) {
			snprintf(n->error, sizeof(n->error), "unknown --auth %s", a->auth);
			*code_r = FX_USAGE;
		} else if (!in->tls && !a->allow_cleartext) {
			snprintf(n->error, sizeof(n->error), "%s offers no login that "
			    "keeps the password secret without TLS: use --tls stls or "
			    "--tls implicit (or allow cleartext for this account)",
			    a->host);
		} else {
			snprintf(n->error, sizeof(n->error), "%s offers no login "
			    "mechanism pobox knows", a->host);
		}
		return -1;
	}
	if (mechs[pick].shows_secret && !in->tls && !a->allow_cleartext) {
		snprintf(n->error, sizeof(n->error), "--auth %s would send the "
		    "password in cleartext: use TLS or allow cleartext",
		    mechs[pick].name);
		return -1;
	}
	if (mechs[pick].plus && !in->tls) {
		snprintf(n->error, sizeof(n->error), "--auth %s needs TLS (channel "
		    "binding)", mechs[pick].name);
		*code_r = FX_USAGE;
		return -1;
	}
	if (pick == M_APOP && in->apop_ts == NULL) {
		snprintf(n->error, sizeof(n->error), "%s sent no APOP timestamp", a->host);
		return -1;
	}
	if ((mechs[pick].oauth && a->oauth_command == NULL)) {
		snprintf(n->error, sizeof(n->error), "%s needs --oauth-command",
		    mechs[pick].name);
		*code_r = FX_USAGE;
		return -1;
	}
	*mech_r = mechs[pick].name;
	if ((secret = get_secret(a, mechs[pick].oauth, &error)) == NULL) {
		snprintf(n->error, sizeof(n->error), "%s", error);
		*code_r = FX_CONFIG;
		return -1;
	}
	*code_r = FX_TEMPFAIL;
	ev = run_mech(n, a, (enum mech)pick, in, secret, code_r, &cb);
	secret_free(&secret);
	if (ev != POP3C_STATUS)
		return -1;
	*code_r = FX_NOPERM;
	if (n->pc.status == POP3C_OK) {
		/* For -v and --serverinfo: which channel the login is bound to. */
		if (cb != NULL) {
			snprintf(shown, sizeof(shown), "%s (%s)", mechs[pick].name, cb);
			*mech_r = shown;
		}
		return 0;
	}
	/* RFC 2449 §8.1.1 / RFC 3206: IN-USE, SYS/TEMP, LOGIN-DELAY are
	 * "later", AUTH and anything else is "wrong credentials". */
	if (strcmp(n->pc.code, "IN-USE") == 0 || strncmp(n->pc.code, "SYS/TEMP", 8) == 0 ||
	    strcmp(n->pc.code, "LOGIN-DELAY") == 0)
		*code_r = FX_TEMPFAIL;
	snprintf(n->error, sizeof(n->error), "%s login (%s) refused: %s%s%s%s",
	    a->host, mechs[pick].name, n->pc.code[0] ? "[" : "", n->pc.code,
	    n->pc.code[0] ? "] " : "", n->pc.text);
	return -1;
}
