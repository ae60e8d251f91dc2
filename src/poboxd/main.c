/* main.c: poboxd, the POP3 server. Reads the configuration, binds the
 * listeners (as root if it must), drops to the unprivileged user, then
 * forks `workers` serving processes (one per CPU), each an event loop for
 * many sessions with its own SO_REUSEPORT listeners and a thread pool for
 * password hashes; the parent only supervises. With workers = 1 the one
 * process serves. SIGTERM/SIGINT: close sessions (no UPDATE) and exit;
 * SIGHUP: reload the configuration, sessions stay. */
#include "poboxd/poboxd.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/aliases.h"
#include "auth/jwt.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/ipc.h"
#include "lib/sandbox.h"
#include "lib/tls.h"
#include "lib/workq.h"
#include "poboxd/authproto.h"
#include "poboxd/mailproto.h"

#define POBOXD_VERSION "0.1.0"
#define LISTEN_MAX 256 /* addresses x workers */
#define WORKERS_MAX 64
#define RESPAWN_DELAY_MS 1000
#define LISTEN_BACKLOG 1024
#define ACCEPT_PAUSE_MS 500
#define ACCEPT_BATCH 64 /* per wakeup, so one listener cannot starve sessions */
#define SWEEP_INTERVAL_MS 60000
#define DRAIN_TIMEOUT_MS 30000  /* SIGTERM: deliveries in flight get this long */
#define DELIVER_THREADS 8 /* per worker, for SMTP/LMTP deliveries */

enum listener_kind { LISTEN_POP3, LISTEN_SMTP, LISTEN_LMTP };
#define WORKER_ALL UINT32_MAX   /* a UNIX socket: one fd shared by workers */

struct listener {
	struct server *srv;
	unsigned worker;
	enum listener_kind kind;
	bool tls;                /* implicit TLS (POP3S) */
	int fd;
	struct io *io;
	struct timer *pause;     /* out of fds: accept again later */
	char name[300];
};

static struct listener listeners[LISTEN_MAX];
static unsigned listener_count;

/* Adds a line for config_warn(). */
static void
config_add_warning(struct server_config *c, const char *warning)
{
	char *all = xasprintf("%s%s%s", c->warnings != NULL ? c->warnings : "",
	    c->warnings != NULL ? "\n" : "", warning);

	free(c->warnings);
	c->warnings = all;
}

/* RFC 5321 §4.5.1: postmaster of every local domain must be accepted; an
 * alias (or the domain's catch-all) is how it reaches somebody, unless a
 * user is named postmaster (the passwd file is not read here). */
static void
postmaster_check(struct server_config *c)
{
	const char *const *users;

	for (unsigned i = 0; i < c->set.local_domains.count; i++) {
		const char *d = c->set.local_domains.items[i];
		char *w;

		if (aliases_lookup(c->aliases, "postmaster", d, &users) > 0 ||
		    aliases_catchall(c->aliases, d, &users) > 0)
			continue;
		w = xasprintf("no alias for postmaster@%s: RFC 5321 4.5.1 wants it "
		    "accepted; add 'postmaster: USER' to aliases_file unless a "
		    "user is named postmaster", d);
		config_add_warning(c, w);
		free(w);
		return;
	}
}

/* full: false in the auth process, which needs the settings only: no
 * TLS key, no aliases, no JWKS (files it need not be able to read). */
static struct server_config *
config_read(const char *path, bool full, char **error_r)
{
	struct server_config *c = xcalloc(1, sizeof(*c));
	char *tls_error = NULL;

	if (settings_load(&c->set, path, error_r) < 0) {
		settings_free(&c->set);
		free(c);
		return NULL;
	}
	c->refs = 1;
	c->expire_days = settings_expire_days(&c->set);
	if (!full)
		return c;
	if (c->set.aliases_file[0] != '\0' &&
	    aliases_load(c->set.aliases_file, &c->aliases, error_r) < 0) {
		server_config_unref(&c);
		return NULL;
	}
	postmaster_check(c);
	if (authsasl_config(c, path, error_r) < 0) {
		server_config_unref(&c);
		return NULL;
	}
	/* Certificates are read here, so a SIGHUP picks up renewed ones. */
	if (c->set.tls_cert[0] != '\0' &&
	    (c->tls_ctx = tls_ctx_new(c->set.tls_cert, c->set.tls_key,
	    (enum tls_min)c->set.tls_min_version, c->set.tls_ciphers, &tls_error)) == NULL) {
		*error_r = xasprintf("%s: %s", path, tls_error);
		free(tls_error);
		server_config_unref(&c);
		return NULL;
	}
	for (unsigned i = 0; c->tls_ctx != NULL && i < c->set.tls_sni.count; i++) {
		char *warning;

		if (tls_ctx_add_sni(c->tls_ctx, c->set.tls_sni.items[i],
		    (enum tls_min)c->set.tls_min_version, c->set.tls_ciphers,
		    &warning, &tls_error) < 0) {
			*error_r = xasprintf("%s: %s", path, tls_error);
			free(tls_error);
			server_config_unref(&c);
			return NULL;
		}
		if (warning != NULL) {
			config_add_warning(c, warning);
			free(warning);
		}
	}
	/* After the SNI contexts: it applies to them too. */
	if (c->tls_ctx != NULL && c->set.tls_client_ca[0] != '\0' &&
	    tls_ctx_client_ca(c->tls_ctx, c->set.tls_client_ca, &tls_error) < 0) {
		*error_r = xasprintf("%s: %s", path, tls_error);
		free(tls_error);
		server_config_unref(&c);
		return NULL;
	}
	return c;
}

/* Logs each line of c->warnings (once per process that loaded c). */
static void
config_warn(const struct server_config *c, FILE *f)
{
	const char *p = c->warnings, *nl;
	char v[400];

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		snprintf(v, sizeof(v), "%.*s", (int)(nl != NULL ? nl - p : (long)strlen(p)), p);
		if (f != NULL)
			fprintf(f, "poboxd: warning: %s\n", v);
		else {
			char q[420];

			log_warn("event=config_warning warning=%s", log_value(q, sizeof(q), v));
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
}

/* "127.0.0.1:110", "[::1]:110", "*:110" (all IPv4 and IPv6 addresses). */
static int
listen_parse(const char *spec, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon;

	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		snprintf(host, hostlen, "%.*s", (int)(end - spec - 1), spec + 1);
		snprintf(port, portlen, "%s", end + 2);
	} else {
		colon = strrchr(spec, ':');
		if (colon == NULL)
			return -1;
		snprintf(host, hostlen, "%.*s", (int)(colon - spec), spec);
		snprintf(port, portlen, "%s", colon + 1);
	}
	return host[0] != '\0' && port[0] != '\0' ? 0 : -1;
}

/* An LMTP UNIX socket, bound once by the (root) master and shared by the
 * workers: mode 0660, owned by the serving user, so the MTA's group can
 * be given access. A stale socket from an earlier run is replaced. */
static int
listener_bind_unix(struct server *srv, const char *path, const char *user)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct listener *l;
	struct stat st;
	mode_t old;
	int fd;

	if (listener_count == LISTEN_MAX || strlen(path) >= sizeof(sun.sun_path)) {
		log_error("event=listen_error addr=%s error=\"too many listeners or "
		    "path too long\"", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error("event=listen_error addr=%s error=\"%s\"", path, strerror(errno));
		return -1;
	}
	old = umask(0117);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		umask(old);
		log_error("event=listen_error addr=%s error=\"%s\"", path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	/* Never follow a symlink here: whoever can write the directory
	 * could swap the socket for one between bind and this (we are
	 * root). The mode came from the umask at bind. */
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam(user);
		if (pw == NULL || lchown(path, pw->pw_uid, pw->pw_gid) < 0) {
			log_error("event=listen_error addr=%s error=\"chown to %s: %s\"",
			    path, user, pw == NULL ? "no such user" : strerror(errno));
			close(fd);
			return -1;
		}
	}
	l = &listeners[listener_count++];
	l->srv = srv;
	l->worker = WORKER_ALL;
	l->kind = LISTEN_LMTP;
	l->fd = fd;
	snprintf(l->name, sizeof(l->name), "%s", path);
	return 0;
}

static int
listener_bind(struct server *srv, const char *spec, unsigned worker, bool tls,
    enum listener_kind kind)
{
	char host[256], port[16];
	struct addrinfo hints = { 0 }, *res, *ai;
	int err;

