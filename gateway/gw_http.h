/* gw_http — what the gateway's HTTP files share (gateway.c: server and small routes;
 * handlers.c: chat completions and embeddings; images.c: images and the cache). Internal. */
#ifndef TV_GW_HTTP_H
#define TV_GW_HTTP_H

#include <microhttpd.h>

#include "gw_int.h"
#include "strbuf.h"

/* Per-request state, from the first call of the access handler to the completion callback. */
typedef struct {
    double t0;            /* arrival, monotonic */
    const char *route;    /* a known route or "other" (metrics label) */
    gw_sb body;
    size_t max_body;
    char limit_text[32];
    int too_big;
    int responded;        /* a response was queued (or a stream took over the metrics) */
} gw_req;

/* Queues a response with body (malloc'd; taken), records the request metrics. headers: NULL or
 * name/value pairs ending with NULL. */
enum MHD_Result gw_send(gw *g, struct MHD_Connection *c, gw_req *r, int status,
                        const char *ctype, char *body, const char *const *headers);
enum MHD_Result gw_send_error(gw *g, struct MHD_Connection *c, gw_req *r, const gw_error *e);
void gw_record(gw *g, const char *route, int status, double t0);

/* 1 if the client closed its end of the connection. */
int gw_client_gone(struct MHD_Connection *c);
/* 1 if the request says Content-Type: application/json. */
int gw_json_content(struct MHD_Connection *c);
/* API key + tenant limits: 0 and *t (release with gw_auth_release), or -1 after sending the
 * 401/429 (MHD's result in *sent). */
int gw_admit(gw *g, struct MHD_Connection *c, gw_req *r, gw_tenant **t, enum MHD_Result *sent);

/* handlers.c */
enum MHD_Result gw_chat(gw *g, struct MHD_Connection *c, gw_req *r);
enum MHD_Result gw_embeddings(gw *g, struct MHD_Connection *c, gw_req *r);

/* ---- images.c: from request images to embedding references ---------------------------------- */

typedef struct {
    char key[160];          /* cache key */
    int hit;                /* found in the cache */
    msg_embedding emb;      /* inline embedding (malloc'd data) when we have the values */
} gw_ref;

/* For each image: the cache key, a cache lookup, and an encode by a vision worker on a miss
 * (one encode per key at a time, shared by concurrent requests). need_values: the caller wants
 * the embedding's values (embeddings endpoint); force_encode: skip the cache and ask for the
 * embedding inline (retry after the LM worker could not read it). Waits until deadline
 * (monotonic), giving up when the client leaves (c may be NULL). Returns 0 with refs[n] filled
 * (free with gw_refs_free), or -1 with e filled. */
int gw_images(gw *g, const gw_image *ims, size_t n, const char *fp, const char *salt,
              int need_values, int force_encode, double deadline, struct MHD_Connection *c,
              gw_ref *refs, gw_error *e);
void gw_refs_free(gw_ref *refs, size_t n);

/* Fills e from a worker's (or the hub's) MSG_ERROR. */
void gw_error_from_msg(const msg *m, gw_error *e);

#endif
