/* tinyvlm inspect FILE... — filled in as the common readers land. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_inspect(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        printf("usage: tinyvlm inspect FILE...\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "tinyvlm inspect: no reader for %s yet\n", argv[1]);
    return 1;
}