	if (listen_parse(spec, host, sizeof(host), port, sizeof(port)) < 0) {
		log_error("event=listen_error addr=%s error=\"expected HOST:PORT or [V6]:PORT\"", spec);
		return -1;
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (strcmp(host, "*") != 0)
		hints.ai_flags |= AI_NUMERICHOST;
	if ((err = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res)) != 0) {
		log_error("event=listen_error addr=%s error=\"%s\"", spec, gai_strerror(err));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		struct listener *l;
		int fd, one = 1;

		if (listener_count == LISTEN_MAX) {
			log_error("event=listen_error error=\"more than %d listeners\"", LISTEN_MAX);
			freeaddrinfo(res);
			return -1;
		}
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* One socket per worker: the kernel spreads connections. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
			log_error("event=listen_error addr=%s error=\"%s\"", spec, strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return -1;
		}
		l = &listeners[listener_count++];
		l->srv = srv;
		l->worker = worker;
		l->kind = kind;
		l->tls = tls;
		l->fd = fd;
		if (ai->ai_family == AF_INET6)
			snprintf(l->name, sizeof(l->name), "[%s]:%s",
			    strcmp(host, "*") == 0 ? "::" : host, port);
		else
			snprintf(l->name, sizeof(l->name), "%s:%s",
			    strcmp(host, "*") == 0 ? "0.0.0.0" : host, port);
	}
	freeaddrinfo(res);
	return 0;
}

static void
listener_resume(void *ctx)
{
	struct listener *l = ctx;

	l->pause = NULL;
	io_set_events(l->io, IO_READ);
}

static void
listener_accept(void *ctx, unsigned events)
{
	struct listener *l = ctx;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* The listener stays readable: without a pause the
				 * loop would spin on it. */
				log_warn("event=accept_paused error=\"%s\" sessions=%u",
				    strerror(errno), l->srv->session_count);
				io_set_events(l->io, 0);
				l->pause = timer_add(l->srv->loop, ACCEPT_PAUSE_MS,
				    listener_resume, l);
			}
			return;
		}
		if (l->kind == LISTEN_POP3)
			session_create(l->srv, fd, &peer, l->tls);
		else
			smtp_session_create(l->srv, fd, &peer, l->kind == LISTEN_LMTP ?
			    SMTP_KIND_LMTP : SMTP_KIND_SMTP);
	}
}

/* Never serve as root: switch to the configured user for good; root:
 * chroot there first (NULL: none). */
static int
drop_privileges(const char *user, const char *root)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return 0;
	if (user[0] == '\0' || (pw = getpwnam(user)) == NULL) {
		log_error("event=privileges error=\"user '%s' does not exist; create it "
		    "(useradd --system %s) or set user in the configuration\"", user, user);
		return -1;
	}
	if (pw->pw_uid == 0) {
		log_error("event=privileges error=\"user '%s' is root; poboxd never serves as root\"", user);
		return -1;
	}
	if (root != NULL && (chroot(root) < 0 || chdir("/") < 0)) {
		log_error("event=privileges error=\"chroot %s: %s\"", root, strerror(errno));
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_error("event=privileges error=\"%s\"", strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_error("event=privileges error=\"could regain root\"");
		return -1;
	}
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	return 0;
}

/* login_chroot, made if missing: a directory only root may change (the
 * login processes live in it). 0 / -1 with a message in err. */
static int
login_chroot_ready(const char *path, bool make, char *err, size_t len)
{
	struct stat st;

	if (make) {
		char *copy = xstrdup(path);

		for (char *p = copy + 1; ; p++) {
			if (*p != '/' && *p != '\0')
				continue;
			char c = *p;
			*p = '\0';
			if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
				snprintf(err, len, "login_chroot: mkdir %s: %s", copy, strerror(errno));
				free(copy);
				return -1;
			}
			*p = c;
			if (c == '\0')
				break;
		}
		free(copy);
	}
	if (lstat(path, &st) < 0) {
		snprintf(err, len, "login_chroot %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0) {
		snprintf(err, len, "login_chroot %s must be a directory owned by root and "
		    "writable by root alone", path);
		return -1;
	}
	return 0;
}

/* Each session holds two fds (its socket and its maildrop lock). Root may
 * raise the hard limit; anyone may raise the soft one to the hard one. */
static void
raise_fd_limit(unsigned max_sessions)
{
	rlim_t want = (rlim_t)max_sessions * 2 + 256;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_max < want && geteuid() == 0) {
		struct rlimit more = { want, want };
		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < want)
		log_warn("event=fd_limit limit=%llu wanted=%llu note=\"max_sessions may not be reached\"",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

static struct timer *drain_timer;

static void
on_drain_timeout(void *ctx)
{
	struct server *srv = ctx;

	log_warn("event=shutdown note=\"deliveries still running after %u s\"",
	    DRAIN_TIMEOUT_MS / 1000);
	ioloop_stop(srv->loop);
}

/* SIGTERM/SIGINT: accept nothing more; POP3 sessions close without
 * UPDATE once the loop stops, SMTP/LMTP deliveries in flight are answered
 * first (smtp_session_drain). A second signal stops at once. */
static void
on_terminate(void *ctx, int signo)
{
	struct server *srv = ctx;

	log_info("event=shutdown signal=%s sessions=%u", strsignal(signo), srv->session_count);
	if (srv->shutting_down) {
		ioloop_stop(srv->loop);
		return;
	}
	srv->shutting_down = true;
	for (unsigned i = 0; i < listener_count; i++) {
		timer_remove(&listeners[i].pause);
		io_remove(&listeners[i].io);
	}
	/* POP3 sessions end now, without UPDATE (RFC 1939 §6), not when the
	 * SMTP deliveries below have drained: a QUIT in between would
	 * delete. */
	session_close_all(srv, "shutdown");
	proxy_close_all(srv);
	if (smtp_session_drain(srv) == 0)
		ioloop_stop(srv->loop);
	else
		drain_timer = timer_add(srv->loop, DRAIN_TIMEOUT_MS, on_drain_timeout, srv);
}

/* SIGHUP: the configuration, and (where the passwd db is read: the auth
 * role) the passwd file it names, both or neither. 0 / -1 (logged). */
static int
reload_read(const struct server *srv, struct server_config **c_r, struct passwd_db **db_r,
    bool full)
{
	char *error = NULL;

	if ((*c_r = config_read(srv->config_path, full, &error)) == NULL) {
		log_error("event=reload_failed error=\"%s\"", error);
		free(error);
		return -1;
	}
	if (db_r != NULL && passwd_db_open((*c_r)->set.passwd_file, (*c_r)->set.mail_root,
	    db_r, &error) < 0) {
		log_error("event=reload_failed error=\"%s\"", error);
		free(error);
		server_config_unref(c_r);
		return -1;
	}
	return 0;
}

static void
on_reload(void *ctx, int signo)
{
	struct server *srv = ctx;
	struct server_config *c;
	struct passwd_db *db = NULL;

	if (srv->role == ROLE_LOGIN) {
		/* Chrooted: the master starts new login processes instead. */
		log_info("event=reload note=\"login processes are replaced by the master\"");
		return;
	}
	/* --single-process: this process is the auth role too. */
	if (reload_read(srv, &c, srv->authd != NULL ? &db : NULL, true) < 0)
		return;
	if (srv->authd != NULL)
		authd_reload(srv->authd, server_config_ref(c), db);
	if (srv->oauthd != NULL)
		oauthd_reload(srv->oauthd, server_config_ref(c));
	if (c->set.listen.count != srv->config->set.listen.count ||
	    c->set.tls_listen.count != srv->config->set.tls_listen.count ||
	    c->set.smtp_listen.count != srv->config->set.smtp_listen.count ||
	    c->set.lmtp_listen.count != srv->config->set.lmtp_listen.count)
		log_warn("event=reload note=\"listen changes need a restart\"");
	log_set_level((enum log_level)c->set.log_level);
	server_config_unref(&srv->config);
	srv->config = c;
	if (srv->worker == 0)
		config_warn(c, NULL);
	log_info("event=reloaded sessions=%u", srv->session_count);
}

/* This process accepts nothing more. */
static void
listeners_close(void)
{
	for (unsigned i = 0; i < listener_count; i++) {
		if (listeners[i].fd < 0)
			continue;
		timer_remove(&listeners[i].pause);
		io_remove(&listeners[i].io);
		close(listeners[i].fd);
		listeners[i].fd = -1;
	}
}

/* SIGUSR2, a login process replaced after a reload: accept nothing
 * more and end with the last session (proxied ones included). */
static void
on_retire(void *ctx, int signo)
{
	struct server *srv = ctx;

	if (srv->retiring)
		return;
	srv->retiring = true;
	listeners_close();
	log_info("event=retiring sessions=%u proxied=%u", srv->session_count,
	    srv->proxy_count);
	if (srv->session_count == 0 && srv->proxy_count == 0)
		ioloop_stop(srv->loop);
}

static void
on_sweep(void *ctx);

static struct timer *sweep_timer;

static void
on_sweep(void *ctx)
{
	struct server *srv = ctx;

	iptable_sweep(srv->ips, ioloop_now(srv->loop));
	sweep_timer = timer_add(srv->loop, SWEEP_INTERVAL_MS, on_sweep, srv);
}

/* Privsep as root: the serving, auth and login users exist, are not
 * root and are not the same (else the passwd file is open to the code
 * that reads client bytes, or the mail to the code before login). 0 /
 * -1 with a message in err. */
static int
check_users(const struct pobox_settings *set, bool single, char *err, size_t len)
{
	static const char *const what[3] = { "user", "auth_user", "login_user" };
	const char *names[3] = { set->user, set->auth_user, set->login_user };
	uid_t uids[3];

	for (unsigned i = 0; i < (single ? 1u : 3u); i++) {
		struct passwd *pw = names[i][0] != '\0' ? getpwnam(names[i]) : NULL;

		if (pw == NULL || pw->pw_uid == 0) {
			snprintf(err, len, "%s '%s' does not exist or is root; create it "
			    "(useradd --system %s); poboxd never serves as root",
			    what[i], names[i], names[i]);
			return -1;
		}
		uids[i] = pw->pw_uid;
		for (unsigned j = 0; j < i; j++) {
			if (uids[j] != uids[i])
				continue;
			snprintf(err, len, "%s '%s' has the uid of %s '%s': each role "
			    "needs its own user", what[i], names[i], what[j], names[j]);
			return -1;
		}
	}
	return 0;
}

/* As root: the capabilities the master needs, which a service manager
 * may have taken (systemd's CapabilityBoundingSet): to start each role
 * as its user (SETUID, SETGID), chrooted (SYS_CHROOT, privsep), and to
 * signal processes of other users (KILL, privsep: without it SIGTERM and
 * SIGHUP reach no role and a stop hangs; --single-process drops to user
 * before it forks, so it signals only its own). 0 / -1 with a message in
 * err. */
static int
check_root_caps(bool single, char *err, size_t len)
{
	static const struct { int cap; const char *name; bool privsep_only; } need[] = {
		{ CAP_SETUID, "CAP_SETUID", false }, { CAP_SETGID, "CAP_SETGID", false },
		{ CAP_KILL, "CAP_KILL", true }, { CAP_SYS_CHROOT, "CAP_SYS_CHROOT", true },
	};
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (geteuid() != 0 || syscall(SYS_capget, &h, d) < 0)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(need); i++) {
		if ((single && need[i].privsep_only) ||
		    (d[need[i].cap / 32].effective & (1u << (need[i].cap % 32))) != 0)
			continue;
		snprintf(err, len, "running as root without %s: poboxd needs it to %s; "
		    "add it to the service's CapabilityBoundingSet", need[i].name,
		    need[i].cap == CAP_KILL ? "stop and reload its processes of other users" :
		    need[i].cap == CAP_SYS_CHROOT ? "chroot its login processes" :
		    "start each role as its user");
		return -1;
	}
	return 0;
}

