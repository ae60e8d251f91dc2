/* mdachain.c: the floor of an MDA delivery, without any network: N
 * messages of SIZE octets each given to `sh -c CMD` (with -x: CMD's
 * blank-separated words executed directly, as pobox fetch runs a command
 * without shell syntax), one MDA at a time, started as pobox fetch
 * starts them (posix_spawn, a memfd as stdin). Prints milliseconds per
 * message. For comparison it also runs the same chain with each MDA
 * started while the previous one runs, its stdin a pipe written only
 * after the previous one exited (two commands exist at once, as with
 * mda_parallel 2). Used by bench/fetch.
 * Usage: mdachain [-x] N SIZE CMD */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *sh_argv[] = { "sh", "-c", NULL, NULL };
static char *words[64];
static char **cmd_argv = sh_argv;

static pid_t
spawn(int fd)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd, 0);
	if (posix_spawnp(&pid, cmd_argv == sh_argv ? "/bin/sh" : cmd_argv[0], &fa,
	    NULL, cmd_argv, environ) != 0) {
		perror("posix_spawn");
		exit(1);
	}
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

/* Waits for an MDA; one that failed makes the figures worthless. */
static void
reap(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "mdachain: the MDA failed (status %d)\n", status);
		exit(1);
	}
}

static void
put(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w <= 0) {
			perror("write");
			exit(1);
		}
		p += w;
		n -= (size_t)w;
	}
}

int
main(int argc, char **argv)
{
	int n, size, fd, p[2], nextw, curw;
	double t0, t1, t2;
	pid_t cur, next;
	char *msg;

	if (argc == 5 && strcmp(argv[1], "-x") == 0) {
		int w = 0;

		for (char *t = strtok(argv[4], " \t"); t != NULL && w < 63;
		    t = strtok(NULL, " \t"))
			words[w++] = t;
		cmd_argv = words;
		argv++;
		argc--;
	}
	if (argc != 4 || (n = atoi(argv[1])) <= 0 || (size = atoi(argv[2])) <= 0 ||
	    cmd_argv[0] == NULL) {
		fprintf(stderr, "usage: mdachain [-x] N SIZE CMD\n");
		return 2;
	}
	sh_argv[2] = argv[3];
	if ((msg = malloc((size_t)size)) == NULL)
		return 1;
	for (int i = 0; i < size; i++)
		msg[i] = i % 72 == 71 ? '\n' : 'a';
	signal(SIGPIPE, SIG_IGN);
	t0 = now();
	for (int i = 0; i < n; i++) {
		fd = memfd_create("mdachain", MFD_CLOEXEC);
		put(fd, msg, (size_t)size);
		lseek(fd, 0, SEEK_SET);
		cur = spawn(fd);
		close(fd);
		reap(cur);
	}
	t1 = now();
	if (pipe2(p, O_CLOEXEC) < 0)
		return 1;
	cur = spawn(p[0]);
	close(p[0]);
	curw = p[1];
	for (int i = 0; i < n; i++) {
		next = 0;
		nextw = -1;
		if (i + 1 < n) {
			if (pipe2(p, O_CLOEXEC) < 0)
				return 1;
			next = spawn(p[0]);
			close(p[0]);
			nextw = p[1];
		}
		put(curw, msg, (size_t)size);
		close(curw);
		reap(cur);
		cur = next;
		curw = nextw;
	}
	t2 = now();
	printf("%.3f %.3f\n", (t1 - t0) * 1e3 / n, (t2 - t1) * 1e3 / n);
	free(msg);
	return 0;
}
