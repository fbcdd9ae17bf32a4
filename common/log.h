/* log — leveled logging to stderr.
 *
 * The level comes from TINYVLM_LOG (debug, info, warn, error, off; default info) the first time
 * anything is logged, or from log_set_level(). Lines look like
 *   2026-11-22T14:03:07.123Z info  [gateway] listening on :8080
 * Thread-safe: each line is written with one fprintf on an unbuffered stream. */
#ifndef TV_LOG_H
#define TV_LOG_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

/* Sets the threshold; messages below it are dropped. */
void log_set_level(int level);

/* Current threshold (reads TINYVLM_LOG on first use). */
int log_get_level(void);

/* Parses "debug"/"info"/"warn"/"error"/"off" (case-insensitive); returns the level, or -1. */
int log_parse_level(const char *s);

/* Writes one line at "level" from "component" (may be NULL). */
void log_msg(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) log_msg(LOG_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_ERROR, comp, __VA_ARGS__)

#endif