/* Runs fn(set) in a child as user: 0 if it exits 0. */
static int
check_as(const char *user, const struct pobox_settings *set,
    int (*fn)(const char *user, const struct pobox_settings *set))
{
	struct passwd *pw = getpwnam(user);
	int status;
	pid_t pid;

	if (pw == NULL)
		return 0;      /* check_users has said so */
	if ((pid = fork()) < 0) {
		/* Not checked is not a pass (nor a "can read" warning). */
		fprintf(stderr, "poboxd: cannot check as %s: fork: %s\n", user, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
			_exit(2);
		_exit(fn(user, set) == 0 ? 0 : 1);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int
check_passwd_readable(const char *user, const struct pobox_settings *set)
{
	if (access(set->passwd_file, R_OK) < 0) {
		fprintf(stderr, "poboxd: user %s cannot read passwd_file %s: %s\n",
		    user, set->passwd_file, strerror(errno));
		return -1;
	}
	return 0;
}

/* Silent: for the users who should not read it. */
static int
passwd_readable(const char *user, const struct pobox_settings *set)
{
	(void)user;
	return access(set->passwd_file, R_OK);
}

/* Readable by its reader and every line valid: parsed as that user, so
 * -t works where root may not read another user's files (a service
 * without CAP_DAC_OVERRIDE). */
static int
check_passwd_file(const char *user, const struct pobox_settings *set)
{
	struct passwd_db *db = NULL;
	char *error = NULL;

	if (check_passwd_readable(user, set) < 0)
		return -1;
	if (passwd_db_open(set->passwd_file, set->mail_root, &db, &error) < 0) {
		fprintf(stderr, "poboxd: %s\n", error);
		free(error);
		return -1;
	}
	passwd_db_free(&db);
	return 0;
}

static int
check_serving(const char *user, const struct pobox_settings *set)
{
	int bad = 0;

	/* SIGHUP re-reads the aliases as this user. */
	if (set->aliases_file[0] != '\0' && access(set->aliases_file, R_OK) < 0) {
		fprintf(stderr, "poboxd: user %s cannot read aliases_file %s: %s\n",
		    user, set->aliases_file, strerror(errno));
		bad = 1;
	}
	if (access(set->mail_root, R_OK | W_OK | X_OK) < 0) {
		/* Missing is fine when every entry names its maildir. */
		fprintf(stderr, "poboxd: %suser %s cannot use mail_root %s: %s\n",
		    errno == ENOENT ? "warning: " : "", user, set->mail_root, strerror(errno));
		bad = errno != ENOENT;
	}
	return bad ? -1 : 0;
}

/* The verifier runs as login_user (or, with -X, as user). */
static int
check_verifier(const char *user, const struct pobox_settings *set)
{
	if (access(set->oauth_verify_command, X_OK) < 0) {
		fprintf(stderr, "poboxd: user %s cannot run oauth_verify_command %s: %s\n",
		    user, set->oauth_verify_command, strerror(errno));
		return -1;
	}
	return 0;
}

/* poboxd -t as root: what each role's user must reach, checked as that
 * user in a child, so a permission problem shows before the start. */
static int
check_as_user(const struct pobox_settings *set, bool single)
{
	char err[400];
	int bad = 0;

	if (geteuid() != 0)
		return 0;
	if (check_users(set, single, err, sizeof(err)) < 0 ||
	    check_root_caps(single, err, sizeof(err)) < 0) {
		fprintf(stderr, "poboxd: %s\n", err);
		return -1;
	}
	if (check_as(single ? set->user : set->auth_user, set, check_passwd_file) < 0)
		bad = 1;
	for (unsigned i = 0; !single && i < 2; i++) {
		const char *u = i == 0 ? set->user : set->login_user;
		if (check_as(u, set, passwd_readable) == 0)
			fprintf(stderr, "poboxd: warning: %s %s can read passwd_file %s: "
			    "make it readable by auth_user %s alone\n",
			    i == 0 ? "user" : "login_user", u, set->passwd_file, set->auth_user);
	}
	if (check_as(set->user, set, check_serving) < 0)
		bad = 1;
	if (set->oauth_verify_command[0] != '\0' &&
	    check_as(single ? set->user : set->login_user, set, check_verifier) < 0)
		bad = 1;
	if (!single && access(set->login_chroot, F_OK) == 0 &&
	    login_chroot_ready(set->login_chroot, false, err, sizeof(err)) < 0) {
		fprintf(stderr, "poboxd: %s\n", err);
		bad = 1;
	}
	return bad ? -1 : 0;
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: poboxd [-c FILE] [-f] [-X] [-n | -t] [-V]\n"
	    "  -c FILE  configuration file (default " POBOX_DEFAULT_CONFIG ")\n"
	    "  -f       stay in the foreground and log to stderr\n"
	    "  -n       print the effective configuration and exit\n"
	    "  -t       check the configuration and exit\n"
	    "  -X, --single-process\n"
	    "           no privilege separation: each worker reads the passwd\n"
	    "           file itself, as `user` (tests, gdb)\n"
	    "  -V       print the version and exit\n");
}

/* Test hook: POBOXD_TEST_OPEN names files (separated by ':') that this
 * process tries to open read-only as it starts, logging each outcome
 * (event=test_open), so the e2e tests can show what a role cannot reach
 * with its real credentials. Reads nothing from the files. */
static void
test_open_hook(const char *role)
{
	const char *list = getenv("POBOXD_TEST_OPEN");
	char *copy, *save = NULL;

	if (list == NULL || list[0] == '\0')
		return;
	copy = xstrdup(list);
	for (char *p = strtok_r(copy, ":", &save); p != NULL; p = strtok_r(NULL, ":", &save)) {
		char v[300];
		int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

		log_info("event=test_open role=%s pid=%d path=%s result=%s", role,
		    (int)getpid(), log_value(v, sizeof(v), p),
		    fd >= 0 ? "opened" : errno == EACCES || errno == EPERM ? "denied" :
		    "failed");
		if (fd >= 0)
			close(fd);
	}
	free(copy);
}

/* What the auth process may do once set up: its loop (epoll, signalfd,
 * the workq's eventfd, timers), memory, threads (the hashes), IPC with
 * fd passing, memfds for the user table, re-reading the configuration,
 * aliases, JWKS and passwd files (SIGHUP, and the passwd file's change
 * check), the clock and randomness, logging (stderr, or syslog over an
 * AF_UNIX socket: socket(2) is limited to AF_UNIX in sandbox.c). No
 * exec, no network sockets, no ioctl, no ptrace, no chmod, unlink or
 * rename. Taken from strace of logins of every kind, SIGHUP and a
 * passwd file change (test_privsep runs them under the filter). */
static const char *const auth_syscalls[] = {
	"read", "write", "readv", "writev", "pread64", "close", "lseek",
	"openat", "open", "fstat", "newfstatat", "stat", "lstat", "statx",
	"access", "faccessat", "faccessat2", "fcntl", "dup", "dup3",
	"mmap", "munmap", "mremap", "mprotect", "brk", "madvise",
	"futex", "set_robust_list", "rseq", "clone", "clone3", "exit", "exit_group",
	"restart_syscall", "sched_yield",
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"poll", "ppoll", "eventfd2", "signalfd4",
	"rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "tgkill",
	"sendmsg", "recvmsg", "sendto", "socket", "connect",
	"memfd_create", "getrandom", "clock_gettime", "gettimeofday", "time",
	"nanosleep", "clock_nanosleep", "getpid", "gettid", "getppid",
	"getuid", "geteuid", "getgid", "getegid", "uname",
	NULL,
};

/* What a mail process may do once set up (privsep): the auth process's
 * list plus serving clients (accept, socket options, shutdown) and
 * Maildirs (link, rename, unlink, mkdir, fsync, flock, utimensat for
 * LOGIN-DELAY, directory reads, O_TMPFILE spools). No exec, no network
 * socket of its own, no ptrace, no chmod/chown, no ioctl. */
static const char *const worker_syscalls[] = {
	"accept4", "accept", "setsockopt", "getsockopt", "getsockname",
	"getpeername", "shutdown", "recvfrom",
	"link", "linkat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
	"mkdir", "mkdirat", "fsync", "fdatasync", "flock", "utimensat",
	"getdents64", "fstatfs", "statfs", "ftruncate", "pwrite64", "umask",
	"fadvise64", "readlink",
	"sched_getaffinity", "sigaltstack",
	NULL,
};

/* What a login process may do on top of the auth process's list: serve
 * clients (accept, socket options, shutdown) and make the socketpair of
 * a TLS proxy. Its file calls find an empty chroot. No socket of its
 * own: syslog's was connected before the chroot, and a reconnect could
 * only find abstract AF_UNIX sockets (no path reaches them in the
 * chroot, and no file permission guards them), so socket and connect
 * fail (EPERM: glibc's syslog tries them after a syslogd restart). */
static const char *const login_syscalls[] = {
	"accept4", "accept", "setsockopt", "getsockopt", "getsockname",
	"getpeername", "shutdown", "recvfrom", "socketpair",
	"sched_getaffinity", "sigaltstack",
	"!socket", "!connect",
	NULL,
};

/* Test hook: POBOXD_TEST_CONNECT names an abstract AF_UNIX socket this
 * process tries to reach once its filter is on (event=test_connect), so
 * the e2e tests can show which roles cannot: a stream socket by connect,
 * and a datagram socket NAME-dgram by a datagram sent to it with its
 * address from a socketpair (no socket or connect call needed). */
static void
test_connect_hook(const char *role)
{
	const char *name = getenv("POBOXD_TEST_CONNECT");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *result, *dgram = "failed";
	size_t len;
	int fd, sv[2], r = -1;

	if (name == NULL || (len = strlen(name)) == 0 || len + 6 >= sizeof(sun.sun_path))
		return;
	memcpy(sun.sun_path + 1, name, len);   /* sun_path[0] = 0: abstract */
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
		r = connect(fd, (struct sockaddr *)&sun,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len));
		close(fd);
	}
	result = r == 0 ? "connected" : errno == EPERM || errno == EACCES ? "denied" :
	    "failed";
	memcpy(sun.sun_path + 1 + len, "-dgram", 6);
	/* A socket where one may be made (a mail process has no
	 * socketpair), else one of a pair (a login process). */
	sv[1] = -1;
	if ((sv[0] = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0 ||
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) == 0) {
		r = (int)sendto(sv[0], role, strlen(role), MSG_DONTWAIT, (struct sockaddr *)&sun,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len + 6));
		dgram = r >= 0 ? "sent" : errno == EPERM || errno == EACCES ? "denied" : "failed";
		close(sv[0]);
		if (sv[1] >= 0)
			close(sv[1]);
	}
	log_info("event=test_connect role=%s pid=%d result=%s dgram=%s", role,
	    (int)getpid(), result, dgram);
}

