#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

static atomic_int log_level = -1; /* -1: not yet read from the environment */

int log_parse_level(const char *s) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    if (!s) return -1;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return LOG_WARN;
    return -1;
}

void log_set_level(int level) {
    if (level < LOG_DEBUG) level = LOG_DEBUG;
    if (level > LOG_OFF) level = LOG_OFF;
    atomic_store(&log_level, level);
}

int log_get_level(void) {
    int lv = atomic_load(&log_level);
    if (lv >= 0) return lv;
    lv = log_parse_level(getenv("TINYVLM_LOG"));
    if (lv < 0) lv = LOG_INFO;
    atomic_store(&log_level, lv);
    return lv;
}

void log_msg(int level, const char *component, const char *fmt, ...) {
    static const char *tags[] = {"debug", "info ", "warn ", "error"};
    if (level < log_get_level() || level >= LOG_OFF) return;
    char text[2048], stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s%s%s%s\n", stamp, ts.tv_nsec / 1000000, tags[level],
            component ? "[" : "", component ? component : "", component ? "] " : "", text);
}
