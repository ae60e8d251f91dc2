/* pobox.h: the subcommands of the pobox admin command that live in their
 * own files. Run by the administrator or, for deliver, by an MTA. */
#ifndef POBOX_POBOX_H
#define POBOX_POBOX_H

#include <stdbool.h>

/* `pobox deliver ...`: argv[0] is "deliver". config is the -c given
 * before the subcommand (given: it was named, so it must exist). Returns
 * the process exit status (sysexits(3)). */
int deliver_command(int argc, char **argv, const char *config, bool given);

/* `pobox fetch ...` (fetch.c): argv[0] is "fetch". Returns the exit
 * status (FX_* in fetch.h). */
int fetch_command(int argc, char **argv);

#endif