/* A login process reaches no abstract AF_UNIX socket: seccomp refuses
 * socket and connect, but a datagram sent by address (sendmsg on
 * syslog's socket or a socketpair) is beyond it; Landlock scopes those
 * where the kernel can (6.12). 0 / -1 (logged). */
static int
login_scope(void)
{
	char *error = NULL;

	switch (sandbox_scope_abstract_unix(&error)) {
	case -1:
		log_error("event=startup error=\"%s\"", error);
		free(error);
		return -1;
	case 1:
		log_info("event=sandbox_partial reason=no_landlock_scope note=\"datagrams "
		    "to abstract AF_UNIX sockets are not refused (Linux 6.12 can)\"");
		return 0;
	}
	return 0;
}

/* Privsep only (-X stays as it was); 0 / -1 (logged). */
static int
worker_sandbox(struct server *srv)
{
	char *error = NULL;

	if (srv->authd_local)
		return 0;
	switch (sandbox_seccomp2(auth_syscalls, srv->role == ROLE_LOGIN ? login_syscalls :
	    worker_syscalls, &error)) {
	case -1:
		log_error("event=startup error=\"%s\"", error);
		free(error);
		return -1;
	case 1:
		log_warn("event=sandbox_skipped reason=sanitizer");
		return 0;
	}
	return 0;
}

static bool
role_serves(enum server_role role, enum listener_kind kind)
{
	return role == ROLE_WHOLE || (role == ROLE_LOGIN) == (kind == LISTEN_POP3);
}

static const char *
role_name(enum server_role role)
{
	return role == ROLE_LOGIN ? "login" : role == ROLE_MAIL ? "mail" : "worker";
}

/* One serving process: the event loop over this worker's listeners of
 * its role. auth_sock: its channel to the auth process; -1:
 * --single-process, the auth role runs here, on srv->db. peer_sock: a
 * login process's channel to its mail process, a mail process's from
 * the master; -1 for ROLE_WHOLE. announce: log the listeners. */
