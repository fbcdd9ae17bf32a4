/* web — the gateway's web page (gateway/web/index.html), compiled into the binary by
 * cmake/embed.cmake so GET / needs no installed files. Static storage; never freed. */
#ifndef TV_GW_WEB_H
#define TV_GW_WEB_H

#include <stddef.h>

extern const unsigned char gw_web_index_html[]; /* NUL-terminated */
extern const size_t gw_web_index_html_len;      /* bytes, without the NUL */

#endif
