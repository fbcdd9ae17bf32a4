/* tinyvlm — one executable; the first argument picks the role or tool. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cpu_features.h"
#include "cuda_info.h"
#include "log.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv); /* NULL: planned, not built yet */
    const char *summary;
} cli_command;

static const cli_command cli_commands[] = {
    {"inspect", cli_inspect, "show what tinyvlm reads from an image, tokenizer, safetensors or .pth file"},
    {"serve", cli_serve, "gateway + vision worker + LM worker in one process (the embedded default)"},
    {"ask", cli_ask, "one process, one answer: tinyvlm ask --model DIR --image FILE \"question\""},
    {"convert", cli_convert, "original checkpoints (.pth + HF Phi-2 folder) -> a tinyvlm bundle"},
    {"gateway", cli_gateway, "the HTTP API (distributed deployment)"},
    {"vision-worker", cli_vision_worker, "image -> embeddings worker (distributed deployment)"},
    {"lm-worker", cli_lm_worker, "embeddings + prompt -> tokens worker (distributed deployment)"},
    {"index", cli_index, "send a folder of images through /v1/embeddings"},
    {"bench", NULL, "benchmarks"},
};
#define CLI_NCOMMANDS (int)(sizeof cli_commands / sizeof cli_commands[0])

static void cli_usage(FILE *f) {
    fprintf(f, "usage: tinyvlm COMMAND [options]   (tinyvlm COMMAND --help for its options)\n\n"
               "commands:\n");
    for (int i = 0; i < CLI_NCOMMANDS; i++)
        fprintf(f, "  %-14s %s%s\n", cli_commands[i].name, cli_commands[i].summary,
                cli_commands[i].run ? "" : "  [not built yet]");
    fprintf(f, "\noptions:\n  --help       this text\n  --version    version, CPU features, CUDA\n"
               "\nenvironment:\n  TINYVLM_LOG  debug|info|warn|error|off (default info)\n");
}

static void cli_version(void) {
    char feat[256], gpu[256];
    int ngpu = cuda_info_devices(gpu, sizeof gpu);
    printf("tinyvlm %s\n", TV_VERSION);
    printf("cpu: %s, %d cores\n", cpu_features_str(feat, sizeof feat), cpu_get_features()->n_cores);
    if (!cuda_info_built())
        printf("cuda: not built\n");
    else if (ngpu == 0)
        printf("cuda: built, no GPU visible\n");
    else
        printf("cuda: built, %d GPU(s), first: %s\n", ngpu, gpu);
}

int main(int argc, char **argv) {
    /* A peer that goes away (HTTP client, Redis, a curl upload) must give EPIPE on that one
     * socket, not kill a process that serves everyone else. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        cli_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        cli_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        cli_version();
        return 0;
    }
    for (int i = 0; i < CLI_NCOMMANDS; i++) {
        if (strcmp(cmd, cli_commands[i].name) != 0) continue;
        if (!cli_commands[i].run) {
            fprintf(stderr, "tinyvlm: '%s' is not built yet in this version (%s). "
                            "See README.md for what works today.\n", cmd, TV_VERSION);
            return 2;
        }
        return cli_commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "tinyvlm: unknown command '%s'\n\n", cmd);
    cli_usage(stderr);
    return 2;
}