static int
serve(struct server *srv, unsigned worker, unsigned row, enum server_role role,
    int auth_sock, int peer_sock, bool announce)
{
	srv->worker = worker;
	srv->limits_row = row;
	srv->role = role;
	/* Our row of the shared counts, and only ours, writable. */
	if (limits_confine(srv->limits, row) < 0) {
		log_error("event=startup error=\"session counters: %s\"", strerror(errno));
		return 1;
	}
	for (unsigned i = 0; i < listener_count; i++) {
		if ((listeners[i].worker != worker && listeners[i].worker != WORKER_ALL) ||
		    !role_serves(role, listeners[i].kind)) {
			close(listeners[i].fd);
			listeners[i].fd = -1;
		}
	}
	srv->loop = ioloop_new();
	srv->ips = iptable_new();
	/* Signals first: the hashing threads inherit the blocked mask. */
	ioloop_add_signal(srv->loop, SIGTERM, on_terminate, srv);
	ioloop_add_signal(srv->loop, SIGINT, on_terminate, srv);
	ioloop_add_signal(srv->loop, SIGHUP, on_reload, srv);
	if (role == ROLE_LOGIN)
		ioloop_add_signal(srv->loop, SIGUSR2, on_retire, srv);
	/* Before any thread: Landlock binds only the threads made later. */
	if (role == ROLE_LOGIN && login_scope() < 0)
		return 1;
	srv->workq = workq_new(srv->loop, srv->config->set.auth_workers);
	/* Deliveries wait on the disk, not the CPU: their own threads, so
	 * an fsync never delays a login, and enough of them that concurrent
	 * fsyncs share journal commits. */
	if (role != ROLE_LOGIN && (srv->config->set.smtp_listen.count > 0 ||
	    srv->config->set.lmtp_listen.count > 0))
		srv->deliver_wq = workq_new(srv->loop, DELIVER_THREADS);
	if (auth_sock < 0) {
		int sv[2];

		if (ipc_socketpair(sv) < 0)
			log_fatal("event=startup error=\"socketpair: %s\"", strerror(errno));
		srv->authd_local = true;
		srv->authd = authd_new(srv->loop, server_config_ref(srv->config), srv->db,
		    srv->sasl_secret, sizeof(srv->sasl_secret), srv->hostname);
		srv->db = NULL;  /* the authd's now; ours comes over the channel */
		authd_add_client(srv->authd, sv[0], AUTHP_KIND_WHOLE);
		auth_sock = sv[1];
		/* The OAuth verifier role too, on this loop (its threads are
		 * made at the first token). */
		if (ipc_socketpair(sv) < 0)
			log_fatal("event=startup error=\"socketpair: %s\"", strerror(errno));
		srv->oauthd = oauthd_new(srv->loop, server_config_ref(srv->config), sv[0]);
		authd_set_verifier(srv->authd, sv[1]);
	}
	if (authclient_connect(srv, auth_sock) < 0)
		return 1;
	if (role == ROLE_LOGIN)
		handoff_connect(srv, peer_sock);
	else if (role == ROLE_MAIL)
		mailrole_start(srv, peer_sock);
	test_open_hook(role_name(role));
	for (unsigned i = 0; i < listener_count; i++) {
		if (listeners[i].fd < 0)
			continue;
		listeners[i].io = io_add(srv->loop, listeners[i].fd, IO_READ,
		    listener_accept, &listeners[i]);
		if (worker == 0 && announce)
			log_info("event=listening addr=%s%s%s", listeners[i].name,
			    listeners[i].tls ? " tls=yes" : "",
			    listeners[i].kind == LISTEN_SMTP ? " proto=smtp" :
			    listeners[i].kind == LISTEN_LMTP ? " proto=lmtp" : "");
	}
	sweep_timer = timer_add(srv->loop, SWEEP_INTERVAL_MS, on_sweep, srv);
	if (worker_sandbox(srv) < 0)
		return 1;
	test_connect_hook(role_name(role));
	log_info("event=started version=%s worker=%u role=%s uid=%d pid=%d", POBOXD_VERSION,
	    worker, role_name(role), (int)getuid(), (int)getpid());

	ioloop_run(srv->loop);

	listeners_close();
	timer_remove(&drain_timer);
	srv->retiring = false; /* no stop from inside the frees below */
	session_close_all(srv, "shutdown");
	proxy_close_all(srv);
	handoff_close(srv);
	/* Deliveries in flight are stored anyway: their 250 goes out before
	 * the 421, or the client would send them again. */
	smtp_session_shutdown(srv);
	workq_free(&srv->deliver_wq);
	smtp_session_close_all(srv, "shutdown");
	mailrole_close(srv);
	workq_free(&srv->workq);
	authclient_close(srv);
	oauthd_free(&srv->oauthd);
	authd_free(&srv->authd);
	timer_remove(&sweep_timer);
	iptable_free(&srv->ips);
	passwd_db_free(&srv->db);
	server_config_unref(&srv->config);
	limits_free(&srv->limits);
	ioloop_free(&srv->loop);
	log_info("event=stopped worker=%u role=%s", worker, role_name(role));
	return 0;
}

/* ---- the auth process (privsep): the passwd db, the cache, the hashing
 * threads and the SASL mechanisms (authd.c), as auth_user. */

static struct authd *auth_role;


static void
auth_on_signal(void *ctx, int signo)
{
	struct server *srv = ctx;
	struct server_config *c;
	struct passwd_db *db;

	if (signo != SIGHUP) {
		ioloop_stop(srv->loop);
		return;
	}
	if (reload_read(srv, &c, &db, false) == 0) {
		char *error = NULL;

		if (c->set.oauth_jwks_file[0] != '\0' &&
		    jwks_load(c->set.oauth_jwks_file, &c->jwks, &error) < 0) {
			log_error("event=reload_failed error=\"oauth_jwks_file: %s\"", error);
			free(error);
			server_config_unref(&c);
			passwd_db_free(&db);
			return;
		}
		server_config_unref(&srv->config);
		srv->config = server_config_ref(c);
		authd_reload(auth_role, c, db);
		log_info("event=auth_reloaded");
	}
}

static void
auth_ctl_msg(void *ctx, struct ipc_msg *m)
{
	uint64_t kind;

	if (m->type == AUTHP_CLIENT && m->fd >= 0 && ipc_u64(m, 0, &kind) == 0 &&
	    (kind == AUTHP_KIND_LOGIN || kind == AUTHP_KIND_MAIL)) {
		authd_add_client(auth_role, m->fd, (enum authp_kind)kind);
		m->fd = -1;
		return;
	}
	if (m->type == AUTHP_VERIFIER && m->fd >= 0) {
		authd_set_verifier(auth_role, m->fd);
		m->fd = -1;
		return;
	}
	log_error("event=auth_ctl_error error=\"unexpected message %u\"", m->type);
}

static void
auth_ctl_close(void *ctx, const char *why)
{
	struct server *srv = ctx;

	/* The master is gone: so are we. */
	ioloop_stop(srv->loop);
}

int
authd_main(struct server *srv, int ctl)
{
	static const struct ipc_chan_callbacks cb = { auth_ctl_msg, auth_ctl_close };
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	struct passwd_db *db;
	struct ipc_chan *chan;
	struct ipc_out o;
	char *error = NULL;
	int r;

	/* The master's TLS keys and aliases are no business of this process
	 * (nor are they re-read here on SIGHUP); the JWKS is: OAuth tokens
	 * are checked here. */
	tls_ctx_free(&srv->config->tls_ctx);
	aliases_free(&srv->config->aliases);
	if (passwd_db_open(srv->config->set.passwd_file, srv->config->set.mail_root,
	    &db, &error) < 0) {
		log_error("event=startup role=auth error=\"%s\"", error);
		free(error);
		return 1;
	}
	srv->loop = ioloop_new();
	for (size_t i = 0; i < ARRAY_SIZE(signals); i++)
		ioloop_add_signal(srv->loop, signals[i], auth_on_signal, srv);
	auth_role = authd_new(srv->loop, server_config_ref(srv->config), db,
	    srv->sasl_secret, sizeof(srv->sasl_secret), srv->hostname);
	/* Set up (threads started, files read): from here on the process
	 * holding every hash can only do what serving logins needs. */
	if ((r = sandbox_seccomp(auth_syscalls, &error)) > 0)
		log_warn("event=sandbox_skipped role=auth reason=sanitizer");
	if (r < 0) {
		log_error("event=startup role=auth error=\"%s\"", error);
		free(error);
		authd_free(&auth_role);
		ioloop_free(&srv->loop);
		return 1;
	}
	ipc_out_init(&o, AUTHP_READY, 0);
	if (ipc_send(ctl, &o, -1) < 0) {
		authd_free(&auth_role);
		ioloop_free(&srv->loop);
		return 1;
	}
	chan = ipc_chan_new(srv->loop, ctl, &cb, srv);
	log_info("event=auth_started uid=%d pid=%d", (int)getuid(), (int)getpid());
	ioloop_run(srv->loop);
	ipc_chan_free(&chan);
	authd_free(&auth_role);
	server_config_unref(&srv->config);
	ioloop_free(&srv->loop);
	log_info("event=stopped role=auth");
	return 0;
}

/* The supervising parent: forwards signals, restarts a process that
 * died. Privsep (the default): it stays root, starts the auth process
 * (auth_user) first, then per slot (`workers` of them) a mail process
 * (user: the maildrops, SMTP/LMTP) and a login process (login_user,
 * chrooted: pre-login POP3 and TLS) with a channel between them; every
 * process gets a channel to auth. With oauth_verify_command, an OAuth
 * verifier process (login_user, oauthd.c) serves auth on a channel too.
 * A reload replaces the login processes
 * (they cannot re-read certificates in their chroot): the new ones take
 * the listeners, the old ones end with their last session.
 * --single-process: it has dropped to `user` already and each worker is
 * whole (login, mail and the auth role in it). */
#define LOGIN_GENERATIONS 4 /* login processes per slot, retiring included */

