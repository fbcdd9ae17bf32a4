/* cli — the subcommands of the `tinyvlm` executable. Each returns the process exit code:
 * 0 success, 1 runtime failure (message printed), 2 usage error. */
#ifndef TV_CLI_H
#define TV_CLI_H

int cli_inspect(int argc, char **argv);
int cli_ask(int argc, char **argv);     /* cli/ask.c */
int cli_convert(int argc, char **argv); /* cli/convert.c */
int cli_index(int argc, char **argv);   /* cli/index.c */
int cli_serve(int argc, char **argv);   /* cli/serve.c */
int cli_vision_worker(int argc, char **argv); /* cli/workers_cmd.c */
int cli_lm_worker(int argc, char **argv);     /* cli/workers_cmd.c */
int cli_gateway(int argc, char **argv);       /* cli/gateway_cmd.c */

#endif
