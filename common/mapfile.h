/* mapfile — one read-only mmap of a whole file (weights are mapped once and never copied). */
#ifndef TV_MAPFILE_H
#define TV_MAPFILE_H

#include <stddef.h>

typedef struct {
    const unsigned char *data; /* the file's bytes; NULL for an empty file */
    size_t size;
    char *path;                /* copy of the path, for messages */
} mapfile;

/* Maps path read-only. Returns 0 and *out (free with mf_free), or TV_EIO with a message. */
int mf_open(const char *path, mapfile **out);

/* Unmaps and frees; NULL is a no-op. Views into data die with it. */
void mf_free(mapfile *mf);

/* Reads a whole (small) file into a malloc'd buffer with a NUL appended (not counted in *len).
 * Refuses files over max_bytes with TV_ELIMIT. Caller frees *out. */
int mf_read_all(const char *path, size_t max_bytes, char **out, size_t *len);

#endif