struct master {
	struct server *srv;
	pid_t pid;                 /* the master's, for its children to compare */
	struct ioloop *loop;
	struct timer *respawn;
	pid_t pids[WORKERS_MAX];   /* whole workers, or (privsep) mail processes */
	int mail_ctl[WORKERS_MAX]; /* to each mail process; -1: none */
	/* Login processes: row W + g * W + w of the limits is generation g
	 * of slot w; login_cur[w] is the generation accepting, or -1. */
	pid_t login_pids[LOGIN_GENERATIONS][WORKERS_MAX];
	int login_cur[WORKERS_MAX];
	bool chroot;               /* login processes are chrooted */
	unsigned live;             /* children but auth (oauth included) */
	pid_t auth_pid;            /* 0: not running */
	int auth_ctl;              /* to the auth process; -1: none */
	/* The OAuth verifier process, while oauth_verify_command is set;
	 * counted in live. */
	pid_t oauth_pid;           /* 0: not running */
	char *oauth_command;       /* what it runs, and its time limit */
	unsigned oauth_timeout;
	bool oauth_replacing;      /* SIGTERM sent: a new one when it ends */
	bool single;
	bool stopping;
};

static void master_schedule_respawn(struct master *m);

/* In a new child: the master's channels are not its business. */
static void
child_setup(struct master *m, const char *name)
{
	/* A child must not outlive its supervisor, holding the ports. */
	prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
	/* Died before that: reparented. Not "parent is 1": a master that is
	 * PID 1 of its namespace (a container) is alive. */
	if (getppid() != m->pid)
		_exit(0);
	if (m->auth_ctl >= 0)
		close(m->auth_ctl);
	for (unsigned w = 0; w < m->srv->workers; w++)
		if (m->mail_ctl[w] >= 0)
			close(m->mail_ctl[w]);
	/* The master's epoll set and signalfd are shared across fork: a
	 * child taken over could take the master's signals out of its set. */
	ioloop_forget(&m->loop);
	/* ps and the tests tell the roles apart by name. */
	if (name != NULL)
		prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* Forks a role that serves no client (auth, oauth) with a channel to
 * the master. In the child (0): *end is its end, its name set, no
 * listener and no session counts (no client socket ever reaches it). In
 * the master: the pid, *end the master's end. -1 (logged). */
static pid_t
master_fork_helper(struct master *m, const char *role, const char *name, int *end)
{
	int sv[2];
	pid_t pid;

	if (ipc_socketpair(sv) < 0) {
		log_error("event=fork_failed role=%s error=\"%s\"", role, strerror(errno));
		return -1;
	}
	if ((pid = fork()) < 0) {
		log_error("event=fork_failed role=%s error=\"%s\"", role, strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		child_setup(m, name);
		for (unsigned i = 0; i < listener_count; i++)
			close(listeners[i].fd);
		limits_free(&m->srv->limits);
		*end = sv[1];
		return 0;
	}
	close(sv[1]);
	*end = sv[0];
	return pid;
}

/* Starts the auth process and waits for it to load the passwd file.
 * 0 / -1 (logged). */
static int
master_spawn_auth(struct master *m)
{
	struct ipc_msg *msg;
	int ctl, r;
	pid_t pid;

	if ((pid = master_fork_helper(m, "auth", "poboxd-auth", &ctl)) < 0)
		return -1;
	if (pid == 0) {
		if (drop_privileges(m->srv->config->set.auth_user, NULL) < 0)
			_exit(1);
		_exit(authd_main(m->srv, ctl));
	}
	m->auth_pid = pid;
	msg = xmalloc(sizeof(*msg));
	r = ipc_recv(ctl, msg);
	if (r <= 0 || msg->type != AUTHP_READY) {
		ipc_msg_clear(msg);
		free(msg);
		close(ctl);
		log_error("event=auth_failed note=\"the auth process did not start\"");
		return -1;
	}
	free(msg);
	m->auth_ctl = ctl;
	return 0;
}

/* A new channel to the auth process for a process of kind: the
 * serving end, or -1. */
static int
master_auth_channel(struct master *m, enum authp_kind kind)
{
	struct ipc_out o;
	int sv[2];

	if (m->auth_ctl < 0 || ipc_socketpair(sv) < 0)
		return -1;
	ipc_out_init(&o, AUTHP_CLIENT, 0);
	ipc_put_u64(&o, kind);
	if (ipc_send(m->auth_ctl, &o, sv[0]) < 0) {
		log_error("event=fork_failed error=\"auth: %s\"", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	close(sv[0]);
	return sv[1];
}

/* The OAuth verifier process (oauthd.c) while oauth_verify_command is
 * set: as login_user (it owns nothing), not chrooted (the command needs
 * the file system) and not filtered (it execs), holding nothing of the
 * master's; auth gets the other end of its channel. 0 (started, or not
 * wanted) / -1 (logged). */
static int
master_spawn_oauth(struct master *m)
{
	const struct pobox_settings *set = &m->srv->config->set;
	struct ipc_out o;
	int chan;
	pid_t pid;

	if (set->oauth_verify_command[0] == '\0' || m->oauth_pid != 0)
		return 0;
	if (m->auth_ctl < 0)
		return -1;
	if ((pid = master_fork_helper(m, "oauth", "poboxd-oauth", &chan)) < 0)
		return -1;
	if (pid == 0) {
		tls_ctx_free(&m->srv->config->tls_ctx);
		aliases_free(&m->srv->config->aliases);
		secret_wipe(m->srv->sasl_secret, sizeof(m->srv->sasl_secret));
		if (drop_privileges(set->login_user, NULL) < 0)
			_exit(1);
		test_open_hook("oauth");
		_exit(oauthd_main(m->srv, chan));
	}
	/* The other end goes to auth. Should this fail, the verifier finds
	 * its channel closed and ends; it is started again then. */
	ipc_out_init(&o, AUTHP_VERIFIER, 0);
	if (ipc_send(m->auth_ctl, &o, chan) < 0)
		log_error("event=fork_failed role=oauth error=\"auth: %s\"", strerror(errno));
	close(chan);
	m->oauth_pid = pid;
	free(m->oauth_command);
	m->oauth_command = xstrdup(set->oauth_verify_command);
	m->oauth_timeout = set->oauth_verify_timeout;
	m->live++;
	return 0;
}

/* SIGHUP: a verifier process for a command just set; a new one for a
 * changed command or time limit (checks in flight get a tempfail); none
 * once unset. */
static void
master_oauth_update(struct master *m)
{
	const struct pobox_settings *set = &m->srv->config->set;

	if (m->oauth_pid == 0) {
		if (master_spawn_oauth(m) < 0)
			master_schedule_respawn(m);
		return;
	}
	if (!m->oauth_replacing && (strcmp(set->oauth_verify_command,
	    m->oauth_command) != 0 || set->oauth_verify_timeout != m->oauth_timeout)) {
		m->oauth_replacing = true;
		kill(m->oauth_pid, SIGTERM);
	}
}

/* --single-process: worker w, whole. */
static void
master_spawn_whole(struct master *m, unsigned w)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_error("event=fork_failed worker=%u error=\"%s\"", w, strerror(errno));
		return;
	}
	if (pid == 0) {
		child_setup(m, NULL);
		/* The child leaves the parent's loop alone and builds its own. */
		_exit(serve(m->srv, w, w, ROLE_WHOLE, -1, -1, true));
	}
	m->pids[w] = pid;
	m->live++;
}

static void
master_spawn_mail(struct master *m, unsigned w)
{
	int auth = master_auth_channel(m, AUTHP_KIND_MAIL), ctl[2];
	pid_t pid;

	if (auth < 0) {
		master_schedule_respawn(m);
		return;
	}
	if (ipc_socketpair(ctl) < 0 || (pid = fork()) < 0) {
		log_error("event=fork_failed worker=%u role=mail error=\"%s\"", w,
		    strerror(errno));
		close(auth);
		master_schedule_respawn(m);
		return;
	}
	if (pid == 0) {
		close(ctl[0]);
		child_setup(m, "poboxd-mail");
		if (drop_privileges(m->srv->config->set.user, NULL) < 0)
			_exit(1);
		_exit(serve(m->srv, w, w, ROLE_MAIL, auth, ctl[1], true));
	}
	close(auth);
	close(ctl[1]);
	m->pids[w] = pid;
	m->mail_ctl[w] = ctl[0];
	m->live++;
}

/* A login process for slot w, taking the slot's listeners over; 0, or
 * -1 (no free generation, or no mail process yet). */
static int
master_spawn_login(struct master *m, unsigned w, bool announce)
{
	const struct pobox_settings *set = &m->srv->config->set;
	unsigned g, W = m->srv->workers;
	struct ipc_out o;
	int auth, link[2];
	pid_t pid;

	for (g = 0; g < LOGIN_GENERATIONS && m->login_pids[g][w] != 0; g++)
		;
	if (g == LOGIN_GENERATIONS || m->mail_ctl[w] < 0)
		return -1;
	if (ipc_socketpair(link) < 0)
		return -1;
	ipc_out_init(&o, MAILP_LOGIN, 0);
	if (ipc_send(m->mail_ctl[w], &o, link[0]) < 0) {
		close(link[0]);
		close(link[1]);
		return -1;
	}
	close(link[0]);
	if ((auth = master_auth_channel(m, AUTHP_KIND_LOGIN)) < 0) {
		close(link[1]);
		return -1;
	}
	if ((pid = fork()) < 0) {
		log_error("event=fork_failed worker=%u role=login error=\"%s\"", w,
		    strerror(errno));
		close(auth);
		close(link[1]);
		return -1;
	}
	if (pid == 0) {
		child_setup(m, "poboxd-login");
		if (drop_privileges(set->login_user, m->chroot ? set->login_chroot : NULL) < 0)
			_exit(1);
		_exit(serve(m->srv, w, W + g * W + w, ROLE_LOGIN, auth, link[1], announce));
	}
	close(auth);
	close(link[1]);
	m->login_pids[g][w] = pid;
	m->login_cur[w] = (int)g;
	m->live++;
	return 0;
}

static void
master_respawn(void *ctx)
{
	struct master *m = ctx;

	m->respawn = NULL;
	if (m->stopping)
		return;
	if (!m->single && m->auth_pid == 0 && master_spawn_auth(m) < 0) {
		master_schedule_respawn(m);
		return;
	}
	if (!m->single && master_spawn_oauth(m) < 0)
		master_schedule_respawn(m);
	for (unsigned w = 0; w < m->srv->workers; w++) {
		if (m->single) {
			if (m->pids[w] == 0)
				master_spawn_whole(m, w);
			continue;
		}
		if (m->pids[w] == 0)
			master_spawn_mail(m, w);
		if (m->login_cur[w] < 0 && m->pids[w] != 0 &&
		    master_spawn_login(m, w, true) < 0)
			master_schedule_respawn(m);
	}
}

static void
master_schedule_respawn(struct master *m)
{
	if (m->respawn == NULL && !m->stopping)
		m->respawn = timer_add(m->loop, RESPAWN_DELAY_MS, master_respawn, m);
}

/* Stopping: the serving processes first (SMTP deliveries drain), then
 * auth. */
static void
master_check_stopped(struct master *m)
{
	if (!m->stopping || m->live > 0)
		return;
	if (m->auth_pid > 0)
		kill(m->auth_pid, SIGTERM);
	else
		ioloop_stop(m->loop);
}

/* Signals every serving process (retiring login processes too). */
static void
master_kill_all(struct master *m, int signo)
{
	if (m->oauth_pid > 0)
		kill(m->oauth_pid, signo);
	for (unsigned w = 0; w < m->srv->workers; w++) {
		if (m->pids[w] > 0)
			kill(m->pids[w], signo);
		for (unsigned g = 0; g < LOGIN_GENERATIONS; g++)
			if (m->login_pids[g][w] > 0)
				kill(m->login_pids[g][w], signo);
	}
}

static void
master_reaped(struct master *m, pid_t pid, int status)
{
	unsigned W = m->srv->workers;

	if (pid == m->auth_pid) {
		m->auth_pid = 0;
		if (m->auth_ctl >= 0)
			close(m->auth_ctl);
		m->auth_ctl = -1;
		/* The serving processes lose their channel and end; all come
		 * back once auth is running again. */
		if (!m->stopping) {
			log_error("event=auth_died pid=%d status=%d", (int)pid, status);
			master_schedule_respawn(m);
		}
		return;
	}
	if (pid == m->oauth_pid) {
		m->oauth_pid = 0;
		m->live--;
		if (m->stopping)
			return;
		if (m->oauth_replacing) {
			m->oauth_replacing = false;
			log_info("event=oauth_replaced pid=%d", (int)pid);
			if (master_spawn_oauth(m) < 0)
				master_schedule_respawn(m);
			return;
		}
		/* Exit 0: it ended with its auth process, and comes back with
		 * the next one. */
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			log_info("event=oauth_stopped pid=%d", (int)pid);
		else
			log_error("event=oauth_died pid=%d status=%d", (int)pid, status);
		master_schedule_respawn(m);
		return;
	}
	for (unsigned w = 0; w < W; w++) {
		if (m->pids[w] == pid) {
			m->pids[w] = 0;
			m->live--;
			if (m->mail_ctl[w] >= 0)
				close(m->mail_ctl[w]);
			m->mail_ctl[w] = -1;
			limits_reset_worker(m->srv->limits, w);
			if (!m->stopping) {
				log_error("event=worker_died worker=%u%s pid=%d status=%d", w,
				    m->single ? "" : " role=mail", (int)pid, status);
				master_schedule_respawn(m);
			}
			return;
		}
		for (unsigned g = 0; g < LOGIN_GENERATIONS; g++) {
			if (m->login_pids[g][w] != pid)
				continue;
			m->login_pids[g][w] = 0;
			m->live--;
			limits_reset_worker(m->srv->limits, W + g * W + w);
			if (m->login_cur[w] != (int)g) {
				log_info("event=login_retired worker=%u pid=%d", w, (int)pid);
				return;
			}
			m->login_cur[w] = -1;
			if (!m->stopping) {
				log_error("event=worker_died worker=%u role=login pid=%d status=%d",
				    w, (int)pid, status);
				master_schedule_respawn(m);
			}
			return;
		}
	}
}

/* Whether pid is one of the roles the master started. */
static bool
master_known(const struct master *m, pid_t pid)
{
	if (pid == m->auth_pid || pid == m->oauth_pid)
		return true;
	for (unsigned w = 0; w < m->srv->workers; w++) {
		if (m->pids[w] == pid)
			return true;
		for (unsigned g = 0; g < LOGIN_GENERATIONS; g++)
			if (m->login_pids[g][w] == pid)
				return true;
	}
	return false;
}

/* The master is a subreaper: verifier commands left running by an OAuth
 * verifier (or, -X, a worker) that was killed become its children here,
 * and nothing else does. Each goes with its process group (the
 * verifier's own; as our unreaped child its id cannot have been reused),
 * instead of running on unbounded; SIGCHLD reaps them. */
static void
master_kill_orphans(const struct master *m)
{
	DIR *d = opendir("/proc");
	pid_t self = getpid();
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL) {
		char path[64], buf[512], *p;
		long pid, ppid, pgrp;
		ssize_t n;
		int fd;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		pid = strtol(e->d_name, NULL, 10);
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		/* pid (comm) state ppid pgrp ...: comm may hold anything. */
		if (n <= 0)
			continue;
		buf[n] = '\0';
		if ((p = strrchr(buf, ')')) == NULL ||
		    sscanf(p + 1, " %*c %ld %ld", &ppid, &pgrp) != 2 ||
		    ppid != self || master_known(m, (pid_t)pid))
			continue;
		log_warn("event=orphan_killed pid=%ld", pid);
		if (pgrp == pid)
			kill((pid_t)-pid, SIGKILL);
		kill((pid_t)pid, SIGKILL);
	}
	if (d != NULL)
		closedir(d);
}

/* SIGHUP, privsep: new login processes with the new settings and
 * certificates; the old ones stop accepting and end with their last
 * session. */
static void
master_replace_logins(struct master *m)
{
	for (unsigned w = 0; w < m->srv->workers; w++) {
		int old = m->login_cur[w];

		if (old < 0)
			continue;
		if (master_spawn_login(m, w, false) < 0) {
			m->login_cur[w] = old;
			log_warn("event=reload worker=%u note=\"login processes of %d earlier "
			    "reloads still serve sessions: this one keeps the old settings "
			    "and certificates\"", w, LOGIN_GENERATIONS - 1);
			continue;
		}
		kill(m->login_pids[old][w], SIGUSR2);
	}
}

static void
master_signal(void *ctx, int signo)
{
	struct master *m = ctx;
	int status;
	pid_t pid;

	if (signo == SIGCHLD) {
		bool role_died = false;

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (master_known(m, pid))
				role_died = true;
			master_reaped(m, pid, status);
		}
		if (role_died)
			master_kill_orphans(m);
		master_check_stopped(m);
		return;
	}
	if (signo == SIGHUP) {
		/* A process started later must run the new configuration (and,
		 * --single-process, passwd file) too. */
		struct server_config *c;
		struct passwd_db *db = NULL;
		bool ok = reload_read(m->srv, &c, m->single ? &db : NULL, true) == 0;

		if (ok) {
			server_config_unref(&m->srv->config);
			m->srv->config = c;
			if (m->single) {
				passwd_db_free(&m->srv->db);
				m->srv->db = db;
			}
		}
		if (m->auth_pid > 0)
			kill(m->auth_pid, SIGHUP);
		for (unsigned w = 0; w < m->srv->workers; w++)
			if (m->pids[w] > 0)
				kill(m->pids[w], SIGHUP);
		if (ok && !m->single) {
			master_replace_logins(m);
			master_oauth_update(m);
		}
		return;
	}
	log_info("event=shutdown signal=%s workers=%u", strsignal(signo), m->live);
	m->stopping = true;
	timer_remove(&m->respawn);
	master_kill_all(m, SIGTERM);
	master_check_stopped(m);
}

