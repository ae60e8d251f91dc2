/* oauthd.c: the OAuth verifier role. Runs oauth_verify_command for each
 * token the auth process sends (oauthproto.h): token on stdin, the user
 * name on stdout and exit 0 when valid; one posix_spawn per token from a
 * workq thread, killed (its whole process group) at oauth_verify_timeout.
 * Privsep: a process of its own (poboxd-oauth) as login_user, neither
 * chrooted nor filtered (the command needs the file system and exec), so
 * the login processes keep both; it reads nothing but auth's messages.
 * --single-process: inside the worker, next to the auth role, over an
 * in-process socketpair (one code path for both modes). */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "poboxd/oauthproto.h"

#define OAUTH_USER_MAX 256      /* octets of the verifier's answer */
#define OAUTHD_THREADS 8        /* verifiers at once: they mostly wait */
#define OAUTHD_JOBS_MAX 1024    /* checks in flight; more are tempfails */
#define OAUTHD_POLL_MS 100      /* how soon a running verifier sees a stop */

struct oauthd {
	struct ioloop *loop;
	struct server_config *config;
	struct ipc_chan *chan;      /* to auth; NULL once gone */
	struct workq *workq;        /* made at the first check */
	unsigned jobs;              /* in flight */
	atomic_bool stopping;       /* running verifiers are killed */
	bool own_loop;              /* oauthd_main: the loop ends with auth */
};

struct oauth_job {
	struct oauthd *o;
	uint32_t id;
	char *command;
	uint64_t deadline_ms;       /* from the request's arrival */
	char *token;                /* with its newline */
	int status;                 /* enum oauthp_status */
	char user[OAUTH_USER_MAX + 1];
};

/* Runs the verifier: job->status and job->user. posix_spawn, no fork of
 * a threaded process; polled in short steps so a stop is seen. */
