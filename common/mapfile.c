#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

int mf_open(const char *path, mapfile **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(TV_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(TV_EIO, "%s is not a regular file", path);
    }
    void *p = NULL;
    if (st.st_size > 0) {
        p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return err_set(TV_EIO, "cannot map %s: %s", path, strerror(e));
        }
    }
    close(fd);
    mapfile *mf = tv_xcalloc(1, sizeof *mf);
    mf->data = p;
    mf->size = (size_t)st.st_size;
    mf->path = strdup(path);
    TV_ASSERT(mf->path);
    *out = mf;
    return TV_OK;
}

void mf_free(mapfile *mf) {
    if (!mf) return;
    if (mf->data) munmap((void *)mf->data, mf->size);
    free(mf->path);
    free(mf);
}

int mf_read_all(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(TV_EIO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = tv_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = tv_xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max_bytes) {
            fclose(f);
            free(buf);
            return err_set(TV_ELIMIT, "%s is larger than %zu bytes", path, max_bytes);
        }
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(TV_EIO, "cannot read %s", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return TV_OK;
}
