/* cli — the subcommands of the `tinyvlm` executable. Each returns the process exit code:
 * 0 success, 1 runtime failure (message printed), 2 usage error. */
#ifndef TV_CLI_H
#define TV_CLI_H

int cli_inspect(int argc, char **argv);
int cli_ask(int argc, char **argv);     /* cli/ask.c */
int cli_convert(int argc, char **argv); /* cli/convert.c */
int cli_index(int argc, char **argv);   /* cli/index.c */

#endif