static void
oauth_work(void *arg)
{
	struct oauth_job *job = arg;
	int in[2] = { -1, -1 }, out[2] = { -1, -1 };
	char *argv[] = { job->command, NULL };
	char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin", NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	pid_t pid;
	size_t got = 0, tlen = strlen(job->token), sent = 0;
	uint64_t deadline = job->deadline_ms;
	int status = 0;
	bool timed_out = false, reaped = false;

	job->status = OAUTHP_TEMPFAIL;
	/* Waited in the queue past its time, or stopping: auth has its
	 * answer (a tempfail) already. */
	if (clock_ms() >= deadline || atomic_load(&job->o->stopping))
		return;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		goto out;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	/* Nothing of ours is for the verifier. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&attr);
	/* The loop blocks signals for its signalfd: the child gets none of that. */
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
	    POSIX_SPAWN_SETPGROUP);
	int rc = posix_spawn(&pid, job->command, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(in[0]);
	close(out[1]);
	in[0] = out[1] = -1;
	if (rc != 0)
		goto out;
	(void)fcntl(in[1], F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd pf[2] = { { out[0], POLLIN, 0 }, { in[1], POLLOUT, 0 } };
		uint64_t now = clock_ms();
		if (now >= deadline || atomic_load(&job->o->stopping)) {
			timed_out = true;
			break;
		}
		int nfds = in[1] >= 0 ? 2 : 1;
		uint64_t wait = deadline - now < OAUTHD_POLL_MS ? deadline - now : OAUTHD_POLL_MS;
		if (poll(pf, (nfds_t)nfds, (int)wait) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (nfds == 2 && (pf[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = write(in[1], job->token + sent, tlen - sent);
			if (w > 0)
				sent += (size_t)w;
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				sent = tlen;
			if (sent == tlen) {
				close(in[1]);
				in[1] = -1;
			}
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(out[0], job->user + got, OAUTH_USER_MAX - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;        /* EOF: the verifier is done */
			got += (size_t)r;
			if (got == OAUTH_USER_MAX)
				break;
		}
	}
	/* Give it until the deadline to exit after closing its output; then
	 * its whole process group goes (a shell's children too), signalled
	 * before the leader is reaped, so the group id is still ours. */
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			reaped = true;
			break;
		}
		if (w < 0 && errno != EINTR)
			break;
		if (timed_out || clock_ms() >= deadline || atomic_load(&job->o->stopping)) {
			timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	/* No exit status seen (reaped elsewhere?): never a yes. */
	if (timed_out || !reaped)
		goto out;
	job->user[got] = '\0';
	job->user[strcspn(job->user, "\r\n")] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && job->user[0] != '\0')
		job->status = OAUTHP_VALID;
	else if (WIFEXITED(status))
		job->status = OAUTHP_INVALID;
out:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
}

static void
answer(struct oauthd *o, uint32_t id, int status, const char *user)
{
	struct ipc_out out;

	if (o->chan == NULL)
		return;
	ipc_out_init(&out, OAUTHP_VERDICT, id);
	ipc_put_i64(&out, status);
	ipc_put_str(&out, status == OAUTHP_VALID ? user : NULL);
	(void)ipc_chan_send(o->chan, &out, -1);
}

static void
oauth_done(void *arg)
{
	struct oauth_job *job = arg;
	struct oauthd *o = job->o;

	o->jobs--;
	if (job->status == OAUTHP_TEMPFAIL)
		log_warn("event=oauth_verifier_failed note=\"not started, killed or over "
		    "oauth_verify_timeout\"");
	answer(o, job->id, job->status, job->user);
	secret_wipe(job->user, sizeof(job->user));
	secret_free(&job->token);
	free(job->command);
	free(job);
}

static void
check(struct oauthd *o, const struct ipc_msg *m)
{
	const struct pobox_settings *set = &o->config->set;
	const char *token = ipc_str(m, 0);
	struct oauth_job *job;

	if (m->nfields != 1 || token == NULL || token[0] == '\0' ||
	    token[strcspn(token, "\r\n")] != '\0') {
		/* One line is what the verifier is promised. */
		answer(o, m->id, OAUTHP_INVALID, NULL);
		return;
	}
	if (set->oauth_verify_command[0] == '\0' || o->jobs >= OAUTHD_JOBS_MAX) {
		answer(o, m->id, OAUTHP_TEMPFAIL, NULL);
		return;
	}
	if (o->workq == NULL)
		o->workq = workq_new(o->loop, OAUTHD_THREADS);
	job = xcalloc(1, sizeof(*job));
	job->o = o;
	job->id = m->id;
	job->command = xstrdup(set->oauth_verify_command);
	job->deadline_ms = clock_ms() + (uint64_t)set->oauth_verify_timeout * 1000;
	/* One line: a verifier's read(1) fails on text without its newline. */
	job->token = xasprintf("%s\n", token);
	o->jobs++;
	workq_submit(o->workq, oauth_work, oauth_done, job);
}

static void
chan_msg(void *ctx, struct ipc_msg *m)
{
	struct oauthd *o = ctx;

	if (m->type == OAUTHP_CHECK && m->id != 0) {
		check(o, m);
		return;
	}
	/* Auth sends nothing else: a bug, so the channel goes. */
	log_error("event=oauth_error error=\"unexpected message %u\"", m->type);
	ipc_chan_free(&o->chan);
	if (o->own_loop)
		ioloop_stop(o->loop);
}

static void
chan_close(void *ctx, const char *why)
{
	struct oauthd *o = ctx;

	log_debug("event=oauth_auth_gone why=\"%s\"", why);
	ipc_chan_free(&o->chan);
	/* Its own process: nothing left to serve (a new auth process gets a
	 * new verifier from the master). */
	if (o->own_loop)
		ioloop_stop(o->loop);
}

struct oauthd *
oauthd_new(struct ioloop *loop, struct server_config *config, int sock)
{
	static const struct ipc_chan_callbacks cb = { chan_msg, chan_close };
	struct oauthd *o = xcalloc(1, sizeof(*o));

	o->loop = loop;
	o->config = config;
	atomic_init(&o->stopping, false);
	o->chan = ipc_chan_new(loop, sock, &cb, o);
	return o;
}

void
oauthd_reload(struct oauthd *o, struct server_config *config)
{
	server_config_unref(&o->config);
	o->config = config;
}

void
oauthd_free(struct oauthd **op)
{
	struct oauthd *o = *op;

	if (o == NULL)
		return;
	*op = NULL;
	/* Running verifiers are killed; their answers (tempfails) still go
	 * out if the channel takes them. */
	atomic_store(&o->stopping, true);
	workq_free(&o->workq);
	ipc_chan_free(&o->chan);
	server_config_unref(&o->config);
	free(o);
}

static void
on_signal(void *ctx, int signo)
{
	struct server *srv = ctx;

	/* SIGHUP: the master starts a new verifier process when the
	 * command or its time limit changed; this one keeps its settings. */
	if (signo != SIGHUP)
		ioloop_stop(srv->loop);
}

int
oauthd_main(struct server *srv, int sock)
{
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	struct oauthd *o;

	srv->loop = ioloop_new();
	for (size_t i = 0; i < ARRAY_SIZE(signals); i++)
		ioloop_add_signal(srv->loop, signals[i], on_signal, srv);
	o = oauthd_new(srv->loop, srv->config, sock);
	srv->config = NULL;
	o->own_loop = true;
	log_info("event=oauth_started uid=%d pid=%d", (int)getuid(), (int)getpid());
	ioloop_run(srv->loop);
	oauthd_free(&o);
	ioloop_free(&srv->loop);
	log_info("event=stopped role=oauth");
	return 0;
}
