/* workers_cmd — what `tinyvlm vision-worker`, `tinyvlm lm-worker` and `tinyvlm serve` share:
 * a table-driven option parser where every flag --foo-bar also reads the environment variable
 * TINYVLM_FOO_BAR (flags win), and the SIGINT/SIGTERM stop flag. */
#ifndef TV_WORKERS_CMD_H
#define TV_WORKERS_CMD_H

#include <signal.h>
#include <stdio.h>

typedef enum {
    WOPT_STR,   /* dst: const char ** */
    WOPT_INT,   /* dst: int *, checked against [lo, hi] */
    WOPT_LIST,  /* dst: wopt_list *; the flag repeats, the env variable is a comma list */
    WOPT_FLAG   /* dst: int *, set to 1; env: 1/true/yes */
} wopt_kind;

#define WOPT_LIST_MAX 16

typedef struct {
    const char *items[WOPT_LIST_MAX];
    int n;
    char *env_copy;  /* owned copy of the env list (free with wopt_list_free) */
} wopt_list;

typedef struct {
    const char *name;  /* "--max-batch" */
    wopt_kind kind;
    void *dst;
    int lo, hi;        /* WOPT_INT range */
    const char *arg;   /* value placeholder for --help, e.g. "N" */
    const char *help;
} wopt;

/* Applies the environment, then argv[1..argc) (argv[0] is the command name), to opts' dst.
 * Returns -1 on success, else the exit code to return: 0 after --help (usage printed to stdout
 * with intro first), 2 for a usage error (message on stderr naming cmd). */
int wopt_parse(const char *cmd, const char *intro, const wopt *opts, int n, int argc,
               char **argv);

/* Prints the option list (with each flag's environment variable). */
void wopt_usage(FILE *f, const char *cmd, const char *intro, const wopt *opts, int n);

void wopt_list_free(wopt_list *l);

/* Installs SIGINT/SIGTERM handlers that set the returned flag (a second signal exits at once
 * with status 130), and ignores SIGPIPE. */
volatile sig_atomic_t *wopt_stop_flag(void);

/* "f16" / "f32" -> MSG_EMB_F16 / MSG_EMB_F32; -1 otherwise. */
int wopt_emb_dtype(const char *s);

#endif
