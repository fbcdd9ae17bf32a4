/* tinyvlm gateway — the HTTP API of the distributed deployment: flags and TINYVLM_* environment
 * -> gateway_opts -> gateway_run until SIGINT/SIGTERM. */
#include <limits.h>
#include <stdio.h>

#include "cli.h"
#include "err.h"
#include "gateway.h"
#include "workers_cmd.h"

int cli_gateway(int argc, char **argv) {
    gateway_opts o;
    gateway_opts_default(&o);
    int body_mb = 32, mpx = 40;
    const wopt opts[] = {
        {"--host", WOPT_STR, &o.host, 0, 0, "ADDR", "HTTP bind address (0.0.0.0)"},
        {"--port", WOPT_INT, &o.port, 0, 65535, "N", "HTTP port (8080; 0 = any free port)"},
        {"--listen", WOPT_STR, &o.listen, 0, 0, "URL",
         "endpoint workers connect to (tcp://0.0.0.0:5555)"},
        {"--redis", WOPT_STR, &o.redis_url, 0, 0, "URL",
         "embedding cache, redis://host:port[/db] (default: none, every image is encoded)"},
        {"--redis-ttl-s", WOPT_INT, &o.redis_ttl_s, 0, INT_MAX, "S", "cache entry lifetime (86400)"},
        {"--redis-timeout-ms", WOPT_INT, &o.redis_timeout_ms, 1, 60000, "MS", "per cache operation (200)"},
        {"--api-keys", WOPT_STR, &o.api_keys_file, 0, 0, "FILE",
         "lines \"KEY TENANT [MAX_CONCURRENT] [REQUESTS_PER_MINUTE] [SALT]\" (default: open API)"},
        {"--max-body-mb", WOPT_INT, &body_mb, 1, 4096, "MB", "largest request body (32)"},
        {"--max-images", WOPT_INT, &o.max_images, 1, 64, "N", "images per request (8)"},
        {"--max-image-pixels", WOPT_INT, &mpx, 1, 1 << 20, "MPX",
         "largest image, megapixels from its header (40)"},
        {"--max-tokens-limit", WOPT_INT, &o.max_tokens_limit, 1, 1 << 20, "N",
         "largest max_tokens accepted (4096)"},
        {"--queue", WOPT_INT, &o.queue, 0, 1 << 20, "N",
         "requests waiting for a worker slot; beyond it 503 at once (64)"},
        {"--request-timeout-s", WOPT_INT, &o.request_timeout_s, 1, 86400, "S", "whole request (300)"},
        {"--heartbeat-ms", WOPT_INT, &o.heartbeat_ms, 10, 60000, "MS", "heartbeat to workers (1000)"},
        {"--worker-timeout-ms", WOPT_INT, &o.worker_timeout_ms, 10, 600000, "MS",
         "a worker silent this long is dropped, its work rerouted (3000)"},
        {"--max-connections", WOPT_INT, &o.max_connections, 1, 65536, "N", "HTTP connections at once (512)"},
    };
    int code = wopt_parse("gateway",
                          "Serves the OpenAI-compatible HTTP API (/v1/chat/completions, "
                          "/v1/embeddings, /v1/models, /healthz, /readyz, /metrics) and routes the "
                          "work to the vision and LM workers that connect to --listen.",
                          opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (code >= 0) return code;
    o.max_body_mb = body_mb;
    o.max_image_pixels = (uint64_t)mpx << 20;
    if (o.worker_timeout_ms < o.heartbeat_ms) {
        fprintf(stderr, "tinyvlm gateway: --worker-timeout-ms must be >= --heartbeat-ms\n");
        return 2;
    }
    volatile sig_atomic_t *stop = wopt_stop_flag();
    int rc = gateway_run(&o, stop);
    if (rc) {
        fprintf(stderr, "tinyvlm gateway: %s\n", err_msg());
        return 1;
    }
    return 0;
}