static int
master_run(struct server *srv, bool single)
{
	struct master m = { .srv = srv, .pid = getpid(), .auth_ctl = -1, .single = single };
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	int ret = 0;

	for (unsigned w = 0; w < WORKERS_MAX; w++) {
		m.mail_ctl[w] = -1;
		m.login_cur[w] = -1;
	}
	m.loop = ioloop_new();
	for (size_t i = 0; i < ARRAY_SIZE(signals); i++)
		ioloop_add_signal(m.loop, signals[i], master_signal, &m);
	/* What a role leaves running when it dies comes back to us. */
	(void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	if (!single && geteuid() == 0) {
		char err[400];

		if (login_chroot_ready(srv->config->set.login_chroot, true, err,
		    sizeof(err)) < 0) {
			log_error("event=startup error=\"%s\"", err);
			ret = 1;
			goto out;
		}
		m.chroot = true;
	}
	if (!single && master_spawn_auth(&m) < 0) {
		ret = 1;
		goto out;
	}
	if (!single && master_spawn_oauth(&m) < 0)
		master_schedule_respawn(&m);
	for (unsigned w = 0; w < srv->workers; w++) {
		if (single) {
			master_spawn_whole(&m, w);
			continue;
		}
		master_spawn_mail(&m, w);
		if (master_spawn_login(&m, w, true) < 0)
			master_schedule_respawn(&m);
	}
	log_info("event=master_started workers=%u pid=%d uid=%d%s", srv->workers,
	    (int)getpid(), (int)getuid(), single ? " mode=single" : "");
	ioloop_run(m.loop);
out:
	timer_remove(&m.respawn);
	if (m.auth_ctl >= 0)
		close(m.auth_ctl);
	for (unsigned w = 0; w < srv->workers; w++)
		if (m.mail_ctl[w] >= 0)
			close(m.mail_ctl[w]);
	if (ret != 0 && m.auth_pid > 0) {
		kill(m.auth_pid, SIGTERM);
		waitpid(m.auth_pid, NULL, 0);
	}
	free(m.oauth_command);
	ioloop_free(&m.loop);
	for (unsigned i = 0; i < listener_count; i++)
		close(listeners[i].fd);
	passwd_db_free(&srv->db);
	server_config_unref(&srv->config);
	limits_free(&srv->limits);
	log_info("event=stopped");
	return ret;
}

int
main(int argc, char **argv)
{
	struct server srv = { 0 };
	bool foreground = false, print = false, test = false, single = false;
	char *error = NULL;
	int opt;
	static const struct option longopts[] = {
		{ "single-process", no_argument, NULL, 'X' },
		{ NULL, 0, NULL, 0 },
	};

	srv.config_path = POBOX_DEFAULT_CONFIG;
	while ((opt = getopt_long(argc, argv, "c:fntVhX", longopts, NULL)) != -1) {
		switch (opt) {
		case 'X': single = true; break;
		case 'c': srv.config_path = optarg; break;
		case 'f': foreground = true; break;
		case 'n': print = true; break;
		case 't': test = true; break;
		case 'V': printf("poboxd %s\n", POBOXD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 64;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 64;
	}
	if ((srv.config = config_read(srv.config_path, true, &error)) == NULL) {
		fprintf(stderr, "poboxd: %s\n", error);
		free(error);
		return 1;
	}
	if (print) {
		config_print(pobox_settings_table, pobox_settings_count, &srv.config->set, stdout);
		server_config_unref(&srv.config);
		return 0;
	}
	if (test) {
		/* As root the passwd file is parsed by its reader, in
		 * check_as_user. */
		if (geteuid() != 0 && passwd_db_open(srv.config->set.passwd_file,
		    srv.config->set.mail_root, &srv.db, &error) < 0) {
			fprintf(stderr, "poboxd: %s\n", error);
			free(error);
			server_config_unref(&srv.config);
			return 1;
		}
		if (check_as_user(&srv.config->set, single) < 0) {
			passwd_db_free(&srv.db);
			server_config_unref(&srv.config);
			return 1;
		}
		config_warn(srv.config, stderr);
		printf("poboxd: configuration %s is valid\n", srv.config_path);
		passwd_db_free(&srv.db);
		server_config_unref(&srv.config);
		return 0;
	}

	srv.workers = srv.config->set.workers;
	if (srv.workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		srv.workers = n < 1 ? 1 : n > WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
	}
	log_open("poboxd", foreground, (enum log_level)srv.config->set.log_level);
	config_warn(srv.config, NULL);
	if (!foreground && daemon(0, 0) < 0)
		log_fatal("event=daemon error=\"%s\"", strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit(srv.config->set.max_sessions);
	for (unsigned w = 0; w < srv.workers; w++) {
		for (unsigned i = 0; i < srv.config->set.listen.count; i++) {
			if (listener_bind(&srv, srv.config->set.listen.items[i], w, false,
			    LISTEN_POP3) < 0)
				goto fail;
		}
		for (unsigned i = 0; i < srv.config->set.tls_listen.count; i++) {
			if (listener_bind(&srv, srv.config->set.tls_listen.items[i], w, true,
			    LISTEN_POP3) < 0)
				goto fail;
		}
		for (unsigned i = 0; i < srv.config->set.smtp_listen.count; i++) {
			if (listener_bind(&srv, srv.config->set.smtp_listen.items[i], w,
			    false, LISTEN_SMTP) < 0)
				goto fail;
		}
		for (unsigned i = 0; i < srv.config->set.lmtp_listen.count; i++) {
			const char *a = srv.config->set.lmtp_listen.items[i];
			if (a[0] != '/' && listener_bind(&srv, a, w, false, LISTEN_LMTP) < 0)
				goto fail;
		}
	}
	for (unsigned i = 0; i < srv.config->set.lmtp_listen.count; i++) {
		const char *a = srv.config->set.lmtp_listen.items[i];
		if (a[0] == '/' && listener_bind_unix(&srv, a, srv.config->set.user) < 0)
			goto fail;
	}
	if (gethostname(srv.hostname, sizeof(srv.hostname) - 1) < 0)
		strcpy(srv.hostname, "localhost");
	/* Before the fork: every worker (--single-process) or the one auth
	 * process gives an unknown user the same fake SCRAM salt. */
	if (getrandom(srv.sasl_secret, sizeof(srv.sasl_secret), 0) !=
	    (ssize_t)sizeof(srv.sasl_secret)) {
		log_error("event=startup error=\"getrandom failed\"");
		goto fail;
	}
	if (geteuid() == 0) {
		char err[400];

		if ((!single && check_users(&srv.config->set, false, err, sizeof(err)) < 0) ||
		    check_root_caps(single, err, sizeof(err)) < 0) {
			log_error("event=privileges error=\"%s\"", err);
			goto fail;
		}
	}
	/* Rows: a whole worker or mail process per slot, and (privsep) the
	 * login processes' generations (master.c). */
	srv.limits = limits_new(single ? srv.workers : srv.workers * (1 + LOGIN_GENERATIONS));
	if (!single)
		/* Privilege separation: the master keeps root to start each
		 * role as its own user and never reads the passwd file. */
		return master_run(&srv, false);
	if (drop_privileges(srv.config->set.user, NULL) < 0)
		goto fail;
	if (passwd_db_open(srv.config->set.passwd_file, srv.config->set.mail_root,
	    &srv.db, &error) < 0) {
		log_error("event=startup error=\"%s\"", error);
		free(error);
		goto fail;
	}
	if (srv.workers == 1)
		return serve(&srv, 0, 0, ROLE_WHOLE, -1, -1, true);
	return master_run(&srv, true);
fail:
	for (unsigned i = 0; i < listener_count; i++)
		close(listeners[i].fd);
	server_config_unref(&srv.config);
	return 1;
}
